"""SecureMCP: expose Python functions as tools that remote clients call over WebSocket.

>>> from securemcp import SecureMCP
>>> app = SecureMCP("demo")
>>> @app.tool()
... async def echo(message: str) -> dict:
...     return {"echoed": message}
"""

from .app import SecureMCP
from .auth import (
    AuthenticationError,
    Authenticator,
    JWTAuthenticator,
    Principal,
    StaticTokenAuthenticator,
)
from .context import Context
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
    Unavailable,
)
from .origin import OriginPolicy
from .progress import Progress
from .ratelimit import ConnectionCounter, RateLimiter
from .security import SecurityPolicy
from .tools import Tool

__version__ = "0.1.0"
"""SecureMCP's version: the one place it is written (``pyproject.toml`` reads it here)."""

__all__ = [
    "AuthenticationError",
    "Authenticator",
    "Cancelled",
    "ConnectionClosed",
    "ConnectionCounter",
    "Context",
    "ErrorCode",
    "Forbidden",
    "HandshakeRejected",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "JWTAuthenticator",
    "LocalProtocolError",
    "MethodNotFound",
    "OriginPolicy",
    "Overloaded",
    "ParseError",
    "Principal",
    "Progress",
    "RPCError",
    "RateLimited",
    "Unavailable",
    "RateLimiter",
    "RequestTimeout",
    "SecureMCP",
    "SecureMCPError",
    "SecurityPolicy",
    "StaticTokenAuthenticator",
    "Tool",
    "ToolError",
    "ToolNotFound",
    "Unauthenticated",
    "__version__",
]
