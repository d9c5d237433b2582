"""SecureMCP: expose Python functions as tools that remote clients call over WebSocket.

>>> from securemcp import SecureMCP
>>> app = SecureMCP("demo")
>>> @app.tool()
... async def echo(message: str) -> dict:
...     return {"echoed": message}
"""

from .app import SecureMCP
from .errors import (
    Cancelled,
    ConnectionClosed,
    ErrorCode,
    Forbidden,
    HandshakeRejected,
    InternalError,
    InvalidParams,
    InvalidRequest,
    LocalProtocolError,
    MethodNotFound,
    Overloaded,
    ParseError,
    RateLimited,
    RequestTimeout,
    RPCError,
    SecureMCPError,
    ToolError,
    ToolNotFound,
    Unauthenticated,
)
from .tools import Tool

__version__ = "0.1.0"

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
    "SecureMCP",
    "SecureMCPError",
    "Tool",
    "ToolError",
    "ToolNotFound",
    "Unauthenticated",
    "__version__",
]
