"""The test kit: ``from securemcp.testing import TestClient``.

:class:`TestClient` is a :class:`~securemcp.transport.WebSocketClient` whose
server is your app, joined to it in memory: no socket, no thread, the real
handshake, frames, limits and security checks, on asyncio and trio::

    async with TestClient(app) as client:
        assert await client.invoke_tool("add", {"a": 1, "b": 2}) == 3

The pytest plugin that comes with SecureMCP offers the same as the
``securemcp_client`` fixture (see ``securemcp/pytest_plugin.py``). Importing
this module loads the anyio backends, like ``securemcp.transport``.
"""

from __future__ import annotations

from .backends.testing import TEST_URL, TestClient

__all__ = ["TEST_URL", "TestClient"]
