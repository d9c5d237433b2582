"""The public transport facade: ``from securemcp.transport import WebSocketTransport``.

Importing this module loads the anyio backends; ``import securemcp`` and
``import securemcp.protocol`` do not import it, so they stay free of I/O.
"""

from __future__ import annotations

from .backends.client import Backoff, WebSocketClient
from .backends.http_client import HTTPClient, HTTPRejected
from .backends.server import WebSocketTransport

__all__ = ["Backoff", "HTTPClient", "HTTPRejected", "WebSocketClient", "WebSocketTransport"]
