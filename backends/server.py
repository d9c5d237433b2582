"""The WebSocket server: a TCP listener serving a :class:`~securemcp.SecureMCP` app with anyio.

One implementation for asyncio and trio. :meth:`WebSocketTransport.serve`
embeds the server in a running program; :meth:`WebSocketTransport.run` is the
blocking entry point that owns the event loop and stops cleanly on Ctrl+C.

Graceful shutdown (``serve`` cancelled, :meth:`~WebSocketTransport.shutdown`
called, or SIGINT/SIGTERM under ``run``): stop accepting, let the calls in
flight finish within ``shutdown_grace`` seconds (calls arriving meanwhile are
answered -32800 at once), answer the ones still running with -32800, close
every connection with 1001 and wait up to ``close_timeout`` for the peers'
close frames.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import signal
import ssl as ssl_module
import sys
from typing import Any

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from securemcp.app import SecureMCP
from securemcp.protocol import Limits
from securemcp.pubsub import Broker, LocalBroker
from securemcp.security import SecurityPolicy

from ._asyncio_native import open_native_listener
from ._connection import HTTPHandler, ServerSettings, ServerSideConnection
from ._security import ConnectionGuard

__all__ = ["WebSocketTransport"]

logger = logging.getLogger("securemcp")

WORKER_THREADS = 40
"""Worker threads one server lends to sync tools at most (anyio's own default)."""

_BACKENDS = {"asyncio", "asyncio+uvloop", "trio"}


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _check_timeout(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, not {value!r}")


class _Server:
    """The state of one running :meth:`WebSocketTransport.serve`."""

    def __init__(self, settings: ServerSettings, max_connections: int) -> None:
        self.settings = settings
        self.max_connections = max_connections
        self.limiter = anyio.CapacityLimiter(WORKER_THREADS)
        self.connections: set[ServerSideConnection] = set()
        self.admitted = 0
        self.draining = False
        self.accept_scope = anyio.CancelScope()
        self.grace_scope = anyio.CancelScope()
        self._changed = anyio.Event()

    def stop(self) -> None:
        """Stop accepting; asked again while draining, stop waiting for calls."""
        if self.accept_scope.cancel_called:
            self.grace_scope.cancel()
        self.accept_scope.cancel()

    def _notify(self) -> None:
        self._changed.set()

    async def _wait_until(self, done: Any) -> None:
        while not done():
            self._changed = anyio.Event()
            await self._changed.wait()

    async def accept_loop(
        self, listener: anyio.abc.SocketListener, tg: anyio.abc.TaskGroup
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                # Out of file descriptors, most likely: back off instead of spinning.
                logger.error("[WS] accept() failed: %s", exc)
                await anyio.sleep(0.1)
                continue
            refuse = self.admitted >= self.max_connections
            connection = ServerSideConnection(
                stream,
                self.settings,
                limiter=self.limiter,
                refuse=refuse,
                draining=lambda: self.draining,
                on_call_done=self._notify,
            )
            # Registered before its task starts, so that a shutdown beginning now sees it.
            self.connections.add(connection)
            self.admitted += not refuse
            tg.start_soon(self._serve_connection, connection, not refuse)

    async def _serve_connection(self, connection: ServerSideConnection, admitted: bool) -> None:
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)
            self.admitted -= admitted
            self._notify()

    async def keepalive_loop(self) -> None:
        """Tick every connection's keepalive a few times per interval (one task per server)."""
        interval = self.settings.ping_interval
        if interval is None:
            return
        timeout = self.settings.ping_timeout
        # Pings go out, and overdue pongs are noticed, within a quarter of the shorter period.
        tick = min(interval, interval if timeout is None else timeout) / 4
        while True:
            await anyio.sleep(tick)
            now = anyio.current_time()
            for connection in list(self.connections):
                connection.keepalive_tick(now)

    async def drain(self, shutdown_grace: float | None) -> None:
        """Wait for the calls in flight, then close every connection with 1001."""
        self.draining = True
        self.grace_scope.deadline = (
            math.inf if shutdown_grace is None else anyio.current_time() + shutdown_grace
        )
        with self.grace_scope:
            await self._wait_until(lambda: not any(c.calls_in_flight for c in self.connections))
        for connection in list(self.connections):
            connection.go_away()
        # Every connection ends by itself within close_timeout (its own deadline).
        await self._wait_until(lambda: not self.connections)


class WebSocketTransport:
    """Serve ``app`` over WebSocket (``ws://``, or ``wss://`` with ``ssl``).

    Every timeout is in seconds; ``None`` disables it. ``handshake_timeout``
    bounds the TLS and HTTP upgrade handshakes; every ``ping_interval`` seconds
    a WebSocket ping goes out and a peer that does not answer within
    ``ping_timeout`` is closed with 1011; ``close_timeout`` bounds the closing
    handshake; ``shutdown_grace`` is how long a stopping server waits for calls
    in flight. Past ``max_connections`` open connections, new ones are refused
    with HTTP 503. ``limits`` are the per-connection limits of the core.

    ``security`` (default: :class:`~securemcp.SecurityPolicy`'s defaults, which
    authenticate nobody and allow every Origin) decides each handshake before
    the upgrade (403 for a refused Origin, 401 for missing or bad credentials,
    429 over its per-principal or per-address connection caps), closes a
    connection with 1008 when its credentials expire, rate-limits tool calls
    (-31029) and says whether tool errors are masked. See ``docs/security.md``.

    ``broker`` (default: a new :class:`~securemcp.pubsub.LocalBroker`) carries
    the broadcast: tools subscribe their connection to topics and publish
    notifications through their :class:`~securemcp.Context`. Delivery never
    waits for a slow client: one whose unsent output would pass
    ``Limits.max_pending_output`` is closed with 1013 (Try Again Later).
    Connections leave every topic when they end.

    ``http_handler(request)``, when given, answers plain HTTP ``GET`` requests
    on the same port (a page next to the WebSocket endpoint): it returns
    ``(status, headers, body)``, or ``None`` for 404. Other methods get 405.
    Without it, any request that is not a WebSocket upgrade gets 400.

    On asyncio the sockets are asyncio's own transports behind anyio's stream
    interface (``backends/_asyncio_native.py``), which halves the per-message
    cost of anyio's asyncio streams; ``native_asyncio=False`` uses anyio's.
    On trio, anyio's streams are used either way.
    """

    def __init__(
        self,
        app: SecureMCP,
        *,
        limits: Limits | None = None,
        handshake_timeout: float | None = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float | None = 10.0,
        shutdown_grace: float | None = 10.0,
        max_connections: int = 1000,
        ssl: ssl_module.SSLContext | None = None,
        security: SecurityPolicy | None = None,
        broker: Broker | None = None,
        http_handler: HTTPHandler | None = None,
        native_asyncio: bool = True,
    ) -> None:
        for name, value in (
            ("handshake_timeout", handshake_timeout),
            ("ping_interval", ping_interval),
            ("ping_timeout", ping_timeout),
            ("close_timeout", close_timeout),
        ):
            _check_timeout(name, value)
        if shutdown_grace is not None and shutdown_grace < 0:
            raise ValueError(f"shutdown_grace must be >= 0 or None, not {shutdown_grace!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise TypeError("max_connections must be an integer")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        self.app = app
        self.native_asyncio = native_asyncio
        self.max_connections = max_connections
        self.shutdown_grace = shutdown_grace
        self.ssl = ssl
        if security is not None and not isinstance(security, SecurityPolicy):
            raise TypeError("security must be a SecurityPolicy")
        self.security = SecurityPolicy() if security is None else security
        self.broker: Broker = LocalBroker() if broker is None else broker
        """The broadcast broker every connection of this transport shares."""
        self._settings = ServerSettings(
            app=app,
            limits=limits,
            handshake_timeout=handshake_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            ssl=ssl,
            guard=ConnectionGuard(self.security),
            broker=self.broker,
            http_handler=http_handler,
        )
        self._servers: set[_Server] = set()

    @property
    def open_connections(self) -> int:
        """Connections currently open (handshakes in progress included)."""
        return sum(len(server.connections) for server in self._servers)

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host``:``port`` and serve until cancelled or :meth:`shutdown`.

        Reports the bound port through ``task_status`` (useful with port 0:
        ``port = await tg.start(transport.serve, "127.0.0.1", 0)``). Returns
        after :meth:`shutdown`; when cancelled, shuts down gracefully first,
        then lets the cancellation through. Binding errors raise ``OSError``.
        """
        listeners = await self._listen(host, port)
        bound = listeners[0].extra(SocketAttribute.local_port)
        scheme = "wss" if self.ssl is not None else "ws"
        logger.info("[WS] Starting WebSocket server on %s://%s:%d", scheme, _url_host(host), bound)
        server = _Server(self._settings, self.max_connections)
        self._servers.add(server)
        try:
            async with anyio.create_task_group() as tg:
                try:
                    with server.accept_scope:
                        async with anyio.create_task_group() as accepting:
                            for listener in listeners:
                                accepting.start_soon(server.accept_loop, listener, tg)
                            accepting.start_soon(server.keepalive_loop)
                            logger.info("[WS] Server started successfully")
                            task_status.started(bound)
                finally:
                    with anyio.CancelScope(shield=True):
                        for listener in listeners:
                            await listener.aclose()
                        logger.info("[WS] Shutting down")
                        await server.drain(self.shutdown_grace)
                        logger.info("[WS] Server stopped")
        finally:
            self._servers.discard(server)

    async def _listen(self, host: str, port: int) -> list[anyio.abc.SocketListener]:
        if self.native_asyncio and _running_on_asyncio():
            return [await open_native_listener(host, port)]
        multi = await anyio.create_tcp_listener(local_host=host, local_port=port)
        # One listener per address the host resolves to; every backend's is a SocketListener.
        return [
            listener
            for listener in multi.listeners
            if isinstance(listener, anyio.abc.SocketListener)
        ]

    def shutdown(self) -> None:
        """Stop serving gracefully: :meth:`serve` then returns.

        Call it from the event loop's thread. Called again while the server
        drains, it stops waiting for the calls in flight (they get -32800).
        """
        for server in list(self._servers):
            server.stop()

    def run(
        self,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        backend: str = "asyncio",
        log_level: int = logging.INFO,
    ) -> None:
        """Serve until Ctrl+C (SIGINT) or SIGTERM, then shut down gracefully and return.

        ``backend`` is ``"asyncio"``, ``"trio"`` or ``"asyncio+uvloop"`` (needs
        uvloop installed). Logs go to the ``securemcp`` logger; when nothing
        handles logging, a plain stderr handler shows the ``[WS]`` lines.
        """
        if backend not in _BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: use one of {sorted(_BACKENDS)}")
        options: dict[str, Any] = {}
        if backend == "asyncio+uvloop":
            if importlib.util.find_spec("uvloop") is None:
                raise RuntimeError(
                    "backend 'asyncio+uvloop' needs uvloop, which is not installed "
                    "(pip install uvloop), or use backend='asyncio'"
                )
            backend, options = "asyncio", {"use_uvloop": True}
        _configure_logging(log_level)
        try:
            anyio.run(
                self._serve_until_signal, host, port, backend=backend, backend_options=options
            )
        except KeyboardInterrupt:
            # Ctrl+C before the signal handler was installed or after it was removed.
            pass
        except BaseExceptionGroup as group:
            error = _single(group)
            if not isinstance(error, KeyboardInterrupt):
                raise error from None

    async def _serve_until_signal(self, host: str, port: int) -> None:
        signals = [signal.SIGINT, signal.SIGTERM]
        with anyio.open_signal_receiver(*signals) as received:
            async with anyio.create_task_group() as tg:
                await tg.start(self._serve_then_stop, host, port, tg.cancel_scope)
                async for _ in received:
                    # First signal: graceful stop; second: stop waiting for calls.
                    self.shutdown()

    async def _serve_then_stop(
        self,
        host: str,
        port: int,
        scope: anyio.CancelScope,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        await self.serve(host, port, task_status=task_status)
        scope.cancel()


def _running_on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


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
