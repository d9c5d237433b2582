"""What the protocol cores report to the code that drives them.

Events are frozen, slotted dataclasses under one :class:`Event` base, returned
in order by ``events_received()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..progress import Progress
from ..tools import Tool
from .jsonrpc import RequestId

__all__ = [
    "CallCancelled",
    "ConnectionClosed",
    "ConnectionRejected",
    "Connected",
    "ErrorReceived",
    "Event",
    "HTTPRequest",
    "HandshakeRequest",
    "NotificationReceived",
    "PongReceived",
    "ResponseReceived",
    "ToolCall",
    "Welcome",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every event."""


# Server side


@dataclass(frozen=True, slots=True)
class HandshakeRequest(Event):
    """A client asks to upgrade to WebSocket; answer with ``accept()`` or ``reject()``."""

    path: str
    """The request target, query string included."""
    host: str
    headers: tuple[tuple[str, str], ...]
    """Every request header as (lower-case name, value), in order."""
    subprotocols: tuple[str, ...]
    extensions: tuple[str, ...]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)


@dataclass(frozen=True, slots=True)
class HTTPRequest(Event):
    """A plain HTTP ``GET`` that is not a WebSocket upgrade (a browser fetching a page).

    Only emitted by a server connection built with ``http=True``; answer it
    with :meth:`~securemcp.protocol.ServerConnection.respond`, after which the
    connection is closed. Without ``http=True`` such a request gets HTTP 400.
    """

    method: str
    path: str
    """The request target, query string included."""
    headers: tuple[tuple[str, str], ...]
    """Every request header as (lower-case name, value), in order."""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)


@dataclass(frozen=True, slots=True, eq=False)
class ToolCall(Event):
    """A validated tool invocation to run; answer with ``complete()`` or ``fail()``.

    Compared by identity: two calls are never the same call.
    """

    id: RequestId
    """The caller's request id."""
    tool: Tool
    arguments: dict[str, Any]
    """Validated keyword arguments for ``tool.fn``."""
    method: str = "invoke_tool"
    """The wire method that asked for the call; it decides the answer's shape."""
    jsonrpc: bool = False
    """Whether the request carried ``"jsonrpc": "2.0"`` (echoed in the answer)."""
    progress: Progress | None = None
    """The call's progress reporter when the tool takes one; the backend binds its
    delivery (see :meth:`ServerConnection.report_progress`)."""
    protocol_version: str | None = None
    """MCP 2026-07-28 and later: the revision the request's ``_meta`` named (the
    answer's shape follows it); ``None`` for every other call."""

    # The Event base compares by (no) fields; a call is only ever equal to itself.
    __eq__ = object.__eq__
    __hash__ = object.__hash__


@dataclass(frozen=True, slots=True, eq=False)
class CallCancelled(Event):
    """The client cancelled ``call`` (MCP ``notifications/cancelled``).

    Stop the call's work, then answer it with ``complete()`` or ``fail()`` as
    usual: the core sends nothing for a cancelled call and frees its slot then.
    """

    call: ToolCall
    reason: str | None = None


# Client side


@dataclass(frozen=True, slots=True)
class Connected(Event):
    """The server accepted the WebSocket upgrade."""

    subprotocol: str | None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ConnectionRejected(Event):
    """The server refused the upgrade with an HTTP answer (body complete)."""

    status_code: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class ResponseReceived(Event):
    """A successful answer to one of our requests."""

    id: RequestId
    result: Any


@dataclass(frozen=True, slots=True)
class ErrorReceived(Event):
    """An error answer to one of our requests."""

    id: RequestId
    code: int
    message: str
    data: Any = None


@dataclass(frozen=True, slots=True)
class Welcome(Event):
    """The seed dialect's greeting, sent by the server when a connection opens."""

    message: str
    tools: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NotificationReceived(Event):
    """A message from the peer that expects no answer (server push, for instance)."""

    method: str
    params: Any = None


# Both sides


@dataclass(frozen=True, slots=True)
class PongReceived(Event):
    """The peer answered a ping (keepalive evidence)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The WebSocket connection is over; no more data will be accepted.

    ``unanswered`` lists the requests left without an answer: on a client the
    requests that will never be answered, on a server the calls still running,
    which the backend should cancel.
    """

    code: int
    reason: str = ""
    unanswered: tuple[RequestId, ...] = field(default=())
