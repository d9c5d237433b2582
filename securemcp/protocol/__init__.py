"""The sans-I/O core: WebSocket and JSON-RPC as pure state machines.

Nothing in this package performs I/O, reads a clock or needs an event loop;
importing it loads no asyncio, trio, anyio or socket module. Drive a
:class:`ServerConnection` or :class:`ClientConnection` from any loop.
"""

from .client import ClientConnection
from .connection import ConnectionState
from .events import (
    CallCancelled,
    Connected,
    ConnectionClosed,
    ConnectionRejected,
    ErrorReceived,
    Event,
    HandshakeRequest,
    HTTPRequest,
    NotificationReceived,
    PongReceived,
    ResponseReceived,
    ToolCall,
    Welcome,
)
from .frames import CloseCode
from .http import HTTPAborted, HTTPRequestReceived, HTTPServerConnection
from .jsonrpc import RequestId
from .limits import Limits
from .push import encode_notification, text_frame
from .server import ServerConnection

__all__ = [
    "CallCancelled",
    "ClientConnection",
    "CloseCode",
    "Connected",
    "ConnectionClosed",
    "ConnectionRejected",
    "ConnectionState",
    "ErrorReceived",
    "Event",
    "HTTPAborted",
    "HTTPRequest",
    "HTTPRequestReceived",
    "HTTPServerConnection",
    "HandshakeRequest",
    "Limits",
    "NotificationReceived",
    "PongReceived",
    "RequestId",
    "ResponseReceived",
    "ServerConnection",
    "ToolCall",
    "Welcome",
    "encode_notification",
    "text_frame",
]
