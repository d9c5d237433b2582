"""Running the ``securemcp`` command as a user does: one command, or ``serve`` in the background.

Shared by the command line's tests, the tutorial's and the packaging's.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

TIMEOUT = 15.0
BACKENDS = ["asyncio", "trio"]

LISTENING = re.compile(r"\[WS\] Starting WebSocket server on (wss?://127\.0\.0\.1:\d+)")


def _script() -> list[str]:
    """The installed console script (next to this interpreter, or on PATH)."""
    beside = Path(sys.executable).with_name("securemcp")
    found = str(beside) if beside.exists() else shutil.which("securemcp")
    assert found is not None, "the securemcp console script is not installed"
    return [found]


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, script: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run one ``securemcp`` command to completion."""
    command = _script() if script else [sys.executable, "-m", "securemcp"]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=TIMEOUT,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int, text: str) -> None:
    """A failure as a user expects it: that status, one ``error`` line, no traceback."""
    assert result.returncode == status, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert text in result.stderr, result.stderr


class Server:
    """``securemcp serve`` running in a subprocess; its stderr read by a thread."""

    def __init__(
        self,
        cwd: Path,
        *args: str,
        command: Sequence[str] = ("-m", "securemcp", "serve", "cli_app:app", "--port", "0"),
        env: dict[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.process = subprocess.Popen(
            [python, *command, *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = self._wait_for_url()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)
            self.lines.put(line)
        self.lines.put("")  # end of output

    def _wait_for_url(self) -> str:
        while True:
            try:
                line = self.lines.get(timeout=TIMEOUT)
            except queue.Empty:
                self.close()
                pytest.fail("the server did not report its address in time")
            if not line:
                self.close()
                pytest.fail(f"the server exited: {''.join(self.stderr)}")
            found = LISTENING.search(line)
            if found:
                return found.group(1)

    def interrupt(self) -> int:
        """Ctrl+C, as a user stops it; the exit status."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(TIMEOUT)

    def close(self) -> None:
        """Kill the server if it still runs, and close its pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(TIMEOUT)
        self._reader.join(TIMEOUT)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
