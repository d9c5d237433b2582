"""Media types on MCP Streamable HTTP: ``Content-Type`` (415), ``Accept`` (406, or the form).

The header logic alone (``securemcp.protocol.media``, ``backends/_http_media``),
fuzzed; then a real server on asyncio and trio. The official SDK 2.x client and
our ``HTTPClient`` pass these checks: ``tests/test_http_server.py`` runs both
against the same server code.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securemcp.backends._http_media import check_media
from securemcp.protocol import HTTPRequestReceived
from securemcp.protocol.media import accepts, media_type
from securemcp.transport import WebSocketTransport

from .helpers import serving
from .security.conftest import ToolLog, hostile_app
from .security.http_peer import HTTPAnswer, HTTPPeer, message

TIMEOUT = 10.0


@pytest.mark.parametrize(
    ("accept", "wanted", "admitted"),
    [
        (None, "application/json", True),
        ("", "text/event-stream", True),
        ("*/*", "text/event-stream", True),
        ("application/*", "application/json", True),
        ("application/*", "text/event-stream", False),
        ("text/*;q=0.5", "text/event-stream", True),
        ("APPLICATION/JSON", "application/json", True),
        ("text/html, application/xhtml+xml", "application/json", False),
        ("application/json;q=0", "application/json", False),
        ("application/json; q=0.0, */*", "application/json", False),  # the specific one decides
        ("*/*;q=0, application/json", "application/json", True),
        ("*/*;q=0, application/json", "text/event-stream", False),
        ("application/json;q=bogus", "application/json", True),  # sloppy, not refused
        ("application/json;level=1", "application/json", True),
    ],
)
def test_accept_admits_by_the_most_specific_range(
    accept: str | None, wanted: str, admitted: bool
) -> None:
    assert accepts(accept, wanted) is admitted


def test_media_type_is_the_type_without_parameters() -> None:
    assert media_type("Application/JSON; charset=utf-8") == "application/json"
    assert media_type("") is None
    assert media_type(None) is None


def request(*headers: tuple[str, str]) -> HTTPRequestReceived:
    return HTTPRequestReceived("POST", "/mcp", tuple(headers), b"{}")


header_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80)


@settings(max_examples=300, deadline=None)
@given(
    content_type=st.one_of(st.none(), header_value, st.just("application/json")),
    accept=st.lists(
        st.one_of(header_value, st.sampled_from(["*/*;q=0", "text/event-stream", "x/y;q=-1"])),
        max_size=3,
    ),
    coding=st.one_of(st.none(), header_value, st.just("identity")),
)
def test_fuzzed_headers_get_a_form_or_415_or_406_only(
    content_type: str | None, accept: list[str], coding: str | None
) -> None:
    headers = [("accept", value) for value in accept]
    if content_type is not None:
        headers.append(("content-type", content_type))
    if coding is not None:
        headers.append(("content-encoding", coding))
    outcome = check_media(request(*headers))
    if media_type(content_type) != "application/json":
        assert outcome[0] == 415
    else:
        assert outcome in ("any", "json", "sse") or outcome[0] in (406, 415)


# On a real server


def post(body: bytes, *headers: tuple[str, str]) -> bytes:
    """A POST of ``body`` with exactly ``headers`` (no Content-Type or Accept of its own)."""
    lines = ["POST /mcp HTTP/1.1", "Host: 127.0.0.1", *(f"{n}: {v}" for n, v in headers)]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def legacy(method: str, request_id: int | None = 1, **params: object) -> bytes:
    """A legacy request: no envelope, so no routing headers to mirror."""
    body: dict[str, object] = {"jsonrpc": "2.0", "method": method, "params": params}
    if request_id is not None:
        body["id"] = request_id
    return json.dumps(body).encode()


JSON = ("Content-Type", "application/json")


@asynccontextmanager
async def server() -> AsyncIterator[HTTPPeer]:
    """A server and one keep-alive connection to it (refusals here never close it)."""
    transport = WebSocketTransport(hostile_app(ToolLog()), shutdown_grace=0.5, close_timeout=1.0)
    async with serving(transport) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
        with anyio.fail_after(TIMEOUT):
            yield HTTPPeer(stream)


async def ask(peer: HTTPPeer, data: bytes) -> HTTPAnswer:
    await peer.stream.send(data)
    return await peer.answer()


@pytest.mark.anyio
async def test_a_body_not_declared_json_gets_415() -> None:
    async with server() as peer:
        refused: list[tuple[tuple[str, str], ...]] = [
            (),
            (("Content-Type", "text/plain"),),
            (("Content-Type", "multipart/x"),),
        ]
        for headers in refused:
            answer = await ask(peer, post(legacy("tools/list"), *headers))
            assert answer.status == 415, headers
            assert answer.body == b"Unsupported Media Type: Content-Type must be application/json\n"
        for value in ("gzip", "br, identity"):
            answer = await ask(peer, post(legacy("tools/list"), JSON, ("Content-Encoding", value)))
            assert answer.status == 415
        note = await ask(peer, post(legacy("notifications/initialized", None)))
        assert note.status == 415  # notifications too
        for headers in (
            (("Content-Type", "Application/JSON; charset=utf-8"),),
            (JSON, ("Content-Encoding", "identity")),
        ):
            answer = await ask(peer, post(legacy("tools/list"), *headers))
            assert answer.status == 200, headers


@pytest.mark.anyio
async def test_an_accept_admitting_neither_form_gets_406() -> None:
    async with server() as peer:
        for refused in ("text/html", "application/json;q=0, text/event-stream;q=0", "image/*"):
            answer = await ask(peer, post(legacy("tools/list"), JSON, ("Accept", refused)))
            assert answer.status == 406, refused
        for accept in (None, "*/*", "application/*, text/*", "text/html, */*;q=0.1"):
            headers = [JSON] if accept is None else [JSON, ("Accept", accept)]
            answer = await ask(peer, post(legacy("tools/list"), *headers))
            assert answer.status == 200, accept
            assert answer.headers["content-type"] == "application/json"
        # Two Accept lines are one list.
        split = post(legacy("tools/list"), JSON, ("Accept", "text/html"), ("Accept", "*/*"))
        assert (await ask(peer, split)).status == 200


def chatter(accept: str) -> bytes:
    body = json.loads(message("tools/call", 5, name="chatter", arguments={"count": 2, "size": 3}))
    body["params"]["_meta"]["progressToken"] = "p"
    routing = (
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", "chatter"),
    )
    return post(json.dumps(body).encode(), JSON, ("Accept", accept), *routing)


@pytest.mark.anyio
async def test_each_client_gets_the_form_it_accepts() -> None:
    async with server() as peer:
        both = await ask(peer, chatter("application/json, text/event-stream"))
        json_only = await ask(peer, chatter("application/json"))
        sse_only = await ask(peer, chatter("text/event-stream"))
        listed = await ask(peer, post(legacy("tools/list"), JSON, ("Accept", "text/event-stream")))
        unknown = await ask(peer, post(legacy("nope"), JSON, ("Accept", "text/event-stream")))
        broken = await ask(peer, post(b"{", JSON, ("Accept", "text/event-stream")))
    # Progress as an SSE stream, to a client taking both.
    assert both.headers["content-type"] == "text/event-stream"
    assert [event.get("method") for event in both.events] == ["notifications/progress"] * 2 + [None]
    # JSON only: the result alone, no stream.
    assert json_only.headers["content-type"] == "application/json"
    assert json_only.json()["result"]["content"][0]["text"] == "reported 2"
    # SSE only: every 200 answer is a stream, results and JSON-RPC errors alike.
    assert sse_only.headers["content-type"] == "text/event-stream"
    assert sse_only.json()["result"]["content"][0]["text"] == "reported 2"
    assert len(sse_only.events) == 3
    assert listed.headers["content-type"] == "text/event-stream"
    assert "echo" in {tool["name"] for tool in listed.json()["result"]["tools"]}
    assert unknown.headers["content-type"] == "text/event-stream"
    assert unknown.json()["error"]["code"] == -32601
    # A refusal of the request itself keeps its status and JSON body.
    assert (broken.status, broken.headers["content-type"]) == (400, "application/json")


@pytest.mark.anyio
async def test_get_and_other_paths_are_not_held_to_the_post_rules() -> None:
    async with server() as peer:
        answer = await ask(peer, b"GET /mcp HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n")
    assert (answer.status, answer.headers["allow"]) == (405, "POST")
