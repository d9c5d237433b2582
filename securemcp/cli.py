"""The ``securemcp`` command line: serve an app, list a server's tools, call one, ping.

``main`` returns the exit status instead of exiting, so that it can be tested
and embedded: 0 success, 1 a failure at run time (server unreachable, error
answer, port in use), 2 a usage error (bad arguments, a value that does not fit
the tool's schema, a missing certificate), 130 interrupted. Expected errors are
one ``error: ...`` line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._cli_error import CLIError
from ._serve_command import (
    LOG_LEVELS,
    STORE_ENV,
    add_serve_command,
    load_app,
    security_policy,
    serve,
    tls_server_context,
)
from .errors import ConnectionClosed, HandshakeRejected, RequestTimeout, RPCError

if TYPE_CHECKING:
    from .transport import HTTPClient, WebSocketClient

    Client = WebSocketClient | HTTPClient

__all__ = [
    "LOG_LEVELS",
    "STORE_ENV",
    "CLIError",
    "load_app",
    "main",
    "security_policy",
    "serve",
    "tls_server_context",
]

TOKEN_ENV = "SECUREMCP_TOKEN"


# client commands


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


def schema_types(schema: Any, defs: dict[str, Any]) -> set[str] | None:
    """The JSON types a parameter schema allows; ``None`` when it allows anything."""
    if not isinstance(schema, dict):
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return schema_types(defs.get(ref.rsplit("/", 1)[-1]), defs)
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {str(k) for k in kind}
    if "enum" in schema or "const" in schema:
        values = schema["enum"] if "enum" in schema else [schema["const"]]
        return {_json_type(v) for v in values}
    options = schema.get("anyOf") or schema.get("oneOf")
    if not isinstance(options, list):
        return None
    union: set[str] = set()
    for option in options:
        types = schema_types(option, defs)
        if types is None:
            return None
        union |= types
    return union or None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "string"


def _strict_json(raw: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(raw, parse_constant=refuse)


def convert_value(raw: str, types: set[str] | None) -> Any:
    """``raw`` as the first of ``types`` it fits (string last); ``ValueError`` if none."""
    if types is None:
        try:
            return _strict_json(raw)
        except ValueError:
            return raw
    for kind in ("null", "boolean", "integer", "number", "array", "object"):
        if kind not in types:
            continue
        if kind == "null" and raw == "null":
            return None
        if kind == "boolean" and raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        try:
            value = _strict_json(raw)
        except ValueError:
            continue
        if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind == "integer" and isinstance(value, float) and value.is_integer():
            return int(value)
        if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
            return value if math.isfinite(value) else raw
        if kind in ("array", "object") and _json_type(value) == kind:
            return value
    if "string" in types:
        return raw
    raise ValueError(f"expected {' or '.join(sorted(types))}")


def build_arguments(
    pairs: Sequence[str], json_text: str | None, tool: dict[str, Any] | None
) -> dict[str, Any]:
    """The call's arguments: ``--json`` merged with ``key=value`` pairs typed by ``tool``."""
    arguments: dict[str, Any] = {}
    if json_text is not None:
        try:
            arguments = _strict_json(json_text)
        except ValueError as exc:
            raise CLIError(f"--json is not valid JSON: {exc}", 2) from None
        if not isinstance(arguments, dict):
            raise CLIError("--json must be a JSON object of arguments", 2)
    schema = (tool or {}).get("inputSchema") or {}
    properties = schema.get("properties") or {}
    defs = schema.get("$defs") or {}
    seen: set[str] = set()
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"argument {pair!r} is not key=value", 2)
        if key in seen:
            raise CLIError(f"parameter {key!r} is given twice", 2)
        seen.add(key)
        # An unknown name is sent as given: the server's answer names the problem.
        types = schema_types(properties[key], defs) if key in properties else None
        try:
            arguments[key] = convert_value(raw, types)
        except ValueError as exc:
            raise CLIError(f"{key}={raw!r}: {exc}", 2) from None
    return arguments


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


def type_label(schema: Any, defs: dict[str, Any]) -> str:
    """A short human name for a parameter's type: ``integer``, ``string | null``, ``array[...]``."""
    if not isinstance(schema, dict):
        return "any"
    if isinstance(schema.get("$ref"), str):
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "enum" in schema:
        return " | ".join(json.dumps(value) for value in schema["enum"])
    options = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(options, list):
        return " | ".join(type_label(option, defs) for option in options)
    kind = schema.get("type")
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"array[{type_label(schema['items'], defs)}]"
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    return str(kind) if kind else "any"


def parameter_lines(tool: dict[str, Any]) -> list[str]:
    """One line per parameter: ``limit: integer = 10``, ``username: string (required)``."""
    schema = tool.get("inputSchema") or {}
    required = set(schema.get("required") or [])
    defs = schema.get("$defs") or {}
    lines = []
    for name, spec in (schema.get("properties") or {}).items():
        line = f"{name}: {type_label(spec, defs)}"
        if name in required:
            line += " (required)"
        elif isinstance(spec, dict) and "default" in spec:
            line += f" = {json.dumps(spec['default'], ensure_ascii=False)}"
        lines.append(line)
    return lines


def tools_table(tools: Sequence[dict[str, Any]]) -> str:
    """The tools as an aligned text table: name, parameters (one per line), description."""
    rows: list[tuple[str, list[str], str]] = []
    for tool in tools:
        description = (tool.get("description") or "").strip().splitlines()
        rows.append(
            (
                str(tool.get("name")),
                parameter_lines(tool) or ["-"],
                description[0] if description else "",
            )
        )
    if not rows:
        return "(no tools)"
    name_width = max(len("NAME"), *(len(name) for name, _, _ in rows))
    param_width = max(len("PARAMETERS"), *(len(p) for _, params, _ in rows for p in params))
    lines = [f"{'NAME':<{name_width}}  {'PARAMETERS':<{param_width}}  DESCRIPTION"]
    for name, params, description in rows:
        for index, param in enumerate(params):
            first = index == 0
            left = name if first else ""
            line = f"{left:<{name_width}}  {param:<{param_width}}  {description if first else ''}"
            lines.append(line.rstrip())
    return "\n".join(lines)


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


# the parser

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


def build_parser() -> argparse.ArgumentParser:
    """The ``securemcp`` argument parser, with one subcommand per action."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="securemcp",
        description="Serve SecureMCP apps over WebSocket and talk to SecureMCP servers.",
        epilog="Run 'securemcp COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_serve_command(commands, formatter)

    def client_command(
        name: str,
        summary: str,
        description: str,
        epilog: str,
        handler: Callable[[argparse.Namespace], int],
    ) -> argparse.ArgumentParser:
        command = commands.add_parser(
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
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Run ``securemcp`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
