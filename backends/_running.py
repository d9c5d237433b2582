"""Running a transport as a program: the event loop, the signals, the workers, the resources.

``WebSocketTransport.run`` lands here: it owns the event loop (or, with
``workers=N``, the supervisor that forks N of them), serves until SIGINT or
SIGTERM and then shuts down gracefully. The resources a server opens while
it serves (the app's, the broker, the rate limiter) are held by
:func:`hold_open`, also used by ``serve()``.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from ._workers import Supervisor, check_workers, stop_timeout

if TYPE_CHECKING:
    from .server import WebSocketTransport

__all__ = ["BACKENDS", "backend_missing", "hold_open", "run_transport"]

BACKENDS = {"asyncio", "asyncio+uvloop", "trio"}

# The backends that need an extra (named like its module); plain asyncio needs none.
_EXTRAS = {"trio": "trio", "asyncio+uvloop": "uvloop"}


def backend_missing(backend: str) -> str | None:
    """Why ``backend`` cannot run here (its extra is not installed), or ``None`` if it can."""
    extra = _EXTRAS.get(backend)
    if extra is None or importlib.util.find_spec(extra) is not None:
        return None
    return (
        f"backend {backend!r} needs {extra}, which is not installed: "
        f"pip install 'securemcp[{extra}]', or use backend='asyncio'"
    )


def run_transport(
    transport: WebSocketTransport,
    host: str,
    port: int,
    *,
    backend: str,
    log_level: int,
    workers: int,
) -> None:
    """``transport.run(...)``: serve until SIGINT or SIGTERM, in this process or N workers."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: use one of {sorted(BACKENDS)}")
    check_workers(workers, transport.app, transport.broker)
    missing = backend_missing(backend)
    if missing is not None:
        raise RuntimeError(missing)
    options: dict[str, Any] = {}
    if backend == "asyncio+uvloop":
        backend, options = "asyncio", {"use_uvloop": True}
    _configure_logging(log_level)
    if workers > 1:
        Supervisor(
            partial(_run_worker, transport, host, port, backend, options),
            host,
            port,
            workers,
            scheme="wss" if transport.ssl is not None else "ws",
            stop_timeout=stop_timeout(transport.shutdown_grace, transport._settings.close_timeout),
        ).run()
        return
    _run_loop(partial(_serve_until_signal, transport, host, port), backend=backend, options=options)


def _run_worker(
    transport: WebSocketTransport,
    host: str,
    port: int,
    backend: str,
    options: dict[str, Any],
    sockets: Sequence[socket.socket],
) -> None:
    """A worker process: serve on ``sockets`` until SIGTERM (SIGINT is the supervisor's)."""
    serve = partial(
        _serve_until_signal,
        transport,
        host,
        port,
        sockets,
        worker=True,
        signals=(signal.SIGTERM,),
    )
    _run_loop(serve, backend=backend, options=options)


def _run_loop(
    main: Callable[[], Awaitable[None]], *, backend: str, options: dict[str, Any]
) -> None:
    try:
        anyio.run(main, backend=backend, backend_options=options)
    except KeyboardInterrupt:
        # Ctrl+C before the signal handler was installed or after it was removed.
        pass
    except BaseExceptionGroup as group:
        error = _single(group)
        if not isinstance(error, KeyboardInterrupt):
            raise error from None


async def _serve_until_signal(
    transport: WebSocketTransport,
    host: str,
    port: int,
    sockets: Sequence[socket.socket] = (),
    *,
    worker: bool = False,
    signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
) -> None:
    with anyio.open_signal_receiver(*signals) as received:
        async with anyio.create_task_group() as tg:
            serve = partial(
                _serve_then_stop, transport, host, port, sockets, worker, tg.cancel_scope
            )
            await tg.start(serve)
            async for _ in received:
                # First signal: graceful stop; second: stop waiting for calls.
                transport.shutdown()


async def _serve_then_stop(
    transport: WebSocketTransport,
    host: str,
    port: int,
    sockets: Sequence[socket.socket],
    worker: bool,
    scope: anyio.CancelScope,
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    await transport._serve_with_resources(host, port, task_status, sockets, worker)
    scope.cancel()


async def hold_open(
    resources: list[AbstractAsyncContextManager[Any]],
    closing: anyio.Event,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Open ``resources`` in order, and close them in reverse once ``closing`` is set.

    A task of their own, which no cancellation reaches: a server cancelled
    still closes them completely (a store flushes, a Redis pool ends its
    tasks), and task groups they hold nest as they were entered.
    """
    with anyio.CancelScope(shield=True):
        async with AsyncExitStack() as stack:
            for resource in resources:
                await stack.enter_async_context(resource)
            task_status.started()
            await closing.wait()


def _configure_logging(level: int) -> None:
    package = logging.getLogger("securemcp")
    package.setLevel(level)
    if not package.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        package.addHandler(handler)


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf exception of ``group``: what a caller of ``run`` expects to see."""
    first = group.exceptions[0]
    return _single(first) if isinstance(first, BaseExceptionGroup) else first
