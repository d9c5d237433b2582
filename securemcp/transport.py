"""The public transport facade: ``from securemcp.transport import WebSocketTransport``.

Importing this module loads the anyio backends; ``import securemcp`` and
``import securemcp.protocol`` do not import it, so they stay free of I/O.
"""

from __future__ import annotations

from .backends.client import WebSocketClient
from .backends.http_client import HTTPClient, HTTPRejected
from .backends.server import WebSocketTransport

__all__ = ["HTTPClient", "HTTPRejected", "WebSocketClient", "WebSocketTransport"]
