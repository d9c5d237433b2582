"""The test kit: :class:`TestClient`, a :class:`WebSocketClient` joined to its server in memory.

No socket and no thread of its own: the client's adapter and the server's
connection adapter (the ones that serve real sockets on this event loop) are
joined by in-memory pipes (``_memory.py``), in the test's own event loop, on
asyncio and trio. Every byte still goes through both sans-I/O cores: the
upgrade handshake, the frames, the limits, the security policy, the
connection driver. The server side lives as long as the client is connected;
what the clients of one app share is in ``_test_site.py``.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Iterable, Mapping, Sequence

import anyio
import anyio.abc
import sniffio

from securemcp.app import SecureMCP
from securemcp.auth import Principal
from securemcp.errors import LocalProtocolError
from securemcp.protocol import CloseCode, Limits

from ._anyio_server import StreamConnection, _serve_connection
from ._asyncio_server import ServerProtocol
from ._client_asyncio import AsyncioIO
from ._client_io import ClientIO
from ._client_notes import NotificationHandler
from ._client_session import ClientSession
from ._memory import memory_stream_pair, memory_transport_pair
from ._pubsub import LoopThread
from ._serving import _Server
from ._settings import ServerSettings
from ._test_site import Site, issue_token, join
from .client import WebSocketClient
from .server import WebSocketTransport

__all__ = ["TEST_URL", "TestClient"]

TEST_URL = "ws://testserver/"
"""The URL a :class:`TestClient` reports (no name is looked up, nothing listens there)."""
_CLIENT_ADDRESS = ("testclient", 50000)
"""The peer address the server sees (its per-address connection caps count it)."""
_SERVER_ADDRESS = ("testserver", 80)


class TestClient(WebSocketClient):
    """A :class:`~securemcp.transport.WebSocketClient` connected to ``app`` in memory.

    Test your tools as a remote client calls them, without a socket or a
    thread, on asyncio and trio::

        async with TestClient(app, principal=Principal("ann", {"admin"})) as client:
            assert await client.invoke_tool("add", {"a": 1, "b": 2}) == 3

    Everything :class:`WebSocketClient` offers works the same (``invoke_tool``,
    ``call_tool``, ``list_tools``, notifications, progress, cancellation,
    timeouts), and every answer is the one a socket would carry: tool
    exceptions, validation errors, scope refusals, rate limits, limits and
    close codes.

    :param app: a :class:`~securemcp.SecureMCP` app, served as
        ``WebSocketTransport(app)`` would serve it, or a
        :class:`~securemcp.transport.WebSocketTransport`, to test its security
        policy, limits, timeouts and broker. The clients of one app (or one
        transport) connected at the same time share one server: broadcasts reach
        each other, connection caps and rate limits count them together.
    :param principal: connect as this :class:`~securemcp.Principal`, without a
        token: the handshake skips authentication only; scopes, rate limits and
        credential expiry apply to it as to an authenticated one.
    :param token: connect with this bearer token instead, checked by the
        transport's :class:`~securemcp.SecurityPolicy` as on the wire (a bad
        one raises :class:`~securemcp.HandshakeRejected` with status 401).

    Without either the connection is anonymous, which a policy with an
    authenticator refuses unless it allows anonymous connections. The other
    parameters are :class:`WebSocketClient`'s (``limits`` are the client's;
    the server's are the transport's). The server side has no TLS, no
    keepalive pings and no ``max_connections``; on asyncio it is the
    ``asyncio.Protocol`` path even for a transport made with
    ``native_asyncio=False``.

    The first client of an app opens the app's resources (``app.uses``) and
    closes them when it ends: open the others inside it.
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(
        self,
        app: SecureMCP | WebSocketTransport,
        *,
        principal: Principal | None = None,
        token: str | None = None,
        mcp: bool = False,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        subprotocols: Sequence[str] = (),
        timeout: float | None = 30.0,
        connect_timeout: float = 10.0,
        close_timeout: float = 5.0,
        on_notification: NotificationHandler | None = None,
        max_queued_notifications: int = 256,
        limits: Limits | None = None,
        token_in_subprotocol: bool = False,
    ) -> None:
        if not isinstance(app, (SecureMCP, WebSocketTransport)):
            raise TypeError("TestClient needs a SecureMCP app or a WebSocketTransport")
        self._issued: str | None = None
        if principal is not None:
            if not isinstance(principal, Principal):
                raise TypeError("principal must be a securemcp.Principal")
            if token is not None:
                raise ValueError("give principal= or token=, not both")
            token = self._issued = issue_token()
        super().__init__(
            TEST_URL,
            headers=headers,
            subprotocols=subprotocols,
            timeout=timeout,
            connect_timeout=connect_timeout,
            close_timeout=close_timeout,
            on_notification=on_notification,
            max_queued_notifications=max_queued_notifications,
            limits=limits,
            token=token,
            token_in_subprotocol=token_in_subprotocol,
            mcp=mcp,
        )
        self.app = app
        """What this client is connected to."""
        self.principal = principal
        """The principal given, if any."""
        self._used = False
        self._tasks: anyio.abc.TaskGroup | None = None
        self._site: Site | None = None
        self._owner = False
        self._server: _Server | None = None

    @property
    def serving(self) -> bool:
        """Whether the client's server side is up: from :meth:`connect` until :meth:`aclose`."""
        return self._tasks is not None

    async def connect(self) -> None:
        """Start the app's server side in memory, then connect to it as a client over a socket.

        Prefer ``async with``; if you call this, call :meth:`aclose` from the
        same task: the server side's task group spans the time in between.
        """
        if self._used:
            raise LocalProtocolError("connect() was already called on this client")
        self._used = True
        # Entered here, left in aclose(): the server side's tasks (trio) and the
        # app's resources live in it.
        tasks = anyio.create_task_group()
        await tasks.__aenter__()
        self._tasks = tasks
        try:
            self._site, self._owner = await join(self.app, tasks)
            if self._issued is not None:
                assert self.principal is not None
                self._site.principals[self._issued] = self.principal
            await super().connect()
        except BaseException:
            await self._leave()
            raise

    async def _open_io(self, session: ClientSession, deadline: float) -> ClientIO | None:
        assert self._site is not None
        assert self._tasks is not None
        self._server, io = await _connect_in_memory(session, self._site.settings, self._tasks)
        return io

    async def aclose(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close the connection as :meth:`WebSocketClient.aclose` does, then stop the server side.

        Calls the server still runs for this client are cancelled, as when a
        client disconnects.
        """
        await super().aclose(code, reason)
        await self._leave()

    async def _leave(self) -> None:
        tasks, self._tasks = self._tasks, None
        if tasks is None:
            return
        server, self._server = self._server, None
        site, self._site = self._site, None
        # Shielded: the server side must end even when the caller is being cancelled.
        with anyio.CancelScope(shield=True):
            if server is not None:
                await server.drain(0)
            if site is not None:
                site.leave(self.app, self._issued, self._owner)
        # Left in the caller's own scope, as it was entered (no shield).
        try:
            await tasks.__aexit__(None, None, None)
        except BaseExceptionGroup as group:  # pragma: no cover - the tasks catch all
            raise group.exceptions[0] if len(group.exceptions) == 1 else group from None


async def _connect_in_memory(
    session: ClientSession, settings: ServerSettings, tasks: anyio.abc.TaskGroup
) -> tuple[_Server, ClientIO]:
    """A server for one connection, serving it on this event loop's server path, and
    the client's end of that connection."""
    server = _Server(settings, sys.maxsize, LoopThread.current())
    if sniffio.current_async_library() == "trio":
        # Imported here: trio is an extra, and a program running on trio has it.
        from ._client_trio import TrioIO

        client_end, server_end = memory_stream_pair(_CLIENT_ADDRESS, _SERVER_ADDRESS)
        server._task_group = tasks
        connection = StreamConnection(server_end, server, refuse=False)
        server.add(connection, admitted=True)
        tasks.start_soon(_serve_connection, server, connection)
        return server, await TrioIO.start(session, client_end)
    server.use_asyncio()
    io = AsyncioIO(session, asyncio.get_running_loop())
    # A server's protocol callbacks run where anyio (tools run inline) finds asyncio.
    server_context = contextvars.copy_context()
    server_context.run(sniffio.current_async_library_cvar.set, "asyncio")
    memory_transport_pair(
        io,
        ServerProtocol(server),
        client_context=contextvars.copy_context(),
        server_context=server_context,
        client_address=_CLIENT_ADDRESS,
        server_address=_SERVER_ADDRESS,
    )
    return server, io
