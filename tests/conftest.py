"""Shared fixtures: every async test runs on asyncio, on trio, and on asyncio's anyio path."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from securemcp import SecureMCP
from securemcp.transport import WebSocketTransport

from .helpers import ConnectionPair, demo_app
from .mcp2_env import (  # noqa: F401 - fixtures for every module
    mcp2_python,
    sdk2_http_server,
    sdk2_http_server_auth,
    sdk2_http_server_json,
)
from .redis_server import redis_cluster, redis_server  # noqa: F401 - fixtures for every module

# SecureMCP's own pytest plugin (the securemcp_client fixture), loaded here rather than
# through its entry point (off in pyproject.toml's addopts) so that coverage, started
# by then, sees everything importing it imports.
pytest_plugins = ["securemcp.pytest_plugin"]


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


@pytest.fixture(autouse=True)
def _restore_securemcp_logger() -> Iterator[None]:
    """Undo what a test's ``run()`` or ``serve --log-level`` did to the ``securemcp`` logger.

    ``run()`` sets the package logger's level (``--log-level error``, say) and
    may add a handler; left behind, a later test's ``caplog`` would miss the
    warnings it checks.
    """
    package = logging.getLogger("securemcp")
    level, handlers = package.level, list(package.handlers)
    yield
    package.setLevel(level)
    for handler in package.handlers[:]:
        if handler not in handlers:
            package.removeHandler(handler)


# The in-memory tests of the server core (test_server_core*.py, test_limits_core*.py):
# the demo app, and a connection pair opened on it. A module may define its own.


@pytest.fixture
def app() -> SecureMCP:
    return demo_app()


@pytest.fixture
def pair(app: SecureMCP) -> ConnectionPair:
    pair = ConnectionPair(app)
    pair.open()
    pair.take_client_events()
    return pair
