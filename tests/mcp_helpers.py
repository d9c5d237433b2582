"""What the tests of the server core's MCP dialect share: the app, an initialised pair, messages."""

from __future__ import annotations

from typing import Any

from securemcp import Context, Progress, SecureMCP
from securemcp.protocol import ToolCall
from securemcp.protocol.mcp import LATEST_PROTOCOL_VERSION, SUBPROTOCOL

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
