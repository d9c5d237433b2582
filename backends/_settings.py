"""What a connection driver is given: its server's settings and state, and its adapter.

The driver (``_driver.py``) decides; these describe what it decides with. Two
of the settings are functions of a request, applied here: the page handler's
answer to a plain HTTP request and the subprotocol chosen for an upgrade.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from securemcp.app import SecureMCP
from securemcp.protocol import HTTPRequest, Limits, ToolCall
from securemcp.protocol.mcp import SUBPROTOCOL as MCP_SUBPROTOCOL
from securemcp.protocol.seed import SUBPROTOCOL as SEED_SUBPROTOCOL
from securemcp.pubsub import Broker
from securemcp.security import SecurityPolicy

from ._calls import Gate
from ._pubsub import LoopThread
from ._security import ConnectionGuard

__all__ = [
    "Adapter",
    "HTTPHandler",
    "ServerSettings",
    "ServerState",
    "answer_http",
    "choose_subprotocol",
]

logger = logging.getLogger("securemcp")

HTTPHandler = Callable[[HTTPRequest], "tuple[int, list[tuple[str, str]], bytes] | None"]
"""``handler(request) -> (status, headers, body)``, or ``None`` for 404 Not Found."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Everything a connection needs to know about the server it belongs to."""

    app: SecureMCP
    limits: Limits | None
    handshake_timeout: float | None
    ping_interval: float | None
    ping_timeout: float | None
    close_timeout: float | None
    ssl: ssl.SSLContext | None
    guard: ConnectionGuard = field(default_factory=lambda: ConnectionGuard(SecurityPolicy()))
    """The security policy, with the connection caps it keeps for this server."""
    subprotocols: tuple[str, ...] = ()
    """The subprotocols this server speaks, in order of preference."""
    broker: Broker | None = None
    """Where tools publish and connections subscribe (``None``: no broadcast)."""
    http_handler: HTTPHandler | None = None
    """Answers plain HTTP GETs (see ``WebSocketTransport``); ``None``: HTTP 400."""
    mcp_path: str | None = None
    """Where MCP Streamable HTTP is served on the same port (``None``: not served)."""

    def __post_init__(self) -> None:
        # One Limits for every connection: each would otherwise build (and
        # validate) its own default, once per connection.
        if self.limits is None:
            object.__setattr__(self, "limits", Limits())


class ServerState(Protocol):
    """What the connections of one running server share."""

    settings: ServerSettings
    draining: bool
    """Stopping: new handshakes get 503, new calls -32800."""
    loop: LoopThread
    """The event loop's thread, for tools that report from worker threads."""

    def call_finished(self) -> None:
        """A call ended (the draining server waits for the last one)."""


class Adapter(Protocol):
    """What the I/O around a driver does for it."""

    def now(self) -> float:
        """The event loop's clock, in seconds."""

    def wake(self) -> None:
        """Output is waiting that no adapter call produced (timer, broadcast): write it soon."""

    def spawn(self, call: ToolCall, gate: Gate | None = None) -> Callable[[], object]:
        """Run ``call`` (which may suspend) and report to :meth:`ConnectionDriver.call_done`.

        With ``gate``, the task awaits it first (see ``run_call``). Returns the
        function that cancels it.
        """

    def start(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work()`` in a task of the server's that its shutdown does not cancel.

        The driver's own work (a handshake awaiting a shared connection cap,
        giving slots back): the draining server waits for it to end, so it
        must end in a bounded time by itself.
        """

    def set_deadline(self, when: float) -> None:
        """Call :meth:`ConnectionDriver.on_deadline` at ``when`` (loop clock; ``inf``: never)."""

    def abort(self) -> None:
        """Drop the connection now, without a closing handshake."""

    def buffered(self) -> int:
        """Bytes handed to the socket layer and not yet sent."""

    def reading(self) -> bool:
        """Whether bytes the peer sends are being read (not paused by backpressure)."""


def answer_http(
    settings: ServerSettings, request: HTTPRequest
) -> tuple[int, list[tuple[str, str]], bytes]:
    """The page handler's ``(status, headers, body)`` for ``request``: 404 without an
    answer, 500 if the handler raised (logged with its traceback)."""
    handler = settings.http_handler
    answer: tuple[int, list[tuple[str, str]], bytes] | None = None
    if handler is not None:  # pragma: no branch - the core emits these only with one
        try:
            answer = handler(request)
        except Exception:
            logger.exception("http_handler failed for %s %s", request.method, request.path)
            answer = (500, [], b"Internal Server Error\n")
    return (404, [], b"Not Found\n") if answer is None else answer


def choose_subprotocol(settings: ServerSettings, offered: tuple[str, ...]) -> str | None:
    """The subprotocol to answer with: ours, in our order of preference, if offered.

    ``offered`` comes without token entries (``bearer.<token>``), so a token is
    never echoed back. Failing those, the first offered of the dialects every
    server speaks: ``mcp`` (the MCP dialect) or ``securemcp.seed`` (the seed
    dialect, for a browser that must name one beside its token).
    """
    chosen = next((name for name in settings.subprotocols if name in offered), None)
    if chosen is None:
        builtin = (MCP_SUBPROTOCOL, SEED_SUBPROTOCOL)
        chosen = next((name for name in offered if name in builtin), None)
    return chosen
