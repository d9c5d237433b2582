"""What the tests of the server core's MCP dialect share: the app, an initialised pair, messages.

Also the stateless revision's (2026-07-28): requests with their ``_meta``
envelope, on a connection that has sent nothing yet.
"""

from __future__ import annotations

from typing import Any

from securemcp import Context, Progress, SecureMCP
from securemcp.protocol import ToolCall
from securemcp.protocol.mcp import LATEST_PROTOCOL_VERSION, SUBPROTOCOL
from securemcp.protocol.mcp_stateless import (
    CLIENT_CAPABILITIES_KEY,
    CLIENT_INFO_KEY,
    PROTOCOL_VERSION_KEY,
)

from .helpers import ConnectionPair, demo_app

INIT_PARAMS = {
    "protocolVersion": LATEST_PROTOCOL_VERSION,
    "capabilities": {},
    "clientInfo": {"name": "test", "version": "1"},
}


def mcp_app() -> SecureMCP:
    """The core tests' tools plus the MCP-only features: titles, annotations, progress."""
    app = demo_app()

    @app.tool(title="Shout", annotations={"readOnlyHint": True, "openWorldHint": False})
    def shout(text: str) -> str:
        """Upper-case a text."""
        return text.upper()

    @app.tool()
    def steps(count: int, progress: Progress, ctx: Context) -> int:
        """Report progress ``count`` times."""
        for step in range(1, count + 1):
            progress.report(step, count, f"step {step}")
        return count

    return app


def open_mcp(
    app: SecureMCP | None = None, *, version: str | None = LATEST_PROTOCOL_VERSION
) -> ConnectionPair:
    """A pair whose connection negotiated ``mcp``; initialised unless ``version`` is None."""
    pair = ConnectionPair(app or mcp_app())
    pair.client.connect("localhost", "/mcp", subprotocols=[SUBPROTOCOL])
    pair.pump()
    pair.take_server_events()
    pair.server.accept(SUBPROTOCOL)
    pair.pump()
    pair.take_client_events()
    pair.client.jsonrpc = True
    if version is not None:
        [answer] = pair.send_raw(request("initialize", {**INIT_PARAMS, "protocolVersion": version}))
        assert answer["result"]["protocolVersion"] == version
        assert pair.send_raw(notification("notifications/initialized")) == []
    return pair


def request(method: str, params: Any = None, request_id: Any = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def notification(method: str, params: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def error(message: dict[str, Any]) -> tuple[Any, int]:
    assert message["jsonrpc"] == "2.0"
    assert "result" not in message
    return message["id"], message["error"]["code"]


def bind_directly(pair: ConnectionPair, running: ToolCall) -> Progress:
    """Bind the call's progress straight to the core, as a backend does on its loop."""
    progress = running.progress
    assert progress is not None
    progress.bind(
        lambda value, total, message: pair.server.report_progress(running, value, total, message)
    )
    return progress


# The stateless revision: a request carries its own envelope, no initialize.

MODERN = "2026-07-28"


def envelope(version: Any = MODERN, **extra: Any) -> dict[str, Any]:
    return {
        PROTOCOL_VERSION_KEY: version,
        CLIENT_CAPABILITIES_KEY: {},
        CLIENT_INFO_KEY: {"name": "test", "version": "1"},
        **extra,
    }


def modern(
    method: str, params: dict[str, Any] | None = None, request_id: Any = 1
) -> dict[str, Any]:
    """A 2026-07-28 request: ``params`` plus the ``_meta`` envelope."""
    params = dict(params or {})
    params["_meta"] = {**envelope(), **params.get("_meta", {})}
    return request(method, params, request_id)


def stateless(app: SecureMCP | None = None) -> ConnectionPair:
    """An ``mcp`` connection that has not sent anything yet."""
    return open_mcp(app, version=None)


def only(pair: ConnectionPair, message: Any) -> dict[str, Any]:
    [answer] = pair.send_raw(message)
    assert answer["jsonrpc"] == "2.0"
    return answer
