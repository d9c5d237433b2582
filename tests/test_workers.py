"""Serving from several processes: ``securemcp serve --workers N`` and ``run(workers=N)``.

The subprocess tests run the command as a user does, on 127.0.0.1 with a port
the system picks, and reap every process they caused, even on failure: the
supervisor, and each worker it reported (checked to still be one of ours by
its command line before it is killed). The in-process tests drive the
:class:`Supervisor` and a worker's serving directly, in this process, so that
coverage sees them; the supervisor then forks this test process, and the
children run a stand-in ``serve`` and leave with ``os._exit``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from websockets.exceptions import ConnectionClosed as WSClosed
from websockets.sync.client import ClientConnection, connect

from securemcp import SecureMCP
from securemcp.backends import _running, _workers
from securemcp.backends._workers import Supervisor, bind_sockets, check_workers
from securemcp.cli import STORE_ENV, main
from securemcp.pubsub import LocalBroker
from securemcp.transport import WebSocketClient, WebSocketTransport

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers: Linux only")

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


def ignores_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has set SIGTERM to SIG_IGN (its ``SigIgn`` mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & 1 << (signal.SIGTERM - 1))
    return False  # pragma: no cover - Linux always shows it


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
