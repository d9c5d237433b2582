"""Hostile requests over MCP Streamable HTTP: the twins of ``test_hostile_messages.py``.

Each gets its defined HTTP status and JSON-RPC error; :func:`hostile_server`
then proves a WebSocket bystander and a fresh client are still served, and
:func:`http_probe` an HTTP client. Asyncio, trio and asyncio's anyio path.
"""

from __future__ import annotations

import gzip
import json
import socket
import struct

import anyio
import pytest
from anyio.abc import SocketAttribute

from .attacks import malformed_requests
from .conftest import MemoryWatch, hostile_server, send_chunked
from .http_peer import HTTPPeer, chunk, http_peer, http_probe, mcp_post, message, tool_call

MiB = 1024 * 1024


async def still_answers(peer: HTTPPeer) -> None:
    """The keep-alive connection itself still serves requests after a fault it survived."""
    await peer.stream.send(tool_call("echo", "after", message="ok"))
    answer = await peer.answer()
    assert answer.status == 200
    assert answer.json()["result"]["content"] == [{"type": "text", "text": "ok"}]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("text", "code"),
    [
        *malformed_requests('"jsonrpc": "2.0", '),
        pytest.param(b'{"jsonrpc": "2.0", "id": 1, "method": "\xff"}', -32700, id="bad-utf8"),
    ],
)
async def test_a_malformed_body_gets_400_with_its_error_and_a_null_id(
    text: str | bytes, code: int
) -> None:
    body = text.encode() if isinstance(text, str) else text
    async with hostile_server() as server:
        peer = await http_peer(server, mcp_post(body))
        async with peer.stream:
            answer = await peer.answer()
            assert answer.status == 400
            assert answer.json()["id"] is None
            assert answer.json()["error"]["code"] == code
            await still_answers(peer)
        await http_probe(server)


@pytest.mark.anyio
async def test_unknown_method_and_tool_and_bad_arguments_over_http() -> None:
    async with hostile_server() as server:
        requests = (
            mcp_post(message("rm -rf", 1))
            + tool_call("nope", 2)
            + tool_call("echo", 3)  # its argument missing
            + mcp_post(message("tools/call", 4, name="echo", arguments="echo"))
        )
        peer = await http_peer(server, requests)
        async with peer.stream:
            answers = [(await peer.answer()).json() for _ in range(4)]
            await still_answers(peer)
    assert [answer["id"] for answer in answers] == [1, 2, 3, 4]
    assert answers[0]["error"]["code"] == -32601
    assert answers[1]["error"]["code"] == -32602  # MCP: an unknown tool is invalid params
    # Bad arguments are the tool's error, as MCP has it: a result with isError.
    assert answers[2]["result"]["isError"]
    assert answers[3]["error"]["code"] == -32602


@pytest.mark.anyio
async def test_200_000_deep_nesting_in_a_body_is_a_parse_error_answered_at_once() -> None:
    async with hostile_server() as server:
        peer = await http_peer(server)
        async with peer.stream:
            with anyio.fail_after(2.0):
                await send_chunked(peer.stream, mcp_post(b"[" * 200_000 + b"]" * 200_000))
                answer = await peer.answer()
            assert (answer.status, answer.json()["error"]["code"]) == (400, -32700)
            await still_answers(peer)


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["declared", "chunked-954-pieces"])
async def test_a_body_over_the_limit_gets_413_and_the_connection_closes(how: str) -> None:
    async with hostile_server() as server:
        peer = await http_peer(server)
        async with peer.stream:
            # Nothing is sent past the byte that passes the limit: the server
            # closes unread bytes with a reset, which could beat its answer.
            if how == "declared":
                # Refused on its Content-Length, before a byte of the body is read.
                request = mcp_post(b'"' + b"x" * MiB + b'"')
                await peer.stream.send(request[: request.index(b"\r\n\r\n") + 4])
            else:
                # Chunks of 1100 bytes: past 1 MiB at the 954th, counted as they come.
                pieces = mcp_post(b"", chunked=True) + chunk(b"x" * 1100) * 954
                await send_chunked(peer.stream, pieces)
            answer = await peer.answer()
            assert answer.status == 413
            assert answer.headers["connection"] == "close"
            assert await peer.until_eof() == b""
        await http_probe(server)


@pytest.mark.anyio
async def test_a_body_in_1_byte_chunks_is_served_with_bounded_memory() -> None:
    # The twin of a flood of tiny fragments: each chunk costs 6 bytes on the
    # wire; a server keeping each as an object would hold 40 bytes per byte.
    text = "y" * 50_000
    body = message("tools/call", 1, name="echo", arguments={"message": text})
    async with hostile_server() as server:
        peer = await http_peer(server, mcp_post(body, chunked=True))
        async with peer.stream:
            wire = b"".join([chunk(body[i : i + 1]) for i in range(len(body))]) + chunk(b"")
            with MemoryWatch() as memory:
                await send_chunked(peer.stream, wire)
                answer = await peer.answer()
                peak = memory.peak_growth()
            assert answer.json()["result"]["content"][0]["text"] == text
    # The body (50 KB), its copy for the parser, the answer and the peer's buffers.
    assert peak < 8 * len(body), f"peak growth {peak} bytes for a {len(body)}-byte body"
    print(f"1-byte chunks: peak growth {peak} bytes for a {len(body)}-byte body")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(mcp_post(b"{}", ("Transfer-Encoding", "gzip")), 501, id="unknown-coding"),
        pytest.param(mcp_post(b"", chunked=True) + b"zz\r\n{}\r\n", 400, id="bad-chunk-size"),
        pytest.param(mcp_post(b"{}").replace(b"Length: 2", b"Length: x"), 400, id="bad-length"),
        pytest.param(
            mcp_post(b"{}", ("No-Colon", "x")).replace(b"No-Colon:", b"No-Colon"),
            400,
            id="header-without-colon",
        ),
        pytest.param(mcp_post(b"{}", ("Content-Length", "3")), 400, id="two-lengths"),
        pytest.param(
            # Read by its chunks, the body is empty and a smuggled call follows it.
            mcp_post(
                b"0\r\n\r\n" + tool_call("echo", 1, message="smuggled"),
                ("Transfer-Encoding", "chunked"),
            ),
            400,
            id="length-and-chunked",
        ),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 405, id="http2-preface"),
    ],
)
async def test_a_broken_request_gets_its_status_and_the_connection_closes(
    request_bytes: bytes, status: int
) -> None:
    async with hostile_server() as server:
        # After a request served, so that it is the keep-alive parser that meets it.
        peer = await http_peer(server, tool_call("echo", 0, message="first") + request_bytes)
        async with peer.stream:
            assert (await peer.answer()).status == 200
            answer = await peer.answer()
            assert answer.status == status
            assert await peer.until_eof() == b""
        await http_probe(server)


@pytest.mark.anyio
async def test_a_compressed_body_is_refused_415_without_inflating_it() -> None:
    # The decompression bomb's twin: 10 MiB of JSON in some 10 KB.
    bomb = gzip.compress(b'"' + b" " * (10 * MiB) + b'"')
    assert len(bomb) < 20_000
    async with hostile_server() as server:
        peer = await http_peer(server)
        async with peer.stream:
            with MemoryWatch() as memory:
                await peer.stream.send(mcp_post(bomb, ("Content-Encoding", "gzip")))
                answer = await peer.answer()
                peak = memory.peak_growth()
            assert answer.status == 415
            assert b"Content-Encoding" in answer.body
            await still_answers(peer)
    assert peak < MiB, peak


@pytest.mark.anyio
@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_a_client_vanishing_mid_call_cancels_the_call(reset: bool) -> None:
    async with hostile_server() as server:
        peer = await http_peer(server, tool_call("hold"))
        async with peer.stream:
            await server.log.started.wait()
            if reset:
                raw = peer.stream.extra(SocketAttribute.raw_socket)
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await server.log.cancelled.wait()
        await http_probe(server)


@pytest.mark.anyio
async def test_progress_notes_never_outlive_their_call() -> None:
    # A call that reports progress, then a malformed request pipelined behind
    # it: the stream ends with the result, then the error, in order.
    async with hostile_server() as server:
        call = json.loads(
            message("tools/call", 7, name="chatter", arguments={"count": 3, "size": 5})
        )
        call["params"]["_meta"]["progressToken"] = "t"
        peer = await http_peer(server, mcp_post(json.dumps(call).encode()) + mcp_post(b"{"))
        async with peer.stream:
            streamed = await peer.answer()
            broken = await peer.answer()
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert [event.get("method") for event in streamed.events] == ["notifications/progress"] * 3 + [
        None
    ]
    assert streamed.json()["result"]["content"][0]["text"] == "reported 3"
    assert (broken.status, broken.json()["error"]["code"]) == (400, -32700)
