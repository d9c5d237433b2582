"""The blocking entry point ``WebSocketTransport.run``: log lines, signals, settings.

``run`` owns the event loop and the process's SIGINT handling, so it is tested
in a subprocess (as a user starts it) and in the test process's main thread
with a client thread sending the signals.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

import anyio
import pytest
from websockets.exceptions import ConnectionClosed as WSClosed
from websockets.sync.client import connect as ws_connect

from securemcp import SecureMCP
from securemcp.transport import WebSocketTransport

TIMEOUT = 10.0


SERVER_SCRIPT = """
import sys
from securemcp import SecureMCP
from securemcp.transport import WebSocketTransport

app = SecureMCP("subprocess-app")
WebSocketTransport(app, shutdown_grace=1, close_timeout=1).run(port=0, backend=sys.argv[1])
print("run() returned", flush=True)
"""


@pytest.mark.parametrize("backend", ["asyncio", "asyncio+uvloop", "trio"])
def test_run_logs_the_seed_lines_and_stops_cleanly_on_sigint(backend: str) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT, backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        try:
            assert process.stderr is not None
            first = process.stderr.readline()
            second = process.stderr.readline()
            assert first.startswith("[WS] Starting WebSocket server on ws://127.0.0.1:"), first
            assert second == "[WS] Server started successfully\n"
            port = int(first.rsplit(":", 1)[1])
            with ws_connect(f"ws://127.0.0.1:{port}", open_timeout=TIMEOUT) as ws:
                assert json.loads(ws.recv(timeout=TIMEOUT))["id"] == "welcome"
                process.send_signal(signal.SIGINT)
                with pytest.raises(WSClosed) as closed:
                    ws.recv(timeout=TIMEOUT)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1001
            out, err = process.communicate(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, err
    assert out == "run() returned\n"
    assert "Traceback" not in err


@pytest.mark.parametrize(("backend", "extra"), [("asyncio+uvloop", "uvloop"), ("trio", "trio")])
def test_a_backend_without_its_extra_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, backend: str, extra: str
) -> None:
    find_spec = importlib.util.find_spec

    def without_extra(name: str, package: str | None = None) -> Any:
        return None if name == extra else find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_extra)
    with pytest.raises(RuntimeError, match=rf"pip install 'securemcp\[{extra}\]'"):
        WebSocketTransport(SecureMCP(extra)).run(backend=backend)


def test_unknown_backend_and_bad_settings_are_refused() -> None:
    app = SecureMCP("settings")
    with pytest.raises(ValueError, match="backend"):
        WebSocketTransport(app).run(backend="twisted")
    with pytest.raises(ValueError, match="ping_interval"):
        WebSocketTransport(app, ping_interval=0)
    with pytest.raises(ValueError, match="shutdown_grace"):
        WebSocketTransport(app, shutdown_grace=-1)
    with pytest.raises(ValueError, match="max_connections"):
        WebSocketTransport(app, max_connections=0)
    with pytest.raises(TypeError, match="max_connections"):
        WebSocketTransport(app, max_connections=1.5)  # type: ignore[arg-type]


FD_LIMIT_SCRIPT = """
import resource, sys
from securemcp import SecureMCP
from securemcp.transport import WebSocketTransport

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard))
given = WebSocketTransport(SecureMCP("fd"), max_connections=7).max_connections
untouched = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
default = WebSocketTransport(SecureMCP("fd")).max_connections
print(given, untouched, default, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
"""


def test_the_default_max_connections_is_what_the_fd_limit_allows_once_raised() -> None:
    # In a process of its own: it raises its own file-descriptor limit.
    done = subprocess.run(
        [sys.executable, "-c", FD_LIMIT_SCRIPT, "256"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    given, untouched, default, soft, hard = (int(field) for field in done.stdout.split())
    assert (given, untouched) == (7, 256)  # an explicit cap is taken as is, raising nothing
    if hard == -1:  # RLIM_INFINITY: raised as far as the kernel allows
        assert soft > 256
    else:
        assert soft == hard  # the soft limit was raised to the hard one
    assert default == soft - 100  # a few descriptors kept for files and threads
    assert default >= 10_000 or hard < 10_100, "a default server must hold 10,000 connections"


class _LogWatcher(logging.Handler):
    """Sets a threading event when the ``securemcp`` logger says ``text``."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, threading.Event] = {}

    def event(self, text: str) -> threading.Event:
        return self.seen.setdefault(text, threading.Event())

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for text, event in self.seen.items():
            if message.startswith(text):
                event.set()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_in_process_second_sigint_stops_waiting_for_calls(backend: str) -> None:
    app = SecureMCP("in-process")
    started = threading.Event()

    @app.tool()
    async def stuck() -> None:
        started.set()
        await anyio.sleep_forever()

    watcher = _LogWatcher()
    listening = watcher.event("[WS] Starting WebSocket server on ws://127.0.0.1:")
    serving_now = watcher.event("[WS] Server started successfully")
    draining = watcher.event("[WS] Shutting down")
    port: list[int] = []
    seen: dict[str, Any] = {}

    def grab_port(record: logging.LogRecord) -> bool:
        if not port and record.getMessage().startswith("[WS] Starting"):
            port.append(int(record.getMessage().rsplit(":", 1)[1]))
        return True

    watcher.addFilter(grab_port)

    def interrupt() -> None:
        seen["signals"] = seen.get("signals", 0) + 1
        os.kill(os.getpid(), signal.SIGINT)

    def client() -> None:
        try:
            assert serving_now.wait(TIMEOUT)
            assert listening.is_set()
            with ws_connect(f"ws://127.0.0.1:{port[0]}", open_timeout=TIMEOUT) as ws:
                ws.recv(timeout=TIMEOUT)  # the welcome
                call = {"id": 1, "method": "invoke_tool", "params": {"tool_name": "stuck"}}
                ws.send(json.dumps(call))
                assert started.wait(TIMEOUT)
                interrupt()
                assert draining.wait(TIMEOUT)
                # The grace period is long: only the second Ctrl+C ends the call now.
                interrupt()
                seen["answer"] = json.loads(ws.recv(timeout=TIMEOUT))
                with pytest.raises(WSClosed) as closed:
                    ws.recv(timeout=TIMEOUT)
                seen["closed"] = closed.value.rcvd
        finally:
            # Whatever failed above, the server must not wait for its grace period.
            while seen.get("signals", 0) < 2:
                interrupt()

    logger = logging.getLogger("securemcp")
    level = logger.level  # run() sets it; other tests must not inherit that
    logger.addHandler(watcher)
    thread = threading.Thread(target=client)
    thread.start()
    try:
        transport = WebSocketTransport(app, shutdown_grace=30, close_timeout=2)
        transport.run(port=0, backend=backend)
    finally:
        logger.removeHandler(watcher)
        logger.setLevel(level)
        thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert seen["answer"] == {
        "id": 1,
        "error": {"code": -32800, "message": "Server shutting down"},
    }
    assert seen["closed"] is not None
    assert seen["closed"].code == 1001


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_busy_port_raises_a_plain_oserror_not_an_exception_group(backend: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=r"(?i)in use") as raised:
            WebSocketTransport(SecureMCP("busy")).run(port=port, backend=backend)
    assert raised.value.errno == errno.EADDRINUSE
    assert not isinstance(raised.value, BaseExceptionGroup)
