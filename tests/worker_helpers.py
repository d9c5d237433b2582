"""What the tests of serving from several processes share.

The app module they serve (written into ``app_dir``, a fixture every module
gets through ``conftest.py``), a seed-dialect client making one call at a time,
and waiting on processes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

TIMEOUT = 15.0
BACKENDS = ["asyncio", "trio"]

APP_MODULE = '''
import os
import sys
import time

import anyio

from securemcp import SecureMCP

STORE_URL = os.environ.get("SECUREMCP_STORE_URL")

app = SecureMCP("workers-test", stateless=True)
stateful = SecureMCP("workers-stateful")


@app.tool()
async def pid(hold: float = 0.0) -> int:
    """This worker's pid; ``hold`` blocks the worker's event loop that long."""
    time.sleep(hold)
    return os.getpid()


@app.tool()
async def slow(seconds: float) -> int:
    print(f"slow call started in {os.getpid()}", file=sys.stderr, flush=True)
    await anyio.sleep(seconds)
    return os.getpid()
'''


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


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "workers_app.py").write_text(APP_MODULE)
    return tmp_path
