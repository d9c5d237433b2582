"""The chat example's server as a subprocess that a test stops, kills and starts again.

Shared by the browser test and the reconnecting follower's test: both restart
the server on the port it first got, as an operator restarting it would.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CHAT = Path(__file__).resolve().parent.parent / "examples" / "websocket_chat"
PORT_LINE = re.compile(r"\[WS\] Starting WebSocket server on ws://127\.0\.0\.1:(\d+)")
STARTUP_TIMEOUT = 20.0


def run_script(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """``python <args>`` in the example's folder, unbuffered; stdout and stderr in one pipe."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=CHAT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
    )


def pump_lines(
    process: subprocess.Popen[str], lines: list[str], ready: Callable[[str], bool]
) -> tuple[threading.Event, threading.Thread]:
    """Collect ``process``'s output into ``lines`` in a started thread.

    The event is set at the first line ``ready`` accepts, or when the output
    ends (so a waiter never waits for a process that died).
    """
    started = threading.Event()

    def pump() -> None:
        # Reading in a thread keeps the pipe drained, so the process never blocks on it.
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if ready(line):
                started.set()
        started.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return started, reader


@dataclass
class ScriptRun:
    """A script of the example running, and what it has printed so far."""

    process: subprocess.Popen[str]
    lines: list[str]
    started: threading.Event
    """Set at the first line the ``ready`` test accepted, or at the end of the output."""
    reader: threading.Thread

    def output(self) -> str:
        return "".join(self.lines)


@contextmanager
def running_script(
    *args: str, ready: Callable[[str], bool], env: Mapping[str, str] | None = None
) -> Iterator[ScriptRun]:
    """``run_script(*args)`` with its output collected; killed (if still running) at the end."""
    process = run_script(*args, env=env)
    lines: list[str] = []
    started, reader = pump_lines(process, lines, ready)
    try:
        yield ScriptRun(process, lines, started, reader)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        reader.join(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


class ChatServer:
    """The example server as a subprocess; :meth:`start` again reuses the same port."""

    def __init__(self, db: Path, backend: str, *options: str) -> None:
        self.db = db
        self.backend = backend
        self.options = options
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    @property
    def url(self) -> str:
        """The page's address."""
        return f"http://127.0.0.1:{self.port}/"

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint's address."""
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = process = run_script(
            "server.py",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db",
            str(self.db),
            "--backend",
            self.backend,
            *self.options,
        )

        def listening(line: str) -> bool:
            match = PORT_LINE.search(line)
            if match:
                self.port = int(match.group(1))
            return match is not None

        started, _ = pump_lines(process, self.lines, listening)
        assert started.wait(STARTUP_TIMEOUT), "server did not start:\n" + "".join(self.lines)
        assert process.poll() is None, "server exited:\n" + "".join(self.lines)

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        self.process = None
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()

    def kill(self) -> None:
        """End the server at once (SIGKILL): no close frame, no shutdown, as in a crash."""
        process = self.process
        assert process is not None
        self.process = None
        process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()
