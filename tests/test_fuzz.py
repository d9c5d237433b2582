"""Hypothesis fuzzing of the server core: whatever a peer sends, only documented outcomes.

Documented outcomes are JSON-RPC answers with the codes of README.md's table,
pongs, and close frames with 1002, 1003, 1007 or 1009 (RFC 6455 codes for what
a peer can do wrong); before the handshake, HTTP 400 or nothing. Nothing may
raise out of ``receive_data``.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securemcp.protocol import (
    ConnectionClosed,
    ConnectionState,
    HandshakeRequest,
    Limits,
    PongReceived,
    ServerConnection,
    ToolCall,
)

from .helpers import (
    OP_CLOSE,
    OP_PONG,
    OP_TEXT,
    UPGRADE_REQUEST,
    ToolSuspended,
    client_frame,
    demo_app,
    open_server,
    run_tool,
    split_server_frames,
)

APP = demo_app()
LIMITS = Limits(max_message_size=4096, max_json_depth=16)

ANSWER_CODES = {-32700, -32600, -32601, -32602, -32603, -32000}
TOOL_CODES = {-31418}  # demo_app's "custom" tool chooses its own code
PEER_FAULT_CLOSE_CODES = {1002, 1003, 1007, 1009}

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

usable_ids = st.integers() | st.text(max_size=8)
# one_of picks a branch uniformly: repeating a branch weights it, so that most
# generated messages get past the envelope checks and reach dispatch.
request_ids = st.one_of(usable_ids, usable_ids, usable_ids, json_values)
methods = st.one_of(
    st.sampled_from(["invoke_tool", "invoke_tool", "ping", "list_tools", "tools/call"]),
    st.sampled_from(["invoke_tool", "invoke_tool", "ping"]),
    json_values,
)
arguments = st.dictionaries(
    st.sampled_from(["a", "b", "message", "reason", "point", "x"]),
    st.integers(min_value=-3, max_value=3)
    | st.text(max_size=5)
    | st.fixed_dictionaries({"x": st.integers(), "y": st.integers()})
    | json_values,
    max_size=3,
)
invoke_params = st.one_of(
    st.fixed_dictionaries(
        {"tool_name": st.sampled_from(list(APP.tools))}, optional={"params": arguments}
    ),
    st.fixed_dictionaries(
        {"tool_name": st.sampled_from([*APP.tools, "missing", ""]) | json_values},
        optional={"params": arguments | json_values},
    ),
    json_values,
)
requests = st.fixed_dictionaries(
    {"id": request_ids, "method": methods},
    optional={"jsonrpc": st.just("2.0") | json_values, "params": invoke_params},
)
anything_shaped = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.just("2.0") | json_values,
        "id": request_ids,
        "method": methods,
        "params": invoke_params,
        "result": json_values,
        "error": json_values,
    },
)
tool_requests = st.fixed_dictionaries(
    {
        "id": usable_ids,
        "method": st.just("invoke_tool"),
        "params": st.fixed_dictionaries(
            {"tool_name": st.sampled_from(list(APP.tools))}, optional={"params": arguments}
        ),
    },
    optional={"jsonrpc": st.just("2.0")},
)
builtin_requests = st.fixed_dictionaries(
    {"id": usable_ids, "method": st.sampled_from(["ping", "list_tools", "nope"])},
    optional={"jsonrpc": st.just("2.0"), "params": json_values},
)
messages = st.one_of(
    tool_requests, tool_requests, builtin_requests, requests, anything_shaped, json_values
)

frames = st.builds(
    client_frame,
    st.binary(max_size=64),
    st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA, 0xB]),
    fin=st.booleans(),
    masked=st.booleans() | st.just(True),
    rsv=st.sampled_from([0, 0, 0, 1, 4]),
)


def answer_calls(server: ServerConnection, events: list[Any]) -> None:
    """Run the tool calls among ``events`` at once, as a backend would (eventually)."""
    for event in events:
        if isinstance(event, ToolCall):
            try:
                result = run_tool(event)
            except ToolSuspended:  # pragma: no cover - demo_app's tools never wait
                raise
            except Exception as exc:  # noqa: BLE001 - the tool's failure is the answer
                server.fail(event, exc)
            else:
                server.complete(event, result)


def drive(server: ServerConnection, chunks: list[bytes]) -> tuple[bytes, list[Any]]:
    """Feed ``chunks``, answering calls as they come; return all output and events."""
    output = b""
    events: list[Any] = []
    for chunk in chunks:
        server.receive_data(chunk)
        while True:
            new = server.events_received()
            answer_calls(server, new)
            events += new
            data = server.data_to_send()
            output += data
            if not new and not data:
                break
    return output, events


def check_documented(output: bytes, events: list[Any]) -> list[dict[str, Any]]:
    """Assert every frame and event is a documented outcome; return the JSON answers."""
    answers: list[dict[str, Any]] = []
    closed_with = {e.code for e in events if isinstance(e, ConnectionClosed)}
    for opcode, payload in split_server_frames(output):
        if opcode == OP_TEXT:
            message = json.loads(payload)  # strict JSON, always
            assert set(message) <= {"jsonrpc", "id", "result", "error"}
            if "error" in message:
                assert message["error"]["code"] in ANSWER_CODES | TOOL_CODES
                assert isinstance(message["error"]["message"], str)
            else:
                assert "result" in message
            answers.append(message)
        elif opcode == OP_CLOSE:
            if payload:
                (code,) = struct.unpack("!H", payload[:2])
                # Our own verdict on the peer, or the echo of the peer's close frame.
                assert code in PEER_FAULT_CLOSE_CODES or code in closed_with
            else:
                assert closed_with == {1005}  # the echo of a close without a code
        else:
            assert opcode == OP_PONG
    for event in events:
        assert isinstance(event, (ConnectionClosed, PongReceived, ToolCall))
        if isinstance(event, ConnectionClosed):
            assert event.code in PEER_FAULT_CLOSE_CODES or 1000 <= event.code < 5000
    return answers


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_arbitrary_bytes_after_the_handshake(chunks: list[bytes]) -> None:
    server = open_server(APP, limits=LIMITS)
    check_documented(*drive(server, chunks))


@FUZZ
@given(st.lists(frames, max_size=6), st.integers(min_value=1, max_value=64))
def test_arbitrary_frames_after_the_handshake(frame_list: list[bytes], cut: int) -> None:
    server = open_server(APP, limits=LIMITS)
    data = b"".join(frame_list)
    chunks = [data[i : i + cut] for i in range(0, len(data), cut)]
    output, events = drive(server, chunks)
    check_documented(output, events)
    server.receive_eof()
    if server.state is not ConnectionState.CLOSED:  # pragma: no branch - EOF always ends it
        raise AssertionError("EOF must close the connection")


@FUZZ
@given(st.lists(messages, min_size=1, max_size=4))
def test_arbitrary_json_messages(sent: list[Any]) -> None:
    server = open_server(APP, limits=LIMITS)
    chunks = [client_frame(json.dumps(m).encode()) for m in sent]
    output, events = drive(server, chunks)
    answers = check_documented(output, events)
    if any(isinstance(e, ConnectionClosed) for e in events):
        return  # a message was over the size limit: what followed is not answered
    expected = [m for m in sent if _must_be_answered(m)]
    answered_ids = [a["id"] for a in answers if a["id"] is not None]
    assert answered_ids == [m["id"] for m in expected]
    for answer in answers:
        if "result" in answer:
            assert answer["id"] is not None


def _must_be_answered(message: Any) -> bool:
    # An object with a usable id gets exactly one answer carrying that id, unless
    # it is itself an answer (no method, but a result or an error): those are dropped.
    return (
        isinstance(message, dict)
        and "id" in message
        and type(message["id"]) in (str, int)
        and (
            isinstance(message.get("method"), str)
            or ("result" not in message and "error" not in message)
        )
        and _depth(message) <= LIMITS.max_json_depth
    )


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_before_the_handshake(data: bytes) -> None:
    server = ServerConnection(APP)
    server.receive_data(data)
    _check_handshake_outcome(server)


@FUZZ
@given(
    st.integers(min_value=0, max_value=len(UPGRADE_REQUEST)),
    st.integers(min_value=0, max_value=8),
    st.binary(max_size=12),
)
def test_mangled_upgrade_requests(position: int, dropped: int, inserted: bytes) -> None:
    data = UPGRADE_REQUEST[:position] + inserted + UPGRADE_REQUEST[position + dropped :]
    server = ServerConnection(APP)
    server.receive_data(data)
    _check_handshake_outcome(server)


@FUZZ
@given(
    st.sampled_from(
        [
            b"Host",
            b"Connection",
            b"Upgrade",
            b"Sec-WebSocket-Protocol",
            b"Sec-WebSocket-Extensions",
            b"Sec-WebSocket-Key",
            b"X-Other",
        ]
    ),
    st.binary(min_size=1, max_size=30).filter(lambda b: b"\r" not in b and b"\n" not in b),
)
def test_arbitrary_header_values(name: bytes, value: bytes) -> None:
    data = UPGRADE_REQUEST.replace(b"\r\n\r\n", b"\r\n" + name + b": " + value + b"\r\n\r\n")
    server = ServerConnection(APP)
    server.receive_data(data)
    _check_handshake_outcome(server)


def _check_handshake_outcome(server: ServerConnection) -> None:
    events = server.events_received()
    output = server.data_to_send()
    if output:
        # 426 only for a Sec-WebSocket-Version other than 13, naming 13.
        assert output.startswith(b"HTTP/1.1 400 ") or (
            output.startswith(b"HTTP/1.1 426 ") and b"\r\nsec-websocket-version: 13\r\n" in output
        ), output
        assert server.state is ConnectionState.CLOSED
        assert events == []
    elif events:
        [request] = events
        assert isinstance(request, HandshakeRequest)
        server.accept()
        if server.state is not ConnectionState.OPEN:
            # Bytes after the head are read as frames once the upgrade is
            # accepted: junk there fails the connection, with a close frame
            # (at once for a broken stream, after the peer's for a binary one).
            assert server.state in (ConnectionState.CLOSING, ConnectionState.CLOSED)
            closed = [e for e in server.events_received() if isinstance(e, ConnectionClosed)]
            assert [e.code for e in closed] in ([], [1002], [1003], [1007])
            assert (server.state is ConnectionState.CLOSED) == bool(closed)
            _, _, frames = server.data_to_send().partition(b"\r\n\r\n")
            assert split_server_frames(frames)[-1][0] == OP_CLOSE
    else:
        assert server.state is ConnectionState.CONNECTING
