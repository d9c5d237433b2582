"""M3: MCP ``tools/call`` over Streamable HTTP, SecureMCP against the official SDK 2.x server.

Every request a 2026-07-28 stateless ``tools/call`` of ``echo`` (``_meta``
envelope, routing headers), 16 HTTP/1.1 keep-alive connections each with one
request in flight, closed loop: calls/s, latency p50 and p99. The servers:
SecureMCP's benchmark server (``benchmarks/servers/securemcp_server.py``,
which serves ``/mcp`` on its WebSocket port by default) on each backend, and
the official MCP SDK 2.x server (``benchmarks/servers/mcp_sdk2_http_server.py``,
plain JSON answers, stateless, logging at WARNING) from ``.venv-mcp2``
(``python tests/mcp2_env.py`` builds it). Each server in its own process pinned
to CPU 0, a fresh one per run; the load generator
(``benchmarks/http_loadgen.py``, which checks every answer) pinned to CPU 1;
rounds interleaved, medians of ``--runs``; as ``benchmarks/run.py`` does.

Usage::

    python benchmarks/http_bench.py              # 9 runs, writes its section of RESULTS.md
    python benchmarks/http_bench.py --smoke      # every server for about a second
    python benchmarks/http_bench.py --only securemcp-asyncio,mcp-sdk2-http --no-write
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# Run as a script, this file finds its sibling modules on sys.path[0]; mypy knows them by package.
if TYPE_CHECKING:
    from benchmarks import harness, options
    from benchmarks.report import Target, markdown
    from benchmarks.run import SERVERS, Entry, Workload
else:
    import harness
    import options
    from report import Target, markdown
    from run import SERVERS, Entry, Workload

HERE = harness.HERE
MCP2_PYTHON = HERE.parent / ".venv-mcp2" / "bin" / "python"
SECTION = "## M3 MCP over Streamable HTTP"
COMMAND = (
    ".venv/bin/python tests/mcp2_env.py && bash benchmarks/setup_peers.sh && "
    ".venv/bin/python benchmarks/http_bench.py"
)

M3 = Workload(
    "M3", "M3: tools/call over Streamable HTTP, 16 connections x 1 in flight", "http", 16, 1,
    "calls_per_s", "calls/s", False,
)  # fmt: skip
M3C = Workload(
    "M3c", "M3c: one tools/call per connection (Connection: close), 16 at a time", "http", 16, 1,
    "calls_per_s", "calls/s", False,
)  # fmt: skip
"""The worst case: every call a new TCP connection, as many short-lived clients make."""
WORKLOADS = (M3, M3C)


@dataclass(frozen=True)
class HTTPEntry(Entry):
    """A server run by an interpreter of its own (the SDK 2.x lives in ``.venv-mcp2``)."""

    python: str | None = None


SDK2 = HTTPEntry(
    "mcp-sdk2-http",
    "official MCP SDK 2.3.0 `MCPServer` Streamable HTTP app (JSON answers, stateless, "
    "logging at WARNING), uvicorn",
    (str(harness.SERVERS_DIR / "mcp_sdk2_http_server.py"),), False, ("M3", "M3c"),
    python=str(MCP2_PYTHON),
)  # fmt: skip
OURS = [entry for entry in SERVERS if entry.securemcp]
"""``run.py``'s SecureMCP servers: the same script serves ``/mcp`` beside its WebSocket."""

TARGETS = [
    Target("M3 asyncio >= 5 x MCP SDK 2.x (Streamable HTTP)", "securemcp-asyncio", "M3",
           SDK2.name, 5.0),
]  # fmt: skip


def available(only: str) -> list[Entry]:
    """The servers this machine can run (named in ``only``, if any); names the others."""
    servers = harness.chosen([*OURS, SDK2], only)
    if SDK2 in servers and not MCP2_PYTHON.exists():
        print(f"{SDK2.name}: no {MCP2_PYTHON} (python tests/mcp2_env.py)", file=sys.stderr)
        servers.remove(SDK2)
    return servers


def measure(server: Entry, workload: Workload, args: argparse.Namespace) -> dict[str, Any]:
    """Start a fresh ``server``, run ``workload`` once against it; its JSON figures."""
    python = server.python if isinstance(server, HTTPEntry) else None
    with harness.running(server.name, server.argv, server.peers_env, python) as (port, pid):
        argv = [
            harness.client_python(), str(HERE / "http_loadgen.py"),
            "--url", f"http://127.0.0.1:{port}/mcp", "--server-pid", str(pid),
            "--connections", str(workload.connections),
            "--warmup", str(args.warmup), "--duration", str(args.duration),
            *(["--close"] if workload is M3C else []),
        ]  # fmt: skip
        return harness.run_client(argv, f"http_loadgen failed on {server.name}", 120)


def latency_table(results: harness.Results, servers: Sequence[Entry]) -> list[str]:
    """p50 and p99 of every server (medians over the runs)."""
    lines = ["", "### M3 latency", "", "| server | p50 ms | p99 ms |", "|---|---:|---:|"]
    for server in servers:
        p50 = harness.median(results, (server.name, M3.key), "p50_ms") or 0.0
        p99 = harness.median(results, (server.name, M3.key), "p99_ms") or 0.0
        lines.append(f"| `{server.name}` | {p50:.3f} | {p99:.3f} |")
    return lines


def intro(meta: dict[str, Any]) -> list[str]:
    """The section's heading and how it was measured."""
    return [
        SECTION,
        "",
        "MCP `tools/call` of an `echo` tool over Streamable HTTP, 2026-07-28 stateless requests "
        "(the `_meta` envelope in the body, `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` "
        "headers, `Accept: application/json, text/event-stream`), over 16 HTTP/1.1 keep-alive "
        "connections each with one request in flight, closed loop; M3c the same calls with "
        "`Connection: close`, each one a new TCP connection (16 at a time, each replaced as it "
        "ends): the worst case, many short-lived clients. Each server in its own "
        "process pinned to CPU 0, a fresh process per run; the load generator "
        f"({meta['client']}, hand-built requests, answers framed by `Content-Length`) pinned to "
        f"CPU 1. {meta['warmup']} s of warm-up, then a {meta['duration']} s window; "
        f"{meta['runs']} runs, rounds interleaved, medians with the min - max range. Every "
        "answer is checked: status 200, `application/json`, the request's id, not an error, "
        "structured and text content the echo of the message sent. SecureMCP at its defaults "
        "(`benchmarks/servers/securemcp_server.py`: `/mcp` on the WebSocket port); the SDK in "
        "the modes that make it answer plain JSON without sessions, at WARNING.",
        "",
    ]


def _versions() -> dict[str, str]:
    found = harness.own_versions(["securemcp", "anyio", "trio", "h11", "pydantic", "uvloop"])
    for name, version in harness.peer_versions(["uvloop"]).items():
        found[f"{name} (load generator)"] = version
    sdk = harness.peer_versions(["mcp", "uvicorn", "starlette", "pydantic"], MCP2_PYTHON)
    for name, version in sdk.items():
        found[f"{name} (SDK 2.x server)"] = version
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run M3; print the section; write it into RESULTS.md unless smoke."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_window_options(parser, "every server for about a second")
    # One server's rounds differ by up to 15% on this shared machine (RESULTS.md, "M3
    # target"): nine rounds make the medians, and the target's verdict, steadier.
    parser.set_defaults(runs=9)
    args = parser.parse_args(argv)
    servers = available(args.only)
    load_before = options.settle(args)
    started = time.monotonic()
    runs = harness.Collector()
    for round_number in range(1, args.runs + 1):
        for workload in WORKLOADS:
            for server in servers:
                result = measure(server, workload, args)
                summary = (
                    f"{workload.key}: {result['calls_per_s']:,.0f} calls/s, "
                    f"p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms, "
                    f"server CPU {result['server_cpu_pct']:.0f}%, "
                    f"client CPU {result['client_cpu_pct']:.0f}%  (errors {result['errors']})"
                )
                runs.add(round_number, server.name, workload.key, result, summary)
    meta = runs.meta(
        load_before, _versions(), args.runs, COMMAND,
        warmup=args.warmup, duration=args.duration, idle=0,
    )  # fmt: skip
    section = markdown(runs.results, servers, list(WORKLOADS), TARGETS, meta, intro(meta))
    section += "\n".join(latency_table(runs.results, servers)) + "\n"
    harness.report(args, SECTION, section, meta, runs.results)
    print(f"total {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
