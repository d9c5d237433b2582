"""What the tests of serving from several processes share: the server, a client, the waits.

:class:`Supervised` runs ``securemcp serve --workers N`` in a subprocess and
reaps it and its workers; :class:`Client` makes one seed-dialect call at a time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

TIMEOUT = 15.0
BACKENDS = ["asyncio", "trio"]

LISTENING = re.compile(r"\[WS\] Starting WebSocket server on ws://127\.0\.0\.1:(\d+) with (\d+) ")
STARTED = re.compile(r"\[WS\] Worker (\d+) started")
SERVING = re.compile(r"\[WS\] Worker (\d+) serving")


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


class Supervised:
    """``securemcp serve ... --workers N`` in a subprocess; its stderr read by a thread."""

    def __init__(self, cwd: Path, *args: str, spec: str = "workers_app:app") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "securemcp", "serve", spec, "--port", "0", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._lock:
                self.lines.append(line)

    @property
    def log(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def matches(self, pattern: re.Pattern[str]) -> list[re.Match[str]]:
        return list(pattern.finditer(self.log))

    def wait_for(self, pattern: re.Pattern[str], count: int = 1) -> list[re.Match[str]]:
        def seen() -> bool:
            if self.process.poll() is not None and len(self.matches(pattern)) < count:
                self._reader.join(TIMEOUT)
                pytest.fail(f"the server exited: {self.log}")
            return len(self.matches(pattern)) >= count

        wait_until(seen, f"{count} x {pattern.pattern!r} in {self.log!r}")
        return self.matches(pattern)

    def start(self, workers: int) -> str:
        """Wait until every worker serves; the server's URL."""
        port = int(self.wait_for(LISTENING)[0].group(1))
        self.wait_for(SERVING, workers)
        return f"ws://127.0.0.1:{port}"

    def worker_pids(self) -> list[int]:
        return [int(found.group(1)) for found in self.matches(STARTED)]

    def close(self) -> None:
        """Kill the supervisor and every worker of ours still running; close the pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(TIMEOUT)
        for pid in self.worker_pids():
            try:
                ours = b"workers_app" in Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if ours and running(pid):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(running(pid) for pid in self.worker_pids()), "workers gone")
        self._reader.join(TIMEOUT)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


class Client:
    """A seed-dialect WebSocket connection making one call at a time."""

    def __init__(self, url: str) -> None:
        self._stack = ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(url, open_timeout=TIMEOUT, close_timeout=2)
        )
        self._ids = 0
        assert json.loads(self.ws.recv(timeout=TIMEOUT))["id"] == "welcome"

    def send(self, tool: str, **arguments: Any) -> int:
        self._ids += 1
        params = {"tool_name": tool, "params": arguments}
        self.ws.send(json.dumps({"id": self._ids, "method": "invoke_tool", "params": params}))
        return self._ids

    def answer(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self.ws.recv(timeout=TIMEOUT))
        return answer

    def call(self, tool: str, **arguments: Any) -> Any:
        sent = self.send(tool, **arguments)
        answer = self.answer()
        assert answer.get("id") == sent, answer
        assert "result" in answer, answer
        return answer["result"]

    def close(self) -> None:
        self._stack.close()


def one_call(url: str, **arguments: Any) -> int:
    """Connect, call ``pid``, close: the answer."""
    client = Client(url)
    try:
        result: int = client.call("pid", **arguments)
        return result
    finally:
        client.close()
