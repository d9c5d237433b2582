"""The official MCP SDK 2.x client against a Streamable HTTP URL: prints what it got as JSON.

Run by the interpreter of the SDK 2.x environment (``tests/mcp2_env.py``), never
imported by the test suite: ``python sdk2_http_client.py URL [--legacy]``. It
lists the tools, then calls: ``echo`` (success), ``add`` with a bad argument,
an unknown tool, ``count`` with a progress callback and ``forecast`` (whose
``region`` the SDK sends as ``Mcp-Param-Region`` too, at 2026-07-28); it prints one JSON
object with the protocol version, the tool names, each call's result (text,
``isError``) and the progress reports seen.

``--auth [--token T]``: the bearer token the way an SDK user gives it (an
``httpx2.AsyncClient`` with an ``Authorization`` header, handed to the SDK's
``streamable_http_client``); it lists the tools and calls ``purge`` (a scoped
tool), or prints ``{"refused": ...}`` with the SDK's error when the server
refuses the connection.
"""

# mypy: ignore-errors
# (it imports the SDK 2.x, which lives in .venv-mcp2, not in the project's environment)

from __future__ import annotations

import argparse
import json

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def _text(result) -> dict:
    texts = [part.text for part in result.content if getattr(part, "type", None) == "text"]
    return {"text": "\n".join(texts), "isError": bool(result.is_error)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--legacy", action="store_true")
    parser.add_argument("--auth", action="store_true")
    parser.add_argument("--token")
    args = parser.parse_args()
    if args.auth:
        await auth(args.url, args.token, "legacy" if args.legacy else "auto")
        return
    progress: list[list] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append([value, total, message])

    out: dict = {}
    with anyio.fail_after(20):
        async with Client(args.url, mode="legacy" if args.legacy else "auto") as client:
            out["protocol_version"] = client.protocol_version
            tools = await client.list_tools()
            out["tools"] = sorted(tool.name for tool in tools.tools)
            out["echo"] = _text(await client.call_tool("echo", {"message": "héllo ✓"}))
            out["bad"] = _text(await client.call_tool("add", {"a": "x", "b": 1}))
            out["added"] = _text(await client.call_tool("add", {"a": 2, "b": 3}))
            try:
                out["unknown"] = _text(await client.call_tool("nope", {}))
            except Exception as exc:  # noqa: BLE001 - an MCPError, from servers answering so
                out["unknown"] = {"error": str(exc)}
            out["count"] = _text(
                await client.call_tool("count", {"steps": 3}, progress_callback=on_progress)
            )
            out["forecast"] = _text(await client.call_tool("forecast", {"region": "Zürich"}))
    out["progress"] = progress
    print(json.dumps(out), flush=True)


def _leaves(exc: BaseException) -> list[str]:
    """The errors inside ``exc``'s exception groups (the SDK raises from task groups)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [f"{type(exc).__name__}: {exc}"]


async def auth(url: str, token: str | None, mode: str) -> None:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    out: dict = {}
    with anyio.fail_after(20):
        async with httpx2.AsyncClient(headers=headers, timeout=20) as http:
            try:
                async with Client(
                    streamable_http_client(url, http_client=http), mode=mode
                ) as client:
                    out["protocol_version"] = client.protocol_version
                    tools = await client.list_tools()
                    out["tools"] = sorted(tool.name for tool in tools.tools)
                    try:
                        out["purge"] = _text(await client.call_tool("purge", {}))
                    except Exception as exc:  # noqa: BLE001 - an MCPError for a refused call
                        out["purge"] = {"error": str(exc)}
            except Exception as exc:  # noqa: BLE001 - whatever the SDK raises for a 401
                out["refused"] = "; ".join(_leaves(exc))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    anyio.run(main)
