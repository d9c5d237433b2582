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
from pathlib import Path

CHAT = Path(__file__).resolve().parent.parent / "examples" / "websocket_chat"
PORT_LINE = re.compile(r"\[WS\] Starting WebSocket server on ws://127\.0\.0\.1:(\d+)")
STARTUP_TIMEOUT = 20.0


def run_script(*args: str) -> subprocess.Popen[str]:
    """``python <args>`` in the example's folder, unbuffered; stdout and stderr in one pipe."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=CHAT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


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
        started = threading.Event()
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

        def pump() -> None:
            # Reading in a thread keeps the pipe drained, so the server never blocks on it.
            assert process.stdout is not None
            for line in process.stdout:
                self.lines.append(line)
                match = PORT_LINE.search(line)
                if match:
                    self.port = int(match.group(1))
                    started.set()
            started.set()

        threading.Thread(target=pump, daemon=True).start()
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
