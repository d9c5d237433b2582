"""The chat example, run as a newcomer runs it: server and client as separate processes."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.sync.client import connect

from .chat_server import CHAT, PORT_LINE, STARTUP_TIMEOUT, running_script

BACKENDS = ["asyncio", "trio"]
STARTED = "[WS] Server started successfully"


@dataclass
class RunningServer:
    """A chat server subprocess and everything it has printed so far."""

    process: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def output(self) -> str:
        return "".join(self.lines)


TOOLS = [
    "send_message",
    "get_messages",
    "get_stats",
    "clear_history",
    "echo",
    "join_room",
    "leave_room",
    "list_rooms",
]
ANONYMOUS_TOOLS = [tool for tool in TOOLS if tool != "clear_history"]
"""What an anonymous client is shown: clearing the history needs the admin scope."""


@pytest.fixture(params=BACKENDS)
def chat_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    """The example server on a port the OS picks, on one backend, with a fresh history."""
    with start_chat_server(request.param, "--db", str(tmp_path / "chat.db")) as server:
        yield server


@contextmanager
def start_chat_server(
    backend: str, *extra: str, env: dict[str, str] | None = None
) -> Iterator[RunningServer]:
    """Run the example server with ``extra`` options until the block ends."""
    args = ("server.py", "--host", "127.0.0.1", "--port", "0", "--backend", backend, *extra)
    with running_script(*args, ready=lambda line: STARTED in line, env=env) as run:
        assert run.started.wait(STARTUP_TIMEOUT), "server did not start: " + run.output()
        match = PORT_LINE.search(run.output())
        assert match, f"no listening address in the output:\n{run.output()}"
        yield RunningServer(run.process, int(match.group(1)), run.lines, run.reader)


def _client(url: str, backend: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "client.py", "--url", url, "--backend", backend, *extra],
        cwd=CHAT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_banner_matches_the_readme(chat_server: RunningServer) -> None:
    out = chat_server.output()
    assert "WebSocket Chat Server" in out
    assert f"Registered tools: {TOOLS}" in out
    assert "Server will be available at: ws://localhost:0" in out
    assert "Press Ctrl+C to stop" in out
    assert "[WS] Server started successfully" in out


@pytest.mark.parametrize("client_backend", BACKENDS)
def test_client_walks_through_every_step(chat_server: RunningServer, client_backend: str) -> None:
    result = _client(chat_server.url, client_backend, "--username", "Alice")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for tool in ANONYMOUS_TOOLS:
        assert f"- {tool}:" in out
    assert "- clear_history:" not in out
    assert "Alice: Hello, world!" in out
    assert "unique users:   1 ['Alice']" in out
    assert "10/10 echoes correct" in out
    assert "Done." in out


def test_three_clients_share_one_history(chat_server: RunningServer) -> None:
    names = ["Ann", "Bob", "Cyd"]
    with ThreadPoolExecutor(len(names)) as pool:
        runs = list(
            pool.map(lambda name: _client(chat_server.url, "asyncio", "--username", name), names)
        )
    for run in runs:
        assert run.returncode == 0, run.stderr
    # A fourth look after all three finished: everybody's messages are in one history.
    final = _client(chat_server.url, "trio", "--username", "Dee")
    assert final.returncode == 0, final.stderr
    users_line = next(line for line in final.stdout.splitlines() if "unique users" in line)
    for name in [*names, "Dee"]:
        assert f"'{name}'" in users_line
    assert "total messages: 12" in final.stdout


def test_client_without_server_fails_in_one_line() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        # Bound but not listening: connections to it are refused.
        result = _client(f"ws://127.0.0.1:{port}", "asyncio")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: cannot talk to the chat server")
    assert "Traceback" not in result.stderr


def test_ctrl_c_stops_the_server_cleanly(chat_server: RunningServer) -> None:
    chat_server.process.send_signal(signal.SIGINT)
    assert chat_server.process.wait(timeout=20) == 0
    assert chat_server.reader is not None
    chat_server.reader.join(timeout=10)
    assert "Traceback" not in chat_server.output()


def test_bad_parameters_get_invalid_params(chat_server: RunningServer) -> None:
    with connect(chat_server.url, open_timeout=10) as ws:
        ws.recv(timeout=10)  # the welcome
        cases = {
            "empty-username": ("send_message", {"username": "", "message": "hi"}),
            "negative-limit": ("get_messages", {"limit": -1}),
            "oversized": ("send_message", {"username": "Al", "message": "x" * 5000}),
        }
        for request_id, (tool, params) in cases.items():
            request = {"tool_name": tool, "params": params}
            ws.send(json.dumps({"id": request_id, "method": "invoke_tool", "params": request}))
            answer = json.loads(ws.recv(timeout=10))
            assert answer["id"] == request_id
            assert answer["error"]["code"] == -32602, answer
            assert answer["error"]["data"], answer


def test_readme_wire_example_round_trips(chat_server: RunningServer) -> None:
    """The request in the README gets the response shape the README shows."""
    with connect(chat_server.url, open_timeout=10) as ws:
        welcome = json.loads(ws.recv(timeout=10))
        assert welcome == {
            "id": "welcome",
            "result": {
                "message": "Connected to websocket-chat",
                "tools": ANONYMOUS_TOOLS,
            },
        }
        request = {
            "id": "unique-request-id",
            "method": "invoke_tool",
            "params": {
                "tool_name": "send_message",
                "params": {"username": "Alice", "message": "Hello!"},
            },
        }
        ws.send(json.dumps(request))
        answer = json.loads(ws.recv(timeout=10))
        assert answer["id"] == "unique-request-id"
        assert answer["result"]["status"] == "sent"
        message = answer["result"]["message"]
        assert (message["username"], message["message"]) == ("Alice", "Hello!")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", message["timestamp"])
        ws.send(
            json.dumps(
                {
                    "id": "unique-request-id",
                    "method": "invoke_tool",
                    "params": {"tool_name": "invalid_tool"},
                }
            )
        )
        assert json.loads(ws.recv(timeout=10)) == {
            "id": "unique-request-id",
            "error": {"code": -32601, "message": "Tool not found: invalid_tool"},
        }
