"""The reconnecting client's supervisor: :class:`Reconnector` (``WebSocketClient(reconnect=...)``).

One :class:`~securemcp.backends._client_session.ClientSession` is one
connection; a reconnecting client goes through several, and this class is what
outlives them. When a connection drops for any reason but the client's own
:meth:`~securemcp.transport.WebSocketClient.aclose` (or the server's deliberate
1000 close), its supervisor task waits out a :class:`Backoff` delay (no shorter
than a refused attempt's ``Retry-After``, up to the backoff's maximum), opens a
new session, negotiates MCP again when the client speaks it, runs the
application's ``on_reconnect`` hook (which re-joins rooms, say), and only then
lets the calls that were waiting for a connection go on.

Calls that were in flight at the drop fail with
:class:`~securemcp.errors.ConnectionClosed` as on any client: whether the
server ran them is unknown, so nothing is resent behind the caller's back. The
one exception is opt-in: with ``retry_idempotent`` a tool call whose tool the
server annotated ``idempotentHint: true`` (or ``readOnlyHint: true``, which
leaves nothing to repeat) is sent once more on the next connection.

Structure: the supervisor is a task of the first connection (its
``ClientIO.spawn``), so on trio it lives in that connection's task group, which
spans ``connect()`` to ``aclose()``; every later connection is opened *and*
shut down by the supervisor task itself, as trio's task groups require.
"""

from __future__ import annotations

import datetime
import email.utils
import inspect
import logging
import ssl
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import anyio

from securemcp.errors import ConnectionClosed, HandshakeRejected, RequestTimeout, SecureMCPError
from securemcp.protocol import CloseCode, ConnectionState

from ._backoff import Backoff
from ._client_io import INFINITY
from ._client_session import ClientSession
from .mcp_client import ProgressCallback

if TYPE_CHECKING:
    from .client import WebSocketClient

__all__ = ["ReconnectHook", "Reconnector", "idempotent_tools"]

logger = logging.getLogger("securemcp.client")

ReconnectHook = Callable[["WebSocketClient"], Any]
"""``on_reconnect(client)``; it may return an awaitable, which is awaited."""

_OPEN = ConnectionState.OPEN

_SETTING_UP: ContextVar[Reconnector | None] = ContextVar("securemcp_reconnect_setup", default=None)
"""Set in the supervisor while it prepares a new connection: its calls (the hook's) go through."""


def idempotent_tools(tools: list[dict[str, Any]]) -> frozenset[str]:
    """The names of the tools a list says are safe to run twice.

    MCP's ``idempotentHint`` "is meaningful only when readOnlyHint == false":
    a read-only tool has no effect to repeat, so it counts as well.
    """
    safe: set[str] = set()
    for tool in tools:
        hints = tool.get("annotations")
        if isinstance(hints, dict) and (
            hints.get("idempotentHint") is True or hints.get("readOnlyHint") is True
        ):
            safe.add(str(tool.get("name")))
    return frozenset(safe)


def retry_after(exc: BaseException, now: float) -> float:
    """The seconds a refusal's ``Retry-After`` asks to wait (0: none, or one that makes no sense).

    RFC 9110 10.2.3: a number of seconds, or an HTTP date (``now`` is the POSIX
    time it is measured from).
    """
    value = exc.header("retry-after") if isinstance(exc, HandshakeRejected) else None
    if value is None:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:  # "-0000": a date without a zone, taken as UTC (RFC 5322 3.3)
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


def _healable(exc: BaseException) -> bool:
    """Whether trying again later may succeed where this attempt failed."""
    if isinstance(exc, HandshakeRejected):
        # Overload (429, 503) and a proxy without its backend (502, 504) pass;
        # 401/403/404 and the like stay as they are until someone changes them.
        return exc.status_code in (408, 429) or exc.status_code >= 500
    # A certificate that does not verify will not verify on the next attempt either.
    return not isinstance(exc, ssl.SSLCertVerificationError)


class Reconnector:
    """What a reconnecting client keeps across its connections, and the task that makes them."""

    def __init__(
        self,
        client: WebSocketClient,
        new_session: Callable[[], ClientSession],
        backoff: Backoff,
        on_reconnect: ReconnectHook | None,
        retry_idempotent: bool,
    ) -> None:
        self._client = client
        self._new_session = new_session
        self.backoff = backoff
        self._on_reconnect = on_reconnect
        self.retry_idempotent = retry_idempotent
        self.reconnects = 0
        """Successful reconnections so far."""
        self.error: BaseException | None = None
        """Why the client stopped reconnecting, when it did so on an error."""
        self._idempotent: frozenset[str] = frozenset()
        self._first: ClientSession | None = None
        self._own: ClientSession | None = None
        self._ready = False
        self._closing = False
        self._close_args = (int(CloseCode.NORMAL), "")
        self._finished = False
        self._changed = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._supervised: anyio.Event | None = None

    @property
    def closed(self) -> bool:
        """Whether the client is closed for good: closed, gave up, or never got connected."""
        if self._first is None:
            return self._client._session.closed
        return self._finished

    # The client's life

    async def start(self, session: ClientSession) -> None:
        """The first connection is open (and negotiated): learn its tools, start supervising."""
        assert session.io is not None
        self._first = session
        self._ready = True
        if self.retry_idempotent:
            self._idempotent = idempotent_tools(await self._client.list_tools())
        self._supervised = anyio.Event()
        session.io.spawn(self._supervise)

    async def aclose(self, code: int, reason: str, close_timeout: float) -> None:
        """Stop reconnecting, close the current connection and the first one's resources."""
        if self._first is None:  # never connected, or the first connection failed
            await self._client._session.aclose(code, reason, close_timeout)
            return
        self._closing = True
        self._close_args = (code, reason)
        if self._scope is not None:
            self._scope.cancel()
        supervised = self._supervised
        if supervised is not None:
            # The supervisor closes its own connection (bounded by close_timeout).
            with anyio.move_on_after(2 * close_timeout + 1, shield=True):
                await supervised.wait()
        await self._first.aclose(code, reason, close_timeout)
        self._finish(None)

    async def wait_closed(self) -> None:
        """Return once the client is closed for good (see :attr:`closed`)."""
        if self._first is None:
            await self._client._session.wait_closed()
            return
        while not self._finished:
            await self._changed.wait()

    async def wait_reconnected(self, count: int) -> None:
        """Return once ``count`` reconnections in all are done (hook included)."""
        while not (self.reconnects >= count and self._ready):
            if self._finished:
                raise self._gone()
            await self._changed.wait()

    # Calls

    async def call(
        self,
        method: str,
        params: Any,
        limit: float | None,
        *,
        tool_call: bool,
        on_progress: ProgressCallback | None = None,
        tool: str | None = None,
    ) -> Any:
        """Send a request on the current connection, waiting for one within ``limit`` if
        the client is reconnecting; resend once after a drop only an idempotent ``tool``."""
        deadline = INFINITY if limit is None else anyio.current_time() + limit
        session = await self._connection(deadline, method, limit)
        try:
            return await session.call(
                method, params, self._left(deadline), tool_call=tool_call, on_progress=on_progress
            )
        except ConnectionClosed:
            if not (self.retry_idempotent and tool in self._idempotent and not self._closing):
                raise
            logger.info("connection lost during idempotent tool %r: sending it again", tool)
        session = await self._connection(deadline, method, limit)
        return await session.call(
            method, params, self._left(deadline), tool_call=tool_call, on_progress=on_progress
        )

    async def _connection(self, deadline: float, method: str, limit: float | None) -> ClientSession:
        """The connection to send on: the current one, or the next one within ``deadline``."""
        while True:
            session = self._client._session
            if self._first is None:
                return session  # never connected: its call() says so
            if session.conn.state is _OPEN and (self._ready or _SETTING_UP.get() is self):
                return session
            if self._finished or self._closing:
                raise self._gone()
            changed = self._changed
            with anyio.move_on_at(deadline):
                await changed.wait()
                continue
            raise RequestTimeout(f"no connection to send {method!r} on within {limit} s")

    @staticmethod
    def _left(deadline: float) -> float | None:
        return None if deadline == INFINITY else max(deadline - anyio.current_time(), 0.0)

    def _gone(self) -> ConnectionClosed:
        session = self._client._session
        error = self.error
        if error is not None:
            reason = f"gave up reconnecting: {error}"
        else:
            reason = session.close_reason or "the client is closed"
        closed = ConnectionClosed(session.close_code, reason)
        closed.__cause__ = error
        return closed

    def _fire(self) -> None:
        """Wake every task waiting for the client's state to change."""
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def _finish(self, error: BaseException | None) -> None:
        if self._finished:
            return
        self._finished = True
        self._ready = False
        if error is not None:
            self.error = error
        assert self._first is not None
        self._first.notes.end()
        self._fire()

    # The supervisor

    async def _supervise(self) -> None:
        assert self._supervised is not None
        try:
            with anyio.CancelScope() as self._scope:
                try:
                    if not self._closing:
                        await self._watch()
                finally:
                    # Within the scope: on trio, the connection's task group is inside it.
                    own, self._own = self._own, None
                    if own is not None:
                        code, reason = self._close_args
                        await own.aclose(code, reason, self._client.close_timeout)
        except Exception as exc:  # pragma: no cover - a bug of ours must not leave callers waiting
            logger.exception("the reconnecting client failed")
            self._finish(exc)
        finally:
            self._finish(None)
            self._supervised.set()

    async def _watch(self) -> None:
        """Wait for each drop, then reconnect, until the client closes or gives up."""
        while True:
            session = self._client._session
            await session.wait_closed()
            self._ready = False
            self._fire()
            if session.close_code == CloseCode.NORMAL:
                logger.info("the server closed the connection to %s normally", self._client.url)
                self._finish(None)
                return
            logger.warning(
                "connection to %s lost (code %s%s): reconnecting",
                self._client.url,
                session.close_code,
                f", {session.close_reason}" if session.close_reason else "",
            )
            await self._shut_own()
            if not await self._reconnect():
                return

    async def _shut_own(self) -> None:
        """End the supervisor's last connection before the next one opens (task groups nest)."""
        own, self._own = self._own, None
        if own is not None:
            await own.aclose(CloseCode.NORMAL, "", self._client.close_timeout)

    async def _reconnect(self) -> bool:
        """Open, negotiate and set up a new connection; ``False`` once given up."""
        client, backoff = self._client, self.backoff
        dropped_at = anyio.current_time()
        failures = 0
        last: BaseException | None = None
        while True:
            # A refusal's Retry-After (429 over a cap, 503) stretches the wait it asks for.
            asked = 0.0 if last is None else retry_after(last, time.time())
            delay = backoff.delay(failures, at_least=asked)
            if backoff.gives_up(failures, anyio.current_time() - dropped_at + delay):
                logger.error("gave up reconnecting to %s after %d attempts", client.url, failures)
                self._finish(last)
                return False
            await anyio.sleep(delay)
            session = self._new_session()
            try:
                # The client's own opener: a socket, or what a subclass (TestClient) joins.
                await session.open(client._open_io, client.connect_timeout)
                self._own = session
                if session.speaks_mcp:
                    await session.negotiate(client.connect_timeout)
            except (OSError, SecureMCPError) as exc:
                await self._shut_own()
                if not _healable(exc):
                    logger.error("cannot reconnect to %s: %s", client.url, exc)
                    self._finish(exc)
                    return False
                logger.info("reconnecting to %s failed: %s", client.url, exc)
                last = exc
                failures += 1
                continue
            await self._set_up(session)
            return True

    async def _set_up(self, session: ClientSession) -> None:
        """Make ``session`` the client's, refresh what the client knows, run the hook."""
        client = self._client
        client._session = session
        self.reconnects += 1
        logger.info("reconnected to %s (reconnection %d)", client.url, self.reconnects)
        setting_up = _SETTING_UP.set(self)
        try:
            if self.retry_idempotent:
                self._idempotent = idempotent_tools(await client.list_tools())
            hook = self._on_reconnect
            if hook is not None:
                outcome = hook(client)
                if inspect.isawaitable(outcome):
                    await outcome
        except Exception:
            # The connection is fine; the application's own step failed. Dropping
            # the connection would only run the same hook into the same failure.
            logger.exception("on_reconnect hook failed after reconnecting to %s", client.url)
        finally:
            _SETTING_UP.reset(setting_up)
        self._ready = True
        self._fire()
