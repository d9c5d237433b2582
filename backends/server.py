"""The WebSocket server: a TCP listener serving a :class:`~securemcp.SecureMCP` app with anyio.

One implementation for asyncio and trio. :meth:`WebSocketTransport.serve`
embeds the server in a running program; :meth:`WebSocketTransport.run` is the
blocking entry point that owns the event loop and stops cleanly on Ctrl+C;
``run(workers=N)`` serves from N processes sharing one listening socket
(``backends/_workers.py``, Linux only).

Graceful shutdown (``serve`` cancelled, :meth:`~WebSocketTransport.shutdown`
called, or SIGINT/SIGTERM under ``run``): stop accepting, let the calls in
flight finish within ``shutdown_grace`` seconds (calls arriving meanwhile are
answered -32800 at once), answer the ones still running with -32800, close
every connection with 1001 and wait up to ``close_timeout`` for the peers'
close frames.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl as ssl_module
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import anyio.abc
import sniffio
from anyio.abc import SocketAttribute

from securemcp.app import SecureMCP
from securemcp.protocol import Limits
from securemcp.pubsub import Broker, LocalBroker
from securemcp.security import SecurityPolicy

from ._anyio_server import serve_listener
from ._asyncio_server import open_asyncio_server
from ._keepalive import check_seconds
from ._pubsub import LoopThread
from ._running import hold_open, run_transport
from ._security import ConnectionGuard
from ._serving import BACKLOG, Connection, _Server, default_max_connections
from ._settings import HTTPHandler, ServerSettings
from ._workers import duplicate_listening

__all__ = ["Connection", "WebSocketTransport"]

logger = logging.getLogger("securemcp")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class WebSocketTransport:
    """Serve ``app`` over WebSocket (``ws://``, or ``wss://`` with ``ssl``).

    Every timeout is in seconds; ``None`` disables it. ``handshake_timeout``
    bounds the TLS and HTTP upgrade handshakes (on asyncio, whose SSL transport
    finishes TLS before handing over the connection, each of them); every ``ping_interval`` seconds
    a WebSocket ping goes out and a peer that does not answer within
    ``ping_timeout`` is closed with 1011; ``close_timeout`` bounds the closing
    handshake; ``shutdown_grace`` is how long a stopping server waits for calls
    in flight. Past ``max_connections`` open connections (default: as many as
    the file-descriptor limit allows, see :attr:`max_connections`), new ones
    are refused with HTTP 503. ``limits`` are the per-connection limits of the
    core.

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

    ``mcp_path`` (default ``"/mcp"``; ``None``: off) serves MCP Streamable
    HTTP on the same port: ``POST`` there carries one JSON-RPC request,
    answered without sessions (2026-07-28, and legacy ``initialize`` then
    requests under ``MCP-Protocol-Version``), as JSON or, for a tool call
    reporting progress, as an SSE stream. The security policy applies to every
    request (Origin, bearer token in ``Authorization``, scopes, rate limits);
    ``handshake_timeout`` bounds the wait for each whole request, so slow and
    idle keep-alive connections are closed. See ``backends/_http_serve.py``.

    On asyncio each connection is an ``asyncio.Protocol`` driven straight from
    the transport's callbacks (``backends/_asyncio_server.py``): no task per
    connection or per message, answers written once per loop pass; uvloop gets
    the same path. ``native_asyncio=False`` serves asyncio with the anyio path
    instead, a task per connection, which is what trio always uses
    (``backends/_anyio_server.py``). Both are thin adapters over one
    connection driver (``backends/_driver.py``).
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
        max_connections: int | None = None,
        ssl: ssl_module.SSLContext | None = None,
        security: SecurityPolicy | None = None,
        broker: Broker | None = None,
        http_handler: HTTPHandler | None = None,
        native_asyncio: bool = True,
        mcp_path: str | None = "/mcp",
    ) -> None:
        for name, value in (
            ("handshake_timeout", handshake_timeout),
            ("ping_interval", ping_interval),
            ("ping_timeout", ping_timeout),
            ("close_timeout", close_timeout),
        ):
            check_seconds(name, value)
        if mcp_path is not None and (not isinstance(mcp_path, str) or not mcp_path.startswith("/")):
            raise ValueError(f"mcp_path must be a path starting with '/' or None, not {mcp_path!r}")
        if shutdown_grace is not None and shutdown_grace < 0:
            raise ValueError(f"shutdown_grace must be >= 0 or None, not {shutdown_grace!r}")
        if max_connections is not None:
            if isinstance(max_connections, bool) or not isinstance(max_connections, int):
                raise TypeError("max_connections must be an integer or None")
            if max_connections < 1:
                raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        self.app = app
        self.native_asyncio = native_asyncio
        self._max_connections = max_connections
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
            mcp_path=mcp_path,
        )
        self._servers: set[_Server] = set()

    @property
    def max_connections(self) -> int:
        """Open connections past which new ones get HTTP 503.

        Unless given, what the process's file-descriptor limit allows (less
        :data:`FD_RESERVE`), once that limit is raised to its hard limit where
        the system allows it: done when this is first read (at the latest
        when serving starts).
        """
        if self._max_connections is None:
            self._max_connections = default_max_connections()
        return self._max_connections

    @property
    def open_connections(self) -> int:
        """Connections currently open (handshakes in progress included)."""
        return sum(len(server.connections) for server in self._servers)

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        sock: socket.socket | None = None,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host``:``port`` and serve until cancelled or :meth:`shutdown`.

        Reports the bound port through ``task_status`` (useful with port 0:
        ``port = await tg.start(transport.serve, "127.0.0.1", 0)``). Returns
        after :meth:`shutdown`; when cancelled, shuts down gracefully first,
        then lets the cancellation through. Binding errors raise ``OSError``.

        ``sock``, a bound and listening TCP socket, is served instead of
        binding ``host``:``port`` (which are then ignored): a socket made by a
        supervisor or a service manager, shared by several processes. The
        caller keeps it: the server accepts on a duplicate and closes only that.
        """
        await self._serve_with_resources(host, port, task_status, () if sock is None else (sock,))

    async def _serve_with_resources(
        self,
        host: str,
        port: int,
        task_status: anyio.abc.TaskStatus[int],
        sockets: Sequence[socket.socket] = (),
        worker: bool = False,
    ) -> None:
        resources = self._resources()
        if not resources:
            await self._serve(host, port, task_status, sockets, worker)
            return
        async with anyio.create_task_group() as holder:
            closing = anyio.Event()
            await holder.start(hold_open, resources, closing)
            try:
                await self._serve(host, port, task_status, sockets, worker)
            finally:
                closing.set()

    def _resources(self) -> list[AbstractAsyncContextManager[Any]]:
        """The app's resources, then the broker, the rate limiter and the connection counters
        when they need opening."""
        security = self.security
        candidates: list[object] = [
            self.broker,
            security.rate_limiter,
            security.max_connections_per_address,
            security.max_connections_per_principal,
        ]
        return [
            *self.app.resources,
            *(
                resource
                for resource in candidates
                if isinstance(resource, AbstractAsyncContextManager)
            ),
        ]

    async def _serve(
        self,
        host: str,
        port: int,
        task_status: anyio.abc.TaskStatus[int],
        sockets: Sequence[socket.socket] = (),
        worker: bool = False,
    ) -> None:
        """Serve; on ``sockets`` (duplicated) when given, as worker process ``worker`` if set."""
        server = _Server(self._settings, self.max_connections, LoopThread.current())
        natives: list[asyncio.Server] = []
        listeners: list[anyio.abc.SocketListener] = []
        # Each server owns (and closes) a duplicate; the caller's sockets stay open.
        owned = [duplicate_listening(sock) for sock in sockets]
        # Protocol callbacks run in a copy of this context: tools run inline
        # there can then use anyio as they could in a task.
        library = sniffio.current_async_library_cvar.set(sniffio.current_async_library())
        try:
            if self.native_asyncio and _running_on_asyncio():
                server.use_asyncio()
                if not owned:
                    natives.append(await open_asyncio_server(server, host, port))
                while owned:
                    natives.append(await open_asyncio_server(server, sock=owned[0]))
                    owned.pop(0)
                bound = natives[0].sockets[0].getsockname()[1]
            else:
                if not owned:
                    listeners = await self._listen(host, port)
                while owned:
                    listeners.append(await anyio.abc.SocketListener.from_socket(owned[0]))
                    owned.pop(0)
                bound = listeners[0].extra(SocketAttribute.local_port)
        except BaseException:
            for native in natives:
                native.close()
            for listener in listeners:
                await listener.aclose()
            raise
        finally:
            sniffio.current_async_library_cvar.reset(library)
            for sock in owned:
                sock.close()
        scheme = "wss" if self.ssl is not None else "ws"
        if worker:
            logger.info("[WS] Worker %d serving", os.getpid())
        else:
            if sockets:
                host = sockets[0].getsockname()[0]
            logger.info(
                "[WS] Starting WebSocket server on %s://%s:%d", scheme, _url_host(host), bound
            )
        self._servers.add(server)
        try:
            async with anyio.create_task_group() as tg:
                server._task_group = tg
                try:
                    with server.accept_scope:
                        async with anyio.create_task_group() as accepting:
                            for listener in listeners:
                                accepting.start_soon(serve_listener, server, listener, tg)
                            accepting.start_soon(server.keepalive_loop)
                            if not worker:
                                logger.info("[WS] Server started successfully")
                            task_status.started(bound)
                            # asyncio accepts by itself: this task only waits to be stopped.
                            await anyio.sleep_forever()
                finally:
                    with anyio.CancelScope(shield=True):
                        for native in natives:
                            native.close()
                        for listener in listeners:
                            await listener.aclose()
                        who = f"Worker {os.getpid()}: " if worker else ""
                        logger.info("[WS] %sShutting down", who)
                        await server.drain(self.shutdown_grace)
                        logger.info("[WS] %sServer stopped", who)
        finally:
            self._servers.discard(server)

    async def _listen(self, host: str, port: int) -> list[anyio.abc.SocketListener]:
        multi = await anyio.create_tcp_listener(local_host=host, local_port=port, backlog=BACKLOG)
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
        workers: int = 1,
    ) -> None:
        """Serve until Ctrl+C (SIGINT) or SIGTERM, then shut down gracefully and return.

        ``backend`` is ``"asyncio"``, ``"trio"`` or ``"asyncio+uvloop"`` (needs
        uvloop installed). Logs go to the ``securemcp`` logger; when nothing
        handles logging, a plain stderr handler shows the ``[WS]`` lines.

        ``workers=N`` (Linux only) serves from N processes: this one binds the
        listening socket, forks N workers that accept on it, restarts a worker
        that dies, and on SIGINT or SIGTERM stops them gracefully (see
        ``backends/_workers.py``). Each process has its own broker, so N > 1
        needs a shared one (a ``RedisBroker``) unless the app is declared
        ``SecureMCP(..., stateless=True)``: otherwise ``ValueError``.
        """
        run_transport(self, host, port, backend=backend, log_level=log_level, workers=workers)


def _running_on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
