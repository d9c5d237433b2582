"""Serving from several processes: ``securemcp serve --workers N``, from the app's folder.

The subprocess tests run the command as a user does, on 127.0.0.1 with a port
the system picks, and reap every process they caused, even on failure: the
supervisor, and each worker it reported (checked to still be one of ours by its
command line before it is killed). Connections spread over the workers, a
killed worker is replaced, a stop signal drains them all. The broker, store and
Redis options are checked with ``main`` in process, from the same folder.
``run(workers=N)`` and the supervisor in process are in
``test_workers_in_process.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed as WSClosed

from securemcp.cli import STORE_ENV, main
from securemcp.pubsub import LocalBroker
from securemcp.transport import WebSocketTransport

from .worker_helpers import (
    BACKENDS,
    LISTENING,
    SERVING,
    STARTED,
    TIMEOUT,
    Client,
    Supervised,
    one_call,
    running,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers: Linux only")

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


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "workers_app.py").write_text(APP_MODULE)
    return tmp_path


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


# The broker, store and Redis options, with main() in process


class FakeRedisBroker:
    """Stands in for ``securemcp.redis.RedisBroker`` (a separate piece of work)."""

    def __init__(self, url: str) -> None:
        if not url.endswith("/0"):
            raise ValueError("database 0 only")
        self.url = url


@pytest.fixture
def in_app_dir(app_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run in ``app_dir``; ``sys.path``, ``sys.modules`` and the store variable restored after."""
    monkeypatch.chdir(app_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv(STORE_ENV, "unset")
    monkeypatch.delenv(STORE_ENV)
    try:
        yield app_dir
    finally:
        sys.modules.pop("workers_app", None)


def test_broker_store_and_redis_options(
    in_app_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[tuple[WebSocketTransport, dict[str, Any]]] = []

    def fake_run(self: WebSocketTransport, *args: Any, **kwargs: Any) -> None:
        ran.append((self, kwargs))

    monkeypatch.setattr(WebSocketTransport, "run", fake_run)
    fake = types.ModuleType("securemcp.redis")
    fake.RedisBroker = FakeRedisBroker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "securemcp.redis", fake)

    url = "redis://127.0.0.1:6379/0"
    assert main(["serve", "workers_app:stateful", "--workers", "2", "--redis", url]) == 0
    transport, options = ran.pop()
    assert isinstance(transport.broker, FakeRedisBroker)
    assert transport.broker.url == url
    assert options["workers"] == 2
    # The store URL was there when the app's module was imported.
    assert url == sys.modules["workers_app"].STORE_URL
    assert os.environ[STORE_ENV] == url
    sys.modules.pop("workers_app")

    assert main(["serve", "workers_app:app", "--store", "sqlite:///x.db"]) == 0
    transport, options = ran.pop()
    assert type(transport.broker) is LocalBroker
    assert options["workers"] == 1
    assert sys.modules["workers_app"].STORE_URL == "sqlite:///x.db"

    for argv, message in [
        (["--redis", url, "--broker", url], "error: --redis already sets --broker and --store"),
        (["--redis", url, "--store", url], "error: --redis already sets --broker and --store"),
        (["--broker", "http://x"], "error: --broker 'http://x': use a redis://, rediss://"),
        (["--broker", "redis://x/1"], "error: invalid broker URL 'redis://x/1': database 0"),
        (["--workers", "0"], "error: --workers must be at least 1, not 0"),
        (["--workers", "3"], "error: 3 workers need a shared broker: "),
    ]:
        assert main(["serve", "workers_app:stateful", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(message), err
        assert len(err.splitlines()) == 1
    assert not ran

    monkeypatch.setitem(sys.modules, "securemcp.redis", None)  # import fails: no coredis
    assert main(["serve", "workers_app:stateful", "--broker", url]) == 2
    err = capsys.readouterr().err
    assert (
        err == "error: --broker and --redis need the redis extra: pip install 'securemcp[redis]'\n"
    )


def test_a_busy_port_is_one_line_before_any_worker(
    in_app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The supervisor binds before it forks: nothing is forked here.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        assert main(["serve", "workers_app:app", "--workers", "2", "--port", port]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}: "), err
    assert "Worker" not in err
