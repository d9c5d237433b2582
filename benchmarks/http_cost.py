"""Where an M3 request's CPU goes, in instructions: SecureMCP's request path against h11's parse.

M3's throughput (``http_bench.py``) moves by several per cent between runs on
a shared machine; instruction counts do not. This counts, under valgrind's
cachegrind, the instructions one M3 request costs in two loops, each fed the
load generator's very request bytes (``http_loadgen.Requests``):

- ``path``: SecureMCP's whole request path without a socket: the connection
  driver, the sans-I/O core (h11 parsing the head, the body taken by length)
  and the MCP endpoint (admission, media types, JSON, the 2026-07-28 envelope,
  argument validation, the tool, the answer written), at the server's defaults;
- ``h11``: what h11 alone costs for the same request: its head parsed by the
  parser the core makes for every request (``http_head.parser``: h11's head
  reader, without an ``h11.Connection``, on the h11 releases it was checked on);
- ``h11-connection``: the same head through a public ``h11.Connection``, which
  is what the core would use on any other h11.

Each loop runs twice, for ``--base`` and ``--base + --requests`` requests; the
difference divided by ``--requests`` leaves start-up out. What a socket and the
event loop add (in the M3 profile, about a fifth of the server's CPU) is not
counted here. Without valgrind, nothing is measured (exit status 2).

Usage::

    python benchmarks/http_cost.py [--requests N] [--base N]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent

# Run as a script, this file finds its sibling module on sys.path[0]; mypy knows it by package.
if TYPE_CHECKING:
    from benchmarks.http_loadgen import Requests
else:
    from http_loadgen import Requests

REQUEST = Requests("127.0.0.1:8000", "/mcp", "hello from the benchmark").build(12345)
"""One M3 request, as the load generator sends it."""

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def run_path(count: int) -> None:
    """Serve ``count`` M3 requests through a connection driver, no socket (``path``)."""
    sys.path.insert(0, str(HERE.parent))
    from securemcp import SecureMCP
    from securemcp.backends._driver import ConnectionDriver
    from securemcp.transport import WebSocketTransport
    from tests.driver_helpers import FakeServer, Recorder  # the driver's in-memory test fixtures

    app = SecureMCP("bench")

    @app.tool()
    async def echo(message: str) -> dict[str, str]:
        """Echo a message back (as benchmarks/servers/securemcp_server.py does)."""
        return {"echoed": message}

    # The settings a server has at its defaults (benchmarks/servers/securemcp_server.py's).
    server = FakeServer(WebSocketTransport(app)._settings)
    driver = None
    for index in range(count):
        if index % 900 == 0:  # a new connection within the default max_http_requests
            driver = ConnectionDriver(server, Recorder(), ("127.0.0.1", 40000), refuse=False)
            driver.start()
        assert driver is not None
        driver.data_received(REQUEST)
        answer = b"".join(driver.take_output())
        if not answer.startswith(b"HTTP/1.1 200 ") or b'"isError":false' not in answer:
            raise SystemExit(f"unexpected answer: {answer[:300]!r}")


def run_h11(count: int) -> None:
    """Parse ``count`` M3 request heads as the core does, a fresh parser each (``h11``)."""
    sys.path.insert(0, str(HERE.parent))
    from securemcp.protocol.http_head import parser

    _parse(count, lambda: parser(64 * 1024))


def run_h11_connection(count: int) -> None:
    """Parse ``count`` M3 request heads with a fresh public ``h11.Connection`` each."""
    import h11

    _parse(count, lambda: h11.Connection(h11.SERVER))


def _parse(count: int, make: Callable[[], Any]) -> None:
    import h11

    for _ in range(count):
        conn = make()
        conn.receive_data(REQUEST)
        if type(conn.next_event()) is not h11.Request:
            raise SystemExit("h11 did not parse the request")


LOOPS: dict[str, Callable[[int], None]] = {
    "path": run_path,
    "h11": run_h11,
    "h11-connection": run_h11_connection,
}


def instructions(loop: str, count: int) -> int:
    """The instructions a whole run of ``loop`` over ``count`` requests executes."""
    argv = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--inner",
        loop,
        str(count),
    ]
    # A fixed hash seed: dict and set layouts, hence instructions, repeat run to run.
    done = subprocess.run(
        argv, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"}
    )
    found = _REFS.search(done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main(argv: Sequence[str] | None = None) -> int:
    """Count both loops and print a table of instructions per request."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests counted")
    parser.add_argument("--base", type=int, default=200, help="requests of the baseline run")
    parser.add_argument("--inner", nargs=2, metavar=("LOOP", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        LOOPS[args.inner[0]](int(args.inner[1]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: nothing measured", file=sys.stderr)
        return 2
    per_request = {}
    for loop in LOOPS:
        counted = instructions(loop, args.base + args.requests) - instructions(loop, args.base)
        per_request[loop] = counted / args.requests
    path, parse = per_request["path"], per_request["h11"]
    print(f"M3 request ({len(REQUEST)} bytes), instructions per request (cachegrind):\n")
    print("| part | instructions | share of the path |\n|---|---:|---:|")
    print(f"| whole request path (driver, core, endpoint) | {path:,.0f} | 100% |")
    print(
        f"| h11 parsing the head, by the parser the core uses | {parse:,.0f} | {parse / path:.0%} |"
    )
    print(f"| everything else | {path - parse:,.0f} | {(path - parse) / path:.0%} |")
    public = per_request["h11-connection"]
    print(f"\nThe same head through a public h11.Connection: {public:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
