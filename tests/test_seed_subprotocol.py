"""The seed dialect named by a subprotocol, so that a browser can send its token.

A browser cannot set ``Authorization``; its token travels as a ``bearer.<token>``
entry of the subprotocol list, and a browser fails a connection that offered
subprotocols if the server answers with none. Offering ``securemcp.seed``
beside the token gets the seed dialect (welcome message and all) under that
principal; a client offering no subprotocol keeps working unchanged.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from securemcp import Context, Principal, SecureMCP, SecurityPolicy, StaticTokenAuthenticator
from securemcp.errors import HandshakeRejected, RPCError
from securemcp.protocol.seed import SUBPROTOCOL
from securemcp.transport import WebSocketClient, WebSocketTransport

from .helpers import serving

pytestmark = pytest.mark.anyio

ADMIN = "admin-token-0123456789"
TIMEOUT = 10


def secured() -> WebSocketTransport:
    app = SecureMCP("seed-subprotocol")

    @app.tool()
    def whoami(ctx: Context) -> str | None:
        """Who the server thinks is calling."""
        return None if ctx.principal is None else ctx.principal.subject

    @app.tool(scopes={"admin"})
    def clear() -> str:
        return "cleared"

    policy = SecurityPolicy(
        authenticator=StaticTokenAuthenticator({ADMIN: Principal("root", frozenset({"admin"}))}),
        allow_anonymous=True,
    )
    return WebSocketTransport(app, security=policy, shutdown_grace=1.0, close_timeout=1.0)


async def outcome(client: WebSocketClient, tool: str) -> Any:
    try:
        return await client.invoke_tool(tool)
    except RPCError as exc:
        return exc.code


async def test_the_seed_subprotocol_beside_a_token_gets_the_seed_dialect_as_its_principal() -> None:
    async with serving(secured()) as port:
        url = f"ws://127.0.0.1:{port}/"
        with anyio.fail_after(TIMEOUT):
            # What the chat page sends: [name, "bearer." + token].
            async with WebSocketClient(
                url, subprotocols=[SUBPROTOCOL], token=ADMIN, token_in_subprotocol=True
            ) as admin:
                assert admin.subprotocol == SUBPROTOCOL  # answered with the name, not the token
                assert admin.welcome is not None  # the seed dialect greets
                assert not admin.speaks_mcp
                assert await admin.invoke_tool("whoami") == "root"
                assert await admin.invoke_tool("clear") == "cleared"
            async with WebSocketClient(url) as anonymous:  # as before: no subprotocol at all
                assert anonymous.subprotocol is None
                assert anonymous.welcome is not None
                assert await anonymous.invoke_tool("whoami") is None
                assert await outcome(anonymous, "clear") == -31001  # no principal: unauthenticated
            async with WebSocketClient(url, subprotocols=[SUBPROTOCOL]) as named:
                assert named.subprotocol == SUBPROTOCOL
                assert await outcome(named, "clear") == -31001


async def test_a_wrong_token_beside_the_seed_subprotocol_is_refused_with_401() -> None:
    async with serving(secured()) as port:
        with anyio.fail_after(TIMEOUT), pytest.raises(HandshakeRejected) as refused:
            async with WebSocketClient(
                f"ws://127.0.0.1:{port}/",
                subprotocols=[SUBPROTOCOL],
                token="wrong-token-0000",
                token_in_subprotocol=True,
            ):
                pass
    assert refused.value.status_code == 401


@pytest.mark.parametrize(
    ("offered", "chosen", "mcp"),
    [
        ([SUBPROTOCOL, "mcp"], SUBPROTOCOL, False),
        (["mcp", SUBPROTOCOL], "mcp", True),
        (["x-unknown", SUBPROTOCOL], SUBPROTOCOL, False),
    ],
)
async def test_the_client_order_decides_between_the_built_in_dialects(
    offered: list[str], chosen: str, mcp: bool
) -> None:
    async with serving(secured()) as port:
        with anyio.fail_after(TIMEOUT):
            async with WebSocketClient(f"ws://127.0.0.1:{port}/", subprotocols=offered) as client:
                assert client.subprotocol == chosen
                assert client.speaks_mcp == mcp
                assert await client.invoke_tool("whoami") is None
