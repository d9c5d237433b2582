"""``securemcp tools``, ``call`` and ``ping``: the command line's client commands.

Each reaches a server with the client its URL asks for (``ws(s)://``: the
WebSocket client, ``http(s)://``: MCP Streamable HTTP) and turns what can go
wrong on the way into one ``error: ...`` line and an exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._cli_error import CLIError
from ._cli_schema import build_arguments, tools_table
from .errors import ConnectionClosed, HandshakeRejected, RequestTimeout, RPCError

if TYPE_CHECKING:
    from .transport import HTTPClient, WebSocketClient

    Client = WebSocketClient | HTTPClient

__all__ = ["TOKEN_ENV", "ClientOptions", "add_client_commands"]

TOKEN_ENV = "SECUREMCP_TOKEN"


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How to reach the server: what every client command shares."""

    url: str
    token: str | None
    dialect: str
    timeout: float | None
    cafile: str | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ClientOptions:
        """Read the shared options; a URL without a scheme gets ``ws://``."""
        url: str = args.url if "://" in args.url else f"ws://{args.url}"
        timeout = None if args.timeout <= 0 else float(args.timeout)
        return cls(url, args.token or os.environ.get(TOKEN_ENV), args.dialect, timeout, args.cafile)


def _client(options: ClientOptions) -> Client:
    """A WebSocket client for ``ws(s)://`` URLs, an MCP Streamable HTTP one for ``http(s)://``."""
    from .transport import HTTPClient, WebSocketClient

    kwargs: dict[str, Any] = {}
    if options.cafile is not None:
        try:
            kwargs["ssl"] = ssl.create_default_context(cafile=options.cafile)
        except OSError as exc:
            raise CLIError(
                f"cannot load CA file {options.cafile}: {exc.strerror or exc}", 2
            ) from None
    try:
        if options.url.startswith(("http://", "https://")):
            # Streamable HTTP is MCP only: --dialect does not apply.
            return HTTPClient(options.url, token=options.token, timeout=options.timeout, **kwargs)
        return WebSocketClient(
            options.url,
            token=options.token,
            timeout=options.timeout,
            mcp=options.dialect == "mcp",
            **kwargs,
        )
    except ValueError as exc:
        raise CLIError(str(exc), 2) from None


def _run_client(options: ClientOptions, work: Callable[[Client], Awaitable[int]]) -> int:
    import anyio

    client = _client(options)

    async def session() -> int:
        async with client:
            return await work(client)

    try:
        return anyio.run(session)
    except RPCError as exc:
        print(f"error {exc.code}: {exc.message}", file=sys.stderr)
        if exc.data is not None:
            print(f"data: {json.dumps(exc.data, ensure_ascii=False)}", file=sys.stderr)
        return 1
    except HandshakeRejected as exc:
        hint = " (a token is needed: --token)" if exc.status_code == 401 else ""
        message = f"{options.url} refused the connection with HTTP {exc.status_code}{hint}"
        raise CLIError(message) from None
    except (ConnectionClosed, RequestTimeout) as exc:
        raise CLIError(f"{options.url}: {exc}") from None
    except OSError as exc:
        raise CLIError(
            f"cannot connect to {options.url}: {_connect_reason(exc, options.url)}"
        ) from None


def _connect_reason(exc: OSError, url: str) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"TLS certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ConnectionError) and exc.errno:
        # asyncio words a refusal "Connect call failed (...)"; the system's text is clearer.
        return os.strerror(exc.errno)
    reason = exc.strerror or str(exc)
    # The client already says which URL failed; do not say it twice.
    return reason.removeprefix(f"cannot connect to {url}: ")


def _call(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        tool = None
        if args.pairs:
            tools = await client.list_tools()
            tool = next((t for t in tools if t.get("name") == args.tool), None)
        arguments = build_arguments(args.pairs, args.json, tool)
        if client.speaks_mcp:
            # MCP reports a tool's failure (and bad arguments) as a result, not an error.
            outcome = await client.call_tool(args.tool, arguments)
            if outcome.is_error:
                print(f"error: {outcome.text or 'the tool failed'}", file=sys.stderr)
                return 1
            result = outcome.value()
        else:
            result = await client.invoke_tool(args.tool, arguments)
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0

    return _run_client(ClientOptions.from_args(args), work)


def _tools(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        print(tools_table(await client.list_tools()))
        return 0

    return _run_client(ClientOptions.from_args(args), work)


def _ping(args: argparse.Namespace) -> int:
    options = ClientOptions.from_args(args)
    if args.count < 1:
        raise CLIError("--count must be at least 1", 2)

    async def work(client: Client) -> int:
        times = []
        for _ in range(args.count):
            times.append(await client.ping() * 1000)
            print(f"pong from {options.url} in {times[-1]:.2f} ms", flush=True)
        if len(times) > 1:
            mean = sum(times) / len(times)
            low, high = min(times), max(times)
            print(f"{len(times)} pings: min {low:.2f} / avg {mean:.2f} / max {high:.2f} ms")
        return 0

    return _run_client(options, work)


_TOOLS_EXAMPLES = """\
examples:
  securemcp tools ws://127.0.0.1:8765
  securemcp tools wss://tools.example.com --token "$TOKEN"
"""

_CALL_EXAMPLES = """\
examples:
  securemcp call ws://127.0.0.1:8765 echo message=hello
  securemcp call ws://127.0.0.1:8765 get_messages limit=5
  securemcp call ws://127.0.0.1:8765 tag ids='[1, 2]' --json '{"note": "x"}'

Values are typed by the tool's schema: integers, numbers, true/false, null,
JSON for arrays and objects, text otherwise. key=value pairs override --json.
Prints the result as JSON; an error answer prints 'error CODE: MESSAGE' on
stderr and exits 1.
"""

_PING_EXAMPLES = """\
examples:
  securemcp ping ws://127.0.0.1:8765
  securemcp ping ws://127.0.0.1:8765 --count 5
"""


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url",
        metavar="URL",
        help="server URL: ws://HOST:PORT, wss://..., or http(s)://HOST:PORT/mcp for MCP over "
        "Streamable HTTP (ws:// if omitted)",
    )
    parser.add_argument(
        "--token", help=f"bearer token for servers that require one (default: ${TOKEN_ENV})"
    )
    parser.add_argument(
        "--dialect", choices=("seed", "mcp"), default="seed", help="wire dialect (default: seed)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="per-request timeout, 0 for none (default: 30)",
    )
    parser.add_argument("--cafile", help="PEM file of CA certificates to trust for wss://")


def add_client_commands(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """Add ``tools``, ``call`` and ``ping`` and their options to the subcommands ``commands``."""

    def client_command(
        name: str,
        summary: str,
        description: str,
        epilog: str,
        handler: Callable[[argparse.Namespace], int],
    ) -> argparse.ArgumentParser:
        command: argparse.ArgumentParser = commands.add_parser(
            name,
            help=summary,
            formatter_class=formatter,
            epilog=epilog,
            description=description,
        )
        _add_client_options(command)
        command.set_defaults(handler=handler)
        return command

    client_command(
        "tools",
        "list a server's tools",
        "List the server's tools with their parameters.",
        _TOOLS_EXAMPLES,
        _tools,
    )
    call_parser = client_command(
        "call",
        "call one tool",
        "Call one tool and print its result as JSON.",
        _CALL_EXAMPLES,
        _call,
    )
    call_parser.add_argument("tool", metavar="TOOL", help="the tool's name")
    call_parser.add_argument("pairs", nargs="*", metavar="key=value", help="one argument each")
    call_parser.add_argument("--json", metavar="OBJECT", help="the arguments as a JSON object")
    ping_parser = client_command(
        "ping",
        "measure the round-trip time",
        "Send ping requests and print each round-trip time.",
        _PING_EXAMPLES,
        _ping,
    )
    ping_parser.add_argument("--count", type=int, default=1, metavar="N", help="default: 1")
