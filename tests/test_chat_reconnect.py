"""``client.py --follow`` survives the chat server's crash and restart, on both backends.

As an operator would see it: a follower runs in its terminal, people chat, the
server is killed (SIGKILL: no close frame, no goodbye) while messages flow, and
started again on the same port with the same database. The follower, never
restarted, says it is back and prints what is said afterwards.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from .chat_server import ChatServer, run_script

WAIT = 30.0  # seconds for any one thing to show up; the follower's backoff is at most 15 s
ROOM = "dev"


class Follower:
    """``client.py --follow`` in a subprocess, its output collected line by line."""

    def __init__(self, url: str, backend: str) -> None:
        self.process = run_script(
            "client.py", "--url", url, "--follow", "--room", ROOM, "--backend", backend
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, text: str) -> None:
        """Return once a line containing ``text`` was printed; fail after :data:`WAIT`."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: any(text in line for line in self.lines), timeout=WAIT
            )
        assert found, f"{text!r} never printed; the follower said:\n{''.join(self.lines)}"

    def stop(self) -> int:
        """Ctrl+C, as its user stops it; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(WAIT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join(WAIT)
            assert self.process.stdout is not None
            self.process.stdout.close()


def send(url: str, text: str) -> None:
    """Say ``text`` in the room, as another seed-dialect client (the `websockets` library)."""
    with connect(url, open_timeout=WAIT) as ws:
        ws.recv(timeout=WAIT)  # the welcome
        params = {"username": "Ann", "message": text, "room": ROOM}
        request = {"tool_name": "send_message", "params": params}
        ws.send(json.dumps({"id": 1, "method": "invoke_tool", "params": request}))
        assert "result" in json.loads(ws.recv(timeout=WAIT))


def flow(url: str, stop: threading.Event, sent: list[str]) -> None:
    """Keep messages flowing on one connection until ``stop`` or the server's death."""
    try:
        with connect(url, open_timeout=WAIT) as ws:
            ws.recv(timeout=WAIT)
            while not stop.is_set():
                text = f"flow {len(sent)}"
                params = {"username": "Bob", "message": text, "room": ROOM}
                request = {"tool_name": "send_message", "params": params}
                ws.send(json.dumps({"id": len(sent), "method": "invoke_tool", "params": request}))
                ws.recv(timeout=WAIT)
                sent.append(text)
    except Exception:  # noqa: BLE001 - the server is killed under it: that is the point
        return


@pytest.fixture
def chat(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChatServer]:
    server = ChatServer(tmp_path / "chat.db", request.param)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("chat", "client_backend"), [("asyncio", "trio"), ("trio", "asyncio")], indirect=["chat"]
)
def test_the_follower_survives_a_killed_server(chat: ChatServer, client_backend: str) -> None:
    follower = Follower(chat.ws_url, client_backend)
    try:
        follower.wait_for(f"Following #{ROOM}")
        send(chat.ws_url, "before the crash")
        follower.wait_for("Ann: before the crash")

        stop, sent = threading.Event(), list[str]()
        flowing = threading.Thread(target=flow, args=(chat.ws_url, stop, sent))
        flowing.start()
        follower.wait_for("Bob: flow 5")  # mid-stream
        chat.kill()
        stop.set()
        flowing.join(WAIT)
        assert follower.process.poll() is None, "".join(follower.lines)

        chat.start()  # same port, same database
        follower.wait_for(f"--- reconnected to {chat.ws_url}, back in #{ROOM} ---")
        send(chat.ws_url, "after the restart")
        follower.wait_for("Ann: after the restart")
        assert follower.process.poll() is None
    finally:
        status = follower.stop()
    out = "".join(follower.lines)
    assert status == 0, out
    # Every message the server stored was printed once, whether live or caught up.
    for text in ["before the crash", *sent, "after the restart"]:
        assert out.count(f": {text}\n") == 1, (text, out)
    assert "Traceback" not in out
