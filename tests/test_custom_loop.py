"""The selectors example server, driven over loopback by an independent client.

The server runs as a user would start it (a subprocess); the client is the
``websockets`` library's sync client, which shares no code with SecureMCP.
"""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import ClientConnection, connect

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="the example stops on POSIX signals"
)

SERVER = Path(__file__).resolve().parents[1] / "examples" / "custom_loop" / "server.py"
TIMEOUT = 10.0


def _read_line(proc: subprocess.Popen[str]) -> str:
    """The process's next stdout line, or a test failure after TIMEOUT seconds."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(TIMEOUT):
            pytest.fail(f"the example printed nothing within {TIMEOUT} s")
    return proc.stdout.readline()


class Example:
    """The example server running in a subprocess."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = _read_line(self.proc)
        prefix = "listening on ws://127.0.0.1:"
        assert first.startswith(prefix), first
        self.url = first.strip().removeprefix("listening on ")

    def connect(self, max_queue: int = 16) -> ClientConnection:
        """A new client connection; the welcome message is left for the test to read.

        ``max_queue`` is how many messages the client buffers before it stops
        reading from its socket.
        """
        return connect(self.url, open_timeout=TIMEOUT, close_timeout=TIMEOUT, max_queue=max_queue)

    def finish(self) -> tuple[int, str, str]:
        """Wait for the process to end; return its exit status, the rest of stdout, stderr."""
        out, err = self.proc.communicate(timeout=TIMEOUT)
        return self.proc.returncode, out, err


@pytest.fixture
def example() -> Iterator[Example]:
    """Start the example on a free port; kill it whatever the test did."""
    server = Example()
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
        server.proc.communicate(timeout=TIMEOUT)


def call(ws: ClientConnection, request_id: int, method: str, params: Any = None) -> Any:
    """Send one request and return the decoded answer."""
    message: dict[str, Any] = {"id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    ws.send(json.dumps(message))
    answer = json.loads(ws.recv(timeout=TIMEOUT))
    assert answer["id"] == request_id
    return answer


def invoke(ws: ClientConnection, request_id: int, tool: str, arguments: Any) -> Any:
    """Call ``tool`` with ``arguments`` and return the decoded answer."""
    return call(ws, request_id, "invoke_tool", {"tool_name": tool, "params": arguments})


def test_welcome_lists_the_tools(example: Example) -> None:
    with example.connect() as ws:
        welcome = json.loads(ws.recv(timeout=TIMEOUT))
    assert welcome == {
        "id": "welcome",
        "result": {"message": "Connected to custom-loop-demo", "tools": ["add", "echo", "upper"]},
    }


def test_builtins_and_tools(example: Example) -> None:
    with example.connect() as ws:
        ws.recv(timeout=TIMEOUT)
        tools = call(ws, 1, "list_tools")["result"]["tools"]
        assert [tool["name"] for tool in tools] == ["add", "echo", "upper"]
        assert tools[0]["inputSchema"]["required"] == ["a", "b"]
        assert invoke(ws, 2, "add", {"a": 2, "b": 40}) == {"id": 2, "result": 42}
        assert invoke(ws, 3, "echo", {"message": "héllo"}) == {
            "id": 3,
            "result": {"echoed": "héllo"},
        }
        assert invoke(ws, 4, "upper", {"text": "shout"}) == {"id": 4, "result": "SHOUT"}
        assert call(ws, 5, "ping") == {"id": 5, "result": {"pong": True}}


def test_errors(example: Example) -> None:
    with example.connect() as ws:
        ws.recv(timeout=TIMEOUT)
        unknown = invoke(ws, 1, "missing", {})
        assert unknown["error"] == {"code": -32601, "message": "Tool not found: missing"}
        invalid = invoke(ws, 2, "add", {"a": "two", "b": 2})["error"]
        assert invalid["code"] == -32602
        assert invalid["data"][0]["loc"] == ["a"]
        extra = invoke(ws, 3, "upper", {"text": "x", "unexpected": 1})["error"]
        assert extra["code"] == -32602
        assert call(ws, 4, "no_such_method")["error"]["code"] == -32601
        # The connection survives every refusal.
        assert invoke(ws, 5, "add", {"a": 1, "b": 1})["result"] == 2


def test_two_clients_at_once(example: Example) -> None:
    with example.connect() as first, example.connect() as second:
        first.recv(timeout=TIMEOUT)
        second.recv(timeout=TIMEOUT)
        first.send(json.dumps({"id": 1, "method": "ping"}))
        second.send(
            json.dumps(
                {
                    "id": 1,
                    "method": "invoke_tool",
                    "params": {"tool_name": "add", "params": {"a": 1, "b": 2}},
                }
            )
        )
        # Read in the opposite order: neither client waits for the other.
        assert json.loads(second.recv(timeout=TIMEOUT)) == {"id": 1, "result": 3}
        assert json.loads(first.recv(timeout=TIMEOUT)) == {"id": 1, "result": {"pong": True}}


def test_large_pipelined_answers_arrive_whole(example: Example) -> None:
    # Megabytes of answers to a client that buffers one message outgrow the
    # socket buffers, so the server must keep unsent bytes and finish them when
    # the socket becomes writable again.
    count, text = 16, "x" * (512 * 1024)
    with example.connect(max_queue=1) as ws:
        ws.recv(timeout=TIMEOUT)
        requests = [
            json.dumps(
                {
                    "id": i,
                    "method": "invoke_tool",
                    "params": {"tool_name": "upper", "params": {"text": text}},
                }
            )
            for i in range(count)
        ]

        # Sending from a thread lets this one read: the server stops reading
        # from a client that does not read its answers.
        def send_all() -> None:
            for request in requests:
                ws.send(request)

        sender = threading.Thread(target=send_all)
        sender.start()
        try:
            answers = [json.loads(ws.recv(timeout=TIMEOUT)) for _ in range(count)]
        finally:
            sender.join(TIMEOUT)
        assert not sender.is_alive()
    assert [answer["id"] for answer in answers] == list(range(count))
    assert all(answer["result"] == text.upper() for answer in answers)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_closes_clients_and_exits_cleanly(example: Example, signum: int) -> None:
    with example.connect() as ws:
        ws.recv(timeout=TIMEOUT)
        assert invoke(ws, 1, "add", {"a": 1, "b": 2})["result"] == 3
        example.proc.send_signal(signum)
        with pytest.raises(ConnectionClosedOK) as closed:
            ws.recv(timeout=TIMEOUT)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001
    status, out, err = example.finish()
    assert status == 0
    assert out.strip() == "server stopped"
    assert "Traceback" not in err


def test_stops_at_once_when_idle(example: Example) -> None:
    example.proc.send_signal(signal.SIGINT)
    status, out, err = example.finish()
    assert (status, out.strip(), err) == (0, "server stopped", "")


def test_example_loads_no_async_framework() -> None:
    # Importing the example (without running it) must not pull in an event loop
    # library, directly or through SecureMCP: that is the point of the example.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('example', {str(SERVER)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['example'] = module\n"
        "spec.loader.exec_module(module)\n"
        "assert module.app.tools\n"
        "roots = {name.split('.')[0] for name in sys.modules}\n"
        "print(sorted(roots & {'asyncio', 'trio', 'anyio'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
