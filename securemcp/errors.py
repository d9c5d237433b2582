"""SecureMCP's exceptions and the JSON-RPC error codes they carry.

One tree for server and client: a tool raises :class:`ToolError` (or any
:class:`RPCError`) to choose the answer its caller sees, and the client raises
the same classes when an answer is an error, so ``except ToolNotFound`` reads
the same on both sides of the wire.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, ClassVar

__all__ = [
    "Cancelled",
    "ConnectionClosed",
    "ErrorCode",
    "Forbidden",
    "HandshakeRejected",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "LocalProtocolError",
    "MethodNotFound",
    "Overloaded",
    "ParseError",
    "RPCError",
    "RateLimited",
    "RequestTimeout",
    "SecureMCPError",
    "ToolError",
    "ToolNotFound",
    "Unauthenticated",
    "Unavailable",
    "error_for_code",
]


class ErrorCode(IntEnum):
    """The JSON-RPC error codes SecureMCP sends (DESIGN.md §3)."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    TOOL_ERROR = -32000
    UNAUTHENTICATED = -31001
    FORBIDDEN = -31003
    OVERLOADED = -31013
    RATE_LIMITED = -31029
    UNAVAILABLE = -31503
    CANCELLED = -32800


class SecureMCPError(Exception):
    """Base of every exception SecureMCP raises on purpose.

    ``code`` is the JSON-RPC error code for errors that travel as JSON-RPC
    answers, and ``None`` for transport-level failures.
    """

    code: int | None = None


class RPCError(SecureMCPError):
    """An error that is, or came from, a JSON-RPC error answer.

    Raise one from a tool to send exactly this ``code``, ``message`` and
    ``data`` to the caller.
    """

    default_code: ClassVar[int] = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, *, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code: int = self.default_code if code is None else code
        self.data = data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, message={self.message!r})"


class ParseError(RPCError):
    """The message was not valid JSON, or nested too deeply."""

    default_code = ErrorCode.PARSE_ERROR


class InvalidRequest(RPCError):
    """The message was JSON but not a valid request envelope."""

    default_code = ErrorCode.INVALID_REQUEST


class MethodNotFound(RPCError):
    """The method does not exist."""

    default_code = ErrorCode.METHOD_NOT_FOUND


class ToolNotFound(MethodNotFound):
    """No tool of that name is registered."""


class InvalidParams(RPCError):
    """The parameters failed validation; ``data`` lists pydantic's errors."""

    default_code = ErrorCode.INVALID_PARAMS


class InternalError(RPCError):
    """Something failed on the answering side that is not the caller's fault."""

    default_code = ErrorCode.INTERNAL_ERROR


class ToolError(RPCError):
    """The tool ran and failed. Raise it from a tool to choose the message."""

    default_code = ErrorCode.TOOL_ERROR


class Unauthenticated(RPCError):
    """The call needs credentials the connection does not carry."""

    default_code = ErrorCode.UNAUTHENTICATED


class Forbidden(RPCError):
    """The principal lacks a scope the tool requires."""

    default_code = ErrorCode.FORBIDDEN


class Overloaded(RPCError):
    """Too many calls are in flight."""

    default_code = ErrorCode.OVERLOADED


class RateLimited(RPCError):
    """Too many calls in too short a time; ``data["retry_after"]`` says when to retry."""

    default_code = ErrorCode.RATE_LIMITED


class Unavailable(RPCError):
    """A service the call needs (a shared store, Redis) cannot be reached now; retry later.

    Sent within a bounded time instead of letting the call hang; ``data`` may
    carry ``retry_after`` (seconds). Nothing the call was to write was acknowledged.
    """

    default_code = ErrorCode.UNAVAILABLE


class Cancelled(RPCError):
    """The call was cancelled before it finished."""

    default_code = ErrorCode.CANCELLED


class ConnectionClosed(SecureMCPError):
    """The WebSocket connection is closed; ``close_code`` and ``reason`` say how."""

    def __init__(self, close_code: int | None = None, reason: str = "") -> None:
        detail = f" ({reason})" if reason else ""
        super().__init__(f"connection closed with code {close_code}{detail}")
        self.close_code = close_code
        self.reason = reason


class HandshakeRejected(SecureMCPError):
    """The server refused the WebSocket upgrade with an HTTP status.

    ``headers`` are the answer's (lower-case name, value) pairs, e.g. the
    ``www-authenticate`` challenge of a 401.
    """

    def __init__(
        self, status_code: int, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(f"WebSocket handshake rejected with HTTP {status_code}")
        self.status_code = status_code
        self.body = body
        self.headers = headers

    def header(self, name: str) -> str | None:
        """The value of the first header called ``name`` (any case), or ``None``."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)


class RequestTimeout(SecureMCPError, TimeoutError):
    """No answer arrived within the caller's timeout."""


class LocalProtocolError(SecureMCPError):
    """The local program misused a connection (a bug in the caller, never the peer's fault)."""


_BY_CODE: dict[int, type[RPCError]] = {
    cls.default_code: cls
    for cls in (
        ParseError,
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        InternalError,
        ToolError,
        Unauthenticated,
        Forbidden,
        Overloaded,
        RateLimited,
        Unavailable,
        Cancelled,
    )
}


def error_for_code(
    code: int, message: str, data: Any = None, *, tool_call: bool = False
) -> RPCError:
    """Build the exception a client raises for an error answer.

    ``tool_call`` marks an answer to a tool invocation, where "method not
    found" means the tool is unknown.
    """
    cls = _BY_CODE.get(code, RPCError)
    if tool_call and cls is MethodNotFound:
        cls = ToolNotFound
    return cls(message, code=code, data=data)
