"""The official MCP SDK 2.x client with a bearer token, against our server's SecurityPolicy.

The token goes the way an SDK user gives it: an ``httpx2.AsyncClient`` with an
``Authorization`` header handed to the SDK's ``streamable_http_client``
(``tests/sdk2_http_client.py --auth``). No token and a wrong one are refused
with 401 before any tool is seen; a user's token lists only what its scopes
allow and gets the scope error for the rest; an admin's token calls the
scoped tool. Both eras (the SDK's ``auto`` and forced ``legacy`` modes), on
every server backend.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from securemcp.origin import OriginPolicy

from .helpers import serving
from .http_helpers import (
    ADMIN,
    LIMIT,
    USER,
    one,
    post,
    rpc,
    sdk_client,
    token_policy,
    transport,
)

pytestmark = pytest.mark.anyio

ALL_TOOLS = ["add", "count", "echo", "forecast", "hang", "purge"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("token", [None, "wrong-token-0123456789"])
async def test_the_sdk_client_without_a_valid_token_is_refused(
    mcp2_python: Path, mode: str, token: str | None
) -> None:
    args = ["--auth", *(["--legacy"] if mode == "legacy" else [])]
    args += [] if token is None else ["--token", token]
    async with serving(transport(security=token_policy())) as port:
        with anyio.fail_after(LIMIT + 10):
            out = await sdk_client(mcp2_python, f"http://127.0.0.1:{port}/mcp", *args)
    assert "tools" not in out  # refused before anything was listed
    # The SDK shows our JSON-RPC error body, not a bare "server returned an error".
    reason = "missing credentials" if token is None else "unknown token"
    assert out["refused"] == f"MCPError: {reason.capitalize()} (HTTP 401)", out


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_sdk_client_with_a_token_gets_what_its_scopes_allow(
    mcp2_python: Path, mode: str
) -> None:
    legacy = ["--legacy"] if mode == "legacy" else []
    async with serving(transport(security=token_policy())) as port:
        url = f"http://127.0.0.1:{port}/mcp"
        with anyio.fail_after(2 * LIMIT + 10):
            user = await sdk_client(mcp2_python, url, "--auth", "--token", USER, *legacy)
            admin = await sdk_client(mcp2_python, url, "--auth", "--token", ADMIN, *legacy)
    assert user["protocol_version"] == admin["protocol_version"]
    assert user["protocol_version"] == ("2025-11-25" if mode == "legacy" else "2026-07-28")
    assert user["tools"] == [name for name in ALL_TOOLS if name != "purge"]  # not listed
    assert "Insufficient scope" in user["purge"]["error"]
    assert admin["tools"] == ALL_TOOLS
    assert admin["purge"] == {"text": "purged", "isError": False}


async def test_a_refusal_keeps_its_status_and_carries_a_json_rpc_error() -> None:
    policy = token_policy(origins=OriginPolicy(["https://app.example"]))
    async with serving(transport(security=policy)) as port:
        with anyio.fail_after(LIMIT):
            origin = await one(port, post(rpc("tools/list"), "Origin: https://evil.example\r\n"))
            token = await one(port, post(rpc("tools/list"), "Authorization: Bearer nope\r\n"))
    assert origin.status == 403
    assert origin.headers["content-type"] == "application/json"
    assert origin.json()["error"] == {"code": -31003, "message": "Origin not allowed (HTTP 403)"}
    assert token.status == 401
    assert token.headers["www-authenticate"].startswith("Bearer")
    assert token.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -31001, "message": "Unknown token (HTTP 401)"},
    }
