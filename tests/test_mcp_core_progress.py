"""Cancellation and progress in the MCP dialect of the server core.

``notifications/cancelled`` reports the call and drops its late answer;
progress reports become notifications for calls with a token, increasing,
stopping at completion or cancellation, dropped while the output is over its
limit.
"""

from __future__ import annotations

from typing import Any

import pytest

from securemcp import Progress, SecureMCP
from securemcp.protocol import CallCancelled, ResponseReceived, ToolCall

from .helpers import ConnectionPair, parse_server_messages, run_tool, text_frame
from .mcp_helpers import bind_directly, mcp_app, notification, open_mcp, request

# Cancellation


def start_call(
    pair: ConnectionPair, name: str, arguments: Any, request_id: Any = 1, **extra: Any
) -> ToolCall:
    params = {"name": name, "arguments": arguments, **extra}
    pair.server.receive_data(text_frame(request("tools/call", params, request_id)))
    [event] = pair.server.events_received()
    assert isinstance(event, ToolCall)
    return event


def test_a_cancelled_call_is_reported_and_never_answered() -> None:
    pair = open_mcp()
    running = start_call(pair, "echo", {"message": "x"}, "c1")
    pair.server.receive_data(
        text_frame(notification("notifications/cancelled", {"requestId": "c1", "reason": "bored"}))
    )
    [cancelled] = pair.server.events_received()
    assert isinstance(cancelled, CallCancelled)
    assert cancelled.call is running
    assert cancelled.reason == "bored"
    assert pair.server.data_to_send() == b""
    # A second notification for the same call changes nothing.
    pair.server.receive_data(
        text_frame(notification("notifications/cancelled", {"requestId": "c1"}))
    )
    assert pair.server.events_received() == []
    # The backend's late answer is dropped, and frees the call's slot.
    assert pair.server.calls_in_flight == 1
    pair.server.complete(running, run_tool(running))
    assert pair.server.data_to_send() == b""
    assert pair.server.calls_in_flight == 0
    # The id is free again.
    again = start_call(pair, "add", {"a": 1}, "c1")
    pair.server.complete(again, 1)
    [answer] = parse_server_messages(pair.server.data_to_send())
    assert answer["id"] == "c1"


def test_a_cancelled_call_failed_later_is_dropped_too() -> None:
    pair = open_mcp()
    running = start_call(pair, "boom", {}, 5)
    pair.server.receive_data(text_frame(notification("notifications/cancelled", {"requestId": 5})))
    assert len(pair.server.events_received()) == 1
    pair.server.fail(running, RuntimeError("late"))
    assert pair.server.data_to_send() == b""


def test_cancelling_an_answered_call_is_ignored() -> None:
    pair = open_mcp()
    running = start_call(pair, "add", {"a": 1}, 5)
    pair.server.complete(running, 1)
    pair.server.data_to_send()
    pair.server.receive_data(text_frame(notification("notifications/cancelled", {"requestId": 5})))
    assert pair.server.events_received() == []
    assert pair.server.data_to_send() == b""


def test_a_closing_connection_reports_cancelled_calls_as_unanswered() -> None:
    pair = open_mcp()
    start_call(pair, "echo", {"message": "x"}, 5)
    pair.server.receive_data(text_frame(notification("notifications/cancelled", {"requestId": 5})))
    pair.server.events_received()
    pair.server.receive_eof()
    [closed] = pair.server.events_received()
    assert closed.unanswered == (5,)  # type: ignore[attr-defined]


# Progress


def test_progress_reports_become_notifications_for_calls_with_a_token() -> None:
    pair = open_mcp()
    running = start_call(pair, "steps", {"count": 3}, 1, _meta={"progressToken": "tok"})
    bind_directly(pair, running)
    result = run_tool(running)
    pair.server.complete(running, result)
    messages = parse_server_messages(pair.server.data_to_send())
    assert messages[:3] == [
        {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {
                "progressToken": "tok",
                "progress": step,
                "total": 3,
                "message": f"step {step}",
            },
        }
        for step in (1, 2, 3)
    ]
    assert messages[3]["result"]["content"] == [{"type": "text", "text": "3"}]


def test_progress_must_increase_and_stops_at_completion() -> None:
    pair = open_mcp()
    running = start_call(pair, "steps", {"count": 0}, 1, _meta={"progressToken": 42})
    progress = bind_directly(pair, running)
    assert progress.enabled
    assert progress.report(0.5)
    with pytest.raises(ValueError, match="increase"):
        progress.report(0.5)
    with pytest.raises(ValueError, match="finite"):
        progress.report(float("nan"))
    with pytest.raises(TypeError):
        progress.report(True)
    with pytest.raises(TypeError):
        progress.report(1, "10")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        progress.report(1, 10, 3)  # type: ignore[arg-type]
    pair.server.complete(running, 0)
    assert not progress.enabled
    assert not progress.report(2)
    messages = parse_server_messages(pair.server.data_to_send())
    assert [m.get("method") for m in messages] == ["notifications/progress", None]
    assert messages[0]["params"] == {"progressToken": 42, "progress": 0.5}


def test_progress_stops_when_the_call_is_cancelled() -> None:
    pair = open_mcp()
    running = start_call(pair, "steps", {"count": 0}, 1, _meta={"progressToken": 1})
    progress = bind_directly(pair, running)
    pair.server.receive_data(text_frame(notification("notifications/cancelled", {"requestId": 1})))
    pair.server.events_received()
    assert not progress.report(1)
    assert not pair.server.report_progress(running, 2)
    assert pair.server.data_to_send() == b""


def test_progress_without_a_token_is_a_silent_no_op() -> None:
    pair = open_mcp()
    running = start_call(pair, "steps", {"count": 2}, 1)
    assert running.progress is not None
    assert running.progress.token is None
    assert not running.progress.enabled
    assert not pair.server.report_progress(running, 1)
    pair.server.complete(running, run_tool(running))
    [answer] = parse_server_messages(pair.server.data_to_send())
    assert answer["id"] == 1


def test_progress_messages_wait_for_the_revision_that_defines_them() -> None:
    pair = open_mcp(version="2024-11-05")
    running = start_call(pair, "steps", {"count": 1}, 1, _meta={"progressToken": "t"})
    bind_directly(pair, running)
    pair.server.complete(running, run_tool(running))
    [note, _answer] = parse_server_messages(pair.server.data_to_send())
    assert note["params"] == {"progressToken": "t", "progress": 1, "total": 1}


def test_seed_calls_get_a_progress_that_reports_nothing() -> None:
    pair = ConnectionPair(mcp_app())
    pair.open()
    pair.take_client_events()
    event = pair.invoke("steps", {"count": 2})
    assert isinstance(event, ResponseReceived)
    assert event.result == 2


def test_progress_is_dropped_while_the_output_is_over_its_limit() -> None:
    pair = open_mcp()
    running = start_call(pair, "steps", {"count": 0}, 1, _meta={"progressToken": 1})
    pair.server._output.size = pair.server.limits.max_pending_output
    assert not pair.server.report_progress(running, 1)
    pair.server._output.size = 0
    assert pair.server.report_progress(running, 1)


def test_a_tool_takes_one_progress_at_most() -> None:
    app = SecureMCP("x")

    def twice(a: Progress, b: Progress) -> None: ...

    with pytest.raises(TypeError, match="only one parameter may take the Progress"):
        app.add_tool(twice)
    assert repr(Progress()) == "Progress(token=None, enabled=False)"
