"""``run(workers=N)``, the :class:`Supervisor` and a worker's serving, in this process.

So that coverage sees them: workers refused where they cannot work (or off
Linux), serving on a socket the caller keeps; the supervisor forks this test
process, and the children run a stand-in ``serve`` and leave with
``os._exit``: dead workers are replaced with backoff, workers that do not stop
are killed; a worker serves its inherited socket until SIGTERM.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from securemcp import SecureMCP
from securemcp.backends import _running, _workers
from securemcp.backends._workers import Supervisor, bind_sockets, check_workers
from securemcp.pubsub import LocalBroker
from securemcp.transport import WebSocketClient, WebSocketTransport

from .worker_helpers import BACKENDS, TIMEOUT, one_call, running, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers: Linux only")


def ignores_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has set SIGTERM to SIG_IGN (its ``SigIgn`` mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & 1 << (signal.SIGTERM - 1))
    return False  # pragma: no cover - Linux always shows it


# run(workers=N) and the options, in process


def test_run_refuses_workers_that_cannot_work() -> None:
    transport = WebSocketTransport(SecureMCP("stateful"))
    with pytest.raises(ValueError, match=r"^2 workers need a shared broker: .*stateless=True"):
        transport.run(port=0, workers=2)
    with pytest.raises(ValueError, match="at least 1"):
        transport.run(port=0, workers=0)
    with pytest.raises(TypeError, match="integer"):
        transport.run(port=0, workers=True)
    # A stateless app, or a broker shared between processes, may have workers.
    check_workers(4, SecureMCP("stateless", stateless=True), LocalBroker())
    check_workers(4, SecureMCP("stateful"), object())  # type: ignore[arg-type]
    check_workers(1, SecureMCP("stateful"), LocalBroker())


def test_workers_are_linux_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(RuntimeError, match="Linux only"):
        check_workers(2, SecureMCP("stateless", stateless=True), LocalBroker())


@pytest.mark.parametrize(
    ("backend", "native"), [("asyncio", True), ("asyncio", False), ("trio", False)]
)
def test_serve_on_a_socket_the_caller_keeps(backend: str, native: bool) -> None:
    app = SecureMCP("on-a-socket")

    @app.tool()
    def double(n: int) -> int:
        return 2 * n

    transport = WebSocketTransport(app, native_asyncio=native, close_timeout=1)
    listening = socket.create_server(("127.0.0.1", 0))
    try:

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                port = await tg.start(partial(transport.serve, "ignored", 1, sock=listening))
                assert port == listening.getsockname()[1]
                async with WebSocketClient(f"ws://127.0.0.1:{port}") as client:
                    assert await client.invoke_tool("double", {"n": 21}) == 42
                transport.shutdown()

        anyio.run(main, backend=backend)
        # Still ours, still listening: a connection waits in its backlog.
        assert listening.fileno() != -1
        with socket.create_connection(listening.getsockname(), timeout=TIMEOUT):
            pass
    finally:
        listening.close()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        pytest.raises(ValueError, match="TCP socket"),
    ):
        _workers.duplicate_listening(udp)


# The supervisor and a worker, in process (so that coverage sees them)


class _Records:
    """The ``securemcp`` log lines, as they come, for a thread to wait on."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def pids(self, pattern: re.Pattern[str]) -> list[int]:
        return [
            int(found.group(1))
            for record in list(self._caplog.records)
            if (found := pattern.match(record.getMessage()))
        ]

    def wait(self, pattern: re.Pattern[str], count: int = 1) -> list[int]:
        wait_until(lambda: len(self.pids(pattern)) >= count, f"{count} x {pattern.pattern}")
        return self.pids(pattern)


def _stand_in_worker(ignore_sigterm: bool, sockets: Sequence[socket.socket]) -> None:
    """What a forked child runs instead of a server: answer each connection with its pid."""
    if ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        connection, _ = sockets[0].accept()
        with connection:
            connection.sendall(str(os.getpid()).encode())


def _ask_pid(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as connection:
        return int(connection.recv(64))


def _pid_if_listening(port: int) -> int | None:
    """:func:`_ask_pid`, or ``None`` while no worker listens yet (each has its own socket)."""
    try:
        return _ask_pid(port)
    except ConnectionRefusedError:
        return None


def _supervise_in_process(
    caplog: pytest.LogCaptureFixture,
    supervisor: Supervisor,
    drive: Callable[[_Records], None],
) -> None:
    """Run ``supervisor`` in this (main) thread while ``drive`` acts from another one."""
    main_thread = threading.get_ident()
    failures: queue.Queue[BaseException] = queue.Queue()
    records = _Records(caplog)

    def driver() -> None:
        # Signals meant for the supervisor must not land in this thread.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT})
        try:
            drive(records)
        except BaseException as exc:  # noqa: BLE001 - reported by the test, after the supervisor stopped
            failures.put(exc)
        finally:
            # Only once the supervisor waits for it (blocked, then taken by sigtimedwait):
            # before that, SIGTERM would end the test process.
            if "[WS] Starting WebSocket server" in caplog.text:
                signal.pthread_kill(main_thread, signal.SIGTERM)

    thread = threading.Thread(target=driver)
    with caplog.at_level("DEBUG", "securemcp"):
        thread.start()
        try:
            supervisor.run()
        finally:
            thread.join(TIMEOUT * 2)
    assert not thread.is_alive()
    if not failures.empty():
        raise failures.get()


def test_the_supervisor_replaces_dead_workers_with_backoff_and_stops_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Port 0 for the supervisor: the drive thread learns the port from the banner.
    supervisor = Supervisor(partial(_stand_in_worker, False), "127.0.0.1", 0, 2, stop_timeout=5)
    banner = re.compile(r"\[WS\] Starting WebSocket server on ws://127\.0\.0\.1:(\d+) with 2 ")
    started = re.compile(r"\[WS\] Worker (\d+) started")
    seen: dict[str, Any] = {}

    def drive(records: _Records) -> None:
        port = records.wait(banner)[0]
        first = records.wait(started, 2)
        wait_until(lambda: _pid_if_listening(port) in first, "a worker answering")
        # Killed right after starting, again and again: replaced at once, then after a delay.
        victim = first[0]
        for count in (3, 4):
            os.kill(victim, signal.SIGKILL)
            victim = records.wait(started, count)[-1]
        seen["workers"] = records.pids(started)
        seen["answer"] = _ask_pid(port)

    _supervise_in_process(caplog, supervisor, drive)
    log = caplog.text
    workers = seen["workers"]
    assert f"[WS] Worker {workers[0]} was killed by SIGKILL; starting a new one\n" in log
    assert f"[WS] Worker {workers[2]} was killed by SIGKILL; starting a new one in 0.5 s" in log
    assert seen["answer"] in workers
    assert "[WS] Shutting down 2 workers" in log
    assert f"[WS] Worker {workers[1]} exited with status 0" in log
    assert log.rstrip().endswith("[WS] Server stopped")
    assert not [pid for pid in workers if running(pid)]


def test_the_supervisor_kills_workers_that_do_not_stop(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor(partial(_stand_in_worker, True), "127.0.0.1", 0, 1, stop_timeout=0.5)
    started = re.compile(r"\[WS\] Worker (\d+) started")
    seen: list[int] = []

    def drive(records: _Records) -> None:
        seen.extend(records.wait(started))
        wait_until(lambda: ignores_sigterm(seen[0]), "the worker ignoring SIGTERM")

    _supervise_in_process(caplog, supervisor, drive)
    assert f"[WS] Worker {seen[0]} did not stop in time: killed" in caplog.text
    assert not running(seen[0])


def test_binding_every_address_of_a_name_on_one_port() -> None:
    sockets = bind_sockets("localhost", 0)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(ports) == 1
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_serves_the_inherited_socket_until_sigterm(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = SecureMCP("worker", stateless=True)

    @app.tool()
    def pid() -> int:
        return os.getpid()

    transport = WebSocketTransport(app, close_timeout=1, shutdown_grace=1)
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    main_thread = threading.get_ident()
    answers: list[int] = []

    def client() -> None:
        try:
            wait_until(lambda: "[WS] Worker" in caplog.text, "the worker serving")
            answers.append(one_call(f"ws://127.0.0.1:{port}"))
        finally:
            # Only once the worker's handler is there: before, SIGTERM ends the test process.
            if "[WS] Worker" in caplog.text:
                signal.pthread_kill(main_thread, signal.SIGTERM)

    thread = threading.Thread(target=client)
    try:
        with caplog.at_level("INFO", "securemcp"):
            thread.start()
            _running._run_worker(transport, "127.0.0.1", 0, backend, {}, [listening])
    finally:
        thread.join(TIMEOUT)
        listening.close()
    assert answers == [os.getpid()]
    me = os.getpid()
    for line in ("Worker %d serving", "Worker %d: Shutting down", "Worker %d: Server stopped"):
        assert f"[WS] {line % me}" in caplog.text
    assert "Starting WebSocket server" not in caplog.text
