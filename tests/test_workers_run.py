"""``run(workers=N)`` and the serve options for workers, in this process.

Workers refused where they cannot work (or off Linux); the broker, store and
Redis options; a busy port reported before any worker starts; serving on a
socket the caller keeps.
"""

from __future__ import annotations

import os
import socket
import sys
import types
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from securemcp import SecureMCP
from securemcp.backends import _workers
from securemcp.backends._workers import check_workers
from securemcp.cli import STORE_ENV, main
from securemcp.pubsub import LocalBroker
from securemcp.transport import WebSocketClient, WebSocketTransport

from .worker_helpers import TIMEOUT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers: Linux only")


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
