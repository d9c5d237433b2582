"""``app.uses()``: what a transport opens before its first connection and closes after its last."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import anyio
import pytest

from securemcp import SecureMCP
from securemcp.transport import WebSocketClient, WebSocketTransport

from .helpers import serving


class Resource:
    """An async context manager that records when it is entered and left."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.open = False

    async def __aenter__(self) -> Resource:
        await anyio.lowlevel.checkpoint()
        self.open = True
        self.log.append(f"open {self.name}")
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await anyio.lowlevel.checkpoint()
        self.open = False
        self.log.append(f"close {self.name}")


@pytest.mark.anyio
async def test_resources_are_open_while_serving_and_closed_in_reverse_order() -> None:
    log: list[str] = []
    app = SecureMCP("resources")
    first = app.uses(Resource("first", log))
    second = app.uses(Resource("second", log))
    assert app.resources == (first, second)

    @app.tool()
    async def both_open() -> bool:
        return first.open and second.open

    transport = WebSocketTransport(app, shutdown_grace=1)
    async with serving(transport) as port:
        assert log == ["open first", "open second"]
        async with WebSocketClient(f"ws://127.0.0.1:{port}") as client:
            assert await client.invoke_tool("both_open", {}) is True
        assert log == ["open first", "open second"]
    assert log == ["open first", "open second", "close second", "close first"]


def test_uses_refuses_what_is_not_an_async_context_manager() -> None:
    app = SecureMCP("resources")
    with pytest.raises(TypeError, match="async context manager"):
        app.uses(object())  # type: ignore[type-var]


def test_without_coredis_securemcp_imports_and_redis_names_the_extra() -> None:
    # A fresh interpreter where coredis cannot be imported.
    code = (
        "import sys; sys.modules['coredis'] = None\n"
        "import securemcp, securemcp.transport\n"
        "try:\n"
        "    import securemcp.redis\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'securemcp[redis]'" in done.stdout
