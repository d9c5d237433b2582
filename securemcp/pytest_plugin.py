"""SecureMCP's pytest plugin: the ``securemcp_client`` fixture.

Installed with SecureMCP (the ``pytest11`` entry point ``securemcp``), so a
project's tests can use it without importing anything::

    @pytest.mark.anyio
    async def test_add(securemcp_client):
        async with securemcp_client(app) as client:
            assert await client.invoke_tool("add", {"a": 1, "b": 2}) == 3

The fixture is a factory of :class:`~securemcp.testing.TestClient` (same
arguments), so it runs under whatever runs the test: anyio's pytest plugin on
asyncio or trio, pytest-trio, pytest-asyncio. A client it made and left
connected at the end of the test is an error: connect with ``async with``.
Disable the plugin with ``-p no:securemcp``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from securemcp.testing import TestClient

__all__ = ["securemcp_client"]


@pytest.fixture
def securemcp_client() -> Iterator[Callable[..., TestClient]]:
    """Make :class:`~securemcp.testing.TestClient` objects: ``async with securemcp_client(app,
    principal=...) as client``."""
    # Imported here: pytest loads this plugin in every session, most of which never use it.
    from securemcp.testing import TestClient

    made: list[TestClient] = []

    def make(app: Any, **options: Any) -> TestClient:
        client = TestClient(app, **options)
        made.append(client)
        return client

    yield make
    left = sum(client.serving for client in made)
    if left:
        pytest.fail(
            f"{left} TestClient(s) still connected at the end of the test: "
            "use 'async with securemcp_client(app) as client:'",
            pytrace=False,
        )
