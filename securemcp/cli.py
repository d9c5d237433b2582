"""The ``securemcp`` command line: serve an app, list a server's tools, call one, ping.

``main`` returns the exit status instead of exiting, so that it can be tested
and embedded: 0 success, 1 a failure at run time (server unreachable, error
answer, port in use), 2 a usage error (bad arguments, a value that does not fit
the tool's schema, a missing certificate), 130 interrupted. Expected errors are
one ``error: ...`` line on stderr, never a traceback.

The commands live in their own modules: ``serve`` in :mod:`._serve_command`,
``tools``, ``call`` and ``ping`` in :mod:`._client_commands`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ._cli_error import CLIError
from ._cli_schema import build_arguments, convert_value, schema_types, tools_table
from ._client_commands import add_client_commands
from ._serve_command import (
    LOG_LEVELS,
    STORE_ENV,
    add_serve_command,
    load_app,
    security_policy,
    serve,
    tls_server_context,
)

__all__ = [
    "LOG_LEVELS",
    "STORE_ENV",
    "CLIError",
    "build_arguments",
    "convert_value",
    "load_app",
    "main",
    "schema_types",
    "security_policy",
    "serve",
    "tls_server_context",
    "tools_table",
]


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
    add_client_commands(commands, formatter)
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
