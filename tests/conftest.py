"""Shared fixtures: every async test runs on asyncio, on trio, and on asyncio's anyio path."""

from __future__ import annotations

import pytest

from securemcp.transport import WebSocketTransport

from .redis_server import redis_cluster, redis_server  # noqa: F401 - fixtures for every module


@pytest.fixture(params=["asyncio", "trio", "asyncio-anyio-path"])
def anyio_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Parametrise ``@pytest.mark.anyio`` tests over both event loops and both server paths.

    On asyncio a server drives its connections from ``asyncio.Protocol``
    callbacks; ``native_asyncio=False`` selects the anyio path instead, the one
    trio always uses: the third run covers that combination.
    """
    if request.param == "asyncio-anyio-path":
        defaults = dict(WebSocketTransport.__init__.__kwdefaults__ or {})
        defaults["native_asyncio"] = False
        monkeypatch.setattr(WebSocketTransport.__init__, "__kwdefaults__", defaults)
        return "asyncio"
    return str(request.param)
