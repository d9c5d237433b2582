"""Serving from several processes: ``securemcp serve --workers N``, in subprocesses.

The tests run the command as a user does, on 127.0.0.1 with a port the system
picks, and reap every process they caused, even on failure: the supervisor, and
each worker it reported (checked to still be one of ours by its command line
before it is killed). Connections spread over the workers, a killed worker is
replaced, a stop signal drains them all. ``run(workers=N)`` and the options are
in ``test_workers_run.py``; the supervisor driven in process in
``test_workers_supervisor.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed as WSClosed

from .worker_helpers import BACKENDS, TIMEOUT, Client, one_call, running, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers: Linux only")

LISTENING = re.compile(r"\[WS\] Starting WebSocket server on ws://127\.0\.0\.1:(\d+) with (\d+) ")
STARTED = re.compile(r"\[WS\] Worker (\d+) started")
SERVING = re.compile(r"\[WS\] Worker (\d+) serving")


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


@pytest.fixture
def supervised(app_dir: Path) -> Iterator[Callable[..., Supervised]]:
    """Start ``securemcp serve`` subprocesses; all of them are reaped at the end."""
    started: list[Supervised] = []

    def start(*args: str, spec: str = "workers_app:app") -> Supervised:
        started.append(Supervised(app_dir, *args, spec=spec))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.close()


# The command, in subprocesses


@pytest.mark.parametrize("backend", [*BACKENDS, "uvloop"])
def test_connections_spread_over_the_workers(
    supervised: Callable[..., Supervised], backend: str
) -> None:
    options = ["--uvloop"] if backend == "uvloop" else ["--backend", backend]
    server = supervised("--workers", "3", *options)
    url = server.start(3)
    assert len(server.matches(LISTENING)) == 1  # the banner once, from the supervisor
    workers = set(server.worker_pids())
    assert len(workers) == 3
    # Which process accepts a connection is the kernel's choice (every idle worker is woken
    # and the first to run takes it, maybe several at once), so one by one they could all go
    # to one worker. Concurrent connections whose call blocks its worker's loop for a moment
    # leave that worker unable to accept: the others take the connections arriving meanwhile.
    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(partial(one_call, hold=0.05), [url] * 30, timeout=TIMEOUT * 2))
    assert len(answers) == 30
    assert set(answers) <= workers
    assert len(set(answers)) >= 2, answers


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_worker_is_replaced_and_the_others_keep_serving(
    supervised: Callable[..., Supervised], backend: str
) -> None:
    server = supervised("--workers", "3", "--backend", backend)
    url = server.start(3)
    first = set(server.worker_pids())
    # Open connections until they reach at least two workers.
    clients: dict[Client, int] = {}
    deadline = time.monotonic() + TIMEOUT
    while len(set(clients.values())) < 2:
        assert time.monotonic() < deadline, "every connection went to one worker"
        client = Client(url)
        clients[client] = client.call("pid", hold=0.05)
    victim = next(iter(clients.values()))
    # Load meanwhile: new connections keep coming while the worker dies.
    stop_load = threading.Event()
    load_answers: list[int] = []

    def load() -> None:
        while not stop_load.is_set():
            # Failing only for one accepted by the victim just before it died.
            with contextlib.suppress(Exception):
                load_answers.append(one_call(url))

    loader = threading.Thread(target=load)
    loader.start()
    try:
        os.kill(victim, signal.SIGKILL)
        died = re.compile(rf"\[WS\] Worker {victim} was killed by SIGKILL; starting a new one")
        server.wait_for(died)
        server.wait_for(STARTED, 4)
        server.wait_for(SERVING, 4)
    finally:
        stop_load.set()
        loader.join(TIMEOUT)
    replacement = set(server.worker_pids()) - first
    assert len(replacement) == 1
    assert not running(victim)
    # The connections to the other workers never noticed.
    for client, pid in clients.items():
        if pid == victim:
            with pytest.raises((WSClosed, OSError)):
                client.call("pid")
        else:
            assert client.call("pid") == pid
        client.close()
    alive = (first - {victim}) | replacement
    assert set(load_answers) <= first | replacement
    # New connections are served, the replacement among the workers (by its log line above).
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(partial(one_call, hold=0.05), [url] * 10, timeout=TIMEOUT * 2))
    assert set(answers) <= alive


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stop_signal_drains_every_worker_and_exits_0(
    supervised: Callable[..., Supervised], backend: str, signum: signal.Signals
) -> None:
    server = supervised("--workers", "2", "--backend", backend)
    url = server.start(2)
    workers = server.worker_pids()
    client = Client(url)
    try:
        sent = client.send("slow", seconds=1.0)
        server.wait_for(re.compile(r"slow call started in (\d+)"))
        began = time.monotonic()
        server.process.send_signal(signum)
        answer = client.answer()
        # Within shutdown_grace (10 s): the call completes; past it, -32800 as one process does.
        assert answer["id"] == sent
        if "result" in answer:
            assert answer["result"] in workers
        else:
            assert answer["error"]["code"] == -32800
        with pytest.raises(WSClosed) as closed:
            client.ws.recv(timeout=TIMEOUT)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001
        assert server.process.wait(TIMEOUT) == 0
        assert time.monotonic() - began < TIMEOUT
    finally:
        client.close()
    assert not [pid for pid in workers if running(pid)]
    log = server.log
    assert "[WS] Shutting down 2 workers" in log
    assert log.rstrip().endswith("[WS] Server stopped")
    assert "Traceback" not in log
    assert "starting a new one" not in log


def test_more_workers_without_a_shared_broker_are_refused(app_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "securemcp", "serve", "workers_app:stateful", "--workers", "2"],
        cwd=app_dir,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: 2 workers need a shared broker: ")
    assert "would silently split" in lines[0]
    assert "stateless=True" in lines[0]
    assert "--redis" in lines[0]
