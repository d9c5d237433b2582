"""I/O backends for SecureMCP (import name ``securemcp.backends``).

They run the sans-I/O core of :mod:`securemcp.protocol` on real sockets, with
anyio, so one implementation serves asyncio and trio.
"""

from .client import Backoff, Notification, WebSocketClient
from .http_client import HTTPClient, HTTPRejected
from .server import WebSocketTransport

__all__ = [
    "Backoff",
    "HTTPClient",
    "HTTPRejected",
    "Notification",
    "WebSocketClient",
    "WebSocketTransport",
]
