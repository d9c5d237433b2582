"""Every SecureMCP backend and its peers under the same workloads, side by side, in one run.

Each server runs in its own process (pinned to CPU 0 when there are two),
the load generator (``benchmarks/loadgen.py``, the same picows client for
every server) in another (pinned to CPU 1). SecureMCP's servers and the bare
wsproto ceiling run from the project's environment; the peers from
``benchmarks/.venv-peers`` (built by ``benchmarks/setup_peers.sh``). Rounds
are interleaved (every server once, then again) so that drift in a shared
machine's load hits every server alike; every workload gets a freshly started
server process, so that no workload's cost depends on what ran before it
(HARNESS.md: glibc's mmap threshold), and no memory left over hides S4's.

Workloads (seed dialect unless said):

- S1 latency: 1 connection, 1 call in flight, p50/p99;
- S2 throughput: 16 connections x 8 calls in flight, calls/s;
- S3 fan-in: 100 connections x 1 call in flight, calls/s;
- S4 idle: 10,000 idle connections (``--idle``), how many open, server memory (RSS) each;
- S5 large: 256 KiB messages, 4 connections x 2 in flight, calls/s;
- M1, M2, M5: S1, S2 and S5 in the MCP dialect (``tools/call``);
- C1-1, C1-64: *clients* instead of servers: each client library
  (``benchmarks/clients/``) makes closed-loop echo calls over one connection,
  1 or 64 in flight, against one fast server (``C1_SERVER``).

M3 (MCP over Streamable HTTP, against the official SDK 2.x server) has a
driver of its own, ``benchmarks/http_bench.py``: its servers run from three
environments and its client speaks HTTP.

Why another harness ranks some servers differently in S3, and how to study
it (``benchmarks/client_speed.py``, ``--client-work-us``): ``benchmarks/HARNESS.md``.

Usage::

    python benchmarks/run.py                # full run, writes its section of RESULTS.md
    python benchmarks/run.py --smoke        # every server x workload for about a second
    python benchmarks/run.py --only securemcp-trio,nextmcp --workloads S1,S2 --no-write
    python benchmarks/run.py --workloads C1-1,C1-64 --no-write   # the clients only
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# Run as a script, this file finds its sibling modules on sys.path[0]; mypy knows them by package.
if TYPE_CHECKING:
    from benchmarks import harness, options
    from benchmarks.report import Target, fmt, intro, markdown
else:
    import harness
    import options
    from report import Target, fmt, intro, markdown

HERE = harness.HERE
SERVERS_DIR = harness.SERVERS_DIR
CLIENTS_DIR = HERE / "clients"
SECTION = "## Servers and peers over loopback"
COMMAND = "bash benchmarks/setup_peers.sh && .venv/bin/python benchmarks/run.py"


@dataclass(frozen=True)
class Workload:
    """One load shape; ``metric`` is the figure compared, ``lower`` when less is better."""

    key: str
    title: str
    dialect: str
    connections: int
    depth: int
    metric: str
    unit: str
    lower: bool
    payload: int = 0
    idle: bool = False
    """S4: open ``--idle`` connections and weigh them instead of calling."""
    client: bool = False
    """C1: the rows are client libraries against one server, not servers."""
    churn: bool = False
    """S3c (``churn_bench.py``): a new connection per call (the load generator's ``--churn``)."""

    def heading(self, idle: int) -> str:
        """The title, with S4's number of idle connections."""
        return self.title.format(idle=idle)


LARGE = 256 * 1024
WORKLOADS = [
    Workload("S1", "S1 latency: 1 connection, 1 in flight", "seed", 1, 1, "p50_ms", "ms", True),
    Workload("S2", "S2 throughput: 16 connections x 8 in flight", "seed", 16, 8,
             "calls_per_s", "calls/s", False),
    Workload("S3", "S3 fan-in: 100 connections x 1 in flight", "seed", 100, 1,
             "calls_per_s", "calls/s", False),
    Workload("S4", "S4 idle: {idle:,} idle connections", "seed", 0, 0,
             "kib_per_connection", "KiB/conn", True, idle=True),
    Workload("S5", "S5 large: 256 KiB messages, 4 connections x 2 in flight", "seed", 4, 2,
             "calls_per_s", "calls/s", False, payload=LARGE),
    Workload("M1", "M1 (MCP dialect S1): 1 connection, 1 in flight", "mcp", 1, 1,
             "p50_ms", "ms", True),
    Workload("M2", "M2 (MCP dialect S2): 16 connections x 8 in flight", "mcp", 16, 8,
             "calls_per_s", "calls/s", False),
    Workload("M5", "M5 (MCP dialect S5): 256 KiB messages, 4 connections x 2 in flight", "mcp",
             4, 2, "calls_per_s", "calls/s", False, payload=LARGE),
    Workload("C1-1", "C1 clients: 1 connection, 1 call in flight", "seed", 1, 1,
             "calls_per_s", "calls/s", False, client=True),
    Workload("C1-64", "C1 clients: 1 connection, 64 calls in flight", "seed", 1, 64,
             "calls_per_s", "calls/s", False, client=True),
]  # fmt: skip
SEED = ("S1", "S2", "S3", "S4", "S5")
MCP = ("M1", "M2")
OURS = (*SEED, *MCP, "M5")
C1 = ("C1-1", "C1-64")


@dataclass(frozen=True)
class Entry(harness.Server):
    """A server to measure, or for C1 a client: how to start it, which workloads it runs."""

    workloads: tuple[str, ...]
    securemcp: bool = False
    needs: str | None = None
    """A module the project's environment must have (uvloop for the uvloop variant)."""


def _script(name: str) -> str:
    return str(SERVERS_DIR / name)


def _client(name: str) -> str:
    return str(CLIENTS_DIR / name)


SERVERS = [
    Entry("securemcp-asyncio", "SecureMCP on asyncio (asyncio.Protocol path)",
          (_script("securemcp_server.py"), "--backend", "asyncio"), False, OURS, True),
    Entry("securemcp-uvloop", "SecureMCP on uvloop (the same protocol path)",
          (_script("securemcp_server.py"), "--backend", "asyncio+uvloop"), False, OURS,
          True, needs="uvloop"),
    Entry("securemcp-trio", "SecureMCP on trio (anyio path, one task per connection)",
          (_script("securemcp_server.py"), "--backend", "trio"), False, OURS, True),
    Entry("nextmcp", "nextmcp 0.6.0 (the original system), websockets underneath",
          (_script("nextmcp_server.py"),), True, SEED),
    Entry("websockets", "hand-written websockets 17 echo, asyncio",
          (_script("websockets_server.py"),), True, SEED),
    Entry("websockets-uvloop", "hand-written websockets 17 echo, uvloop",
          (_script("websockets_server.py"), "--uvloop"), True, SEED),
    Entry("wsproto-ceiling", "bare wsproto + asyncio.Protocol echo (the ceiling)",
          (_script("wsproto_server.py"),), False, SEED),
    Entry("mcp-sdk", "official MCP SDK 1.x WebSocket server (FastMCP at WARNING, uvicorn)",
          (_script("mcp_sdk_server.py"),), True, MCP),
]  # fmt: skip

CLIENTS = [
    Entry("securemcp-client-asyncio",
          "C1: SecureMCP `WebSocketClient`, asyncio (asyncio.Protocol client)",
          (_client("securemcp_client.py"), "--loop", "asyncio"), False, C1, True),
    Entry("securemcp-client-uvloop", "C1: SecureMCP `WebSocketClient`, uvloop (the same client)",
          (_client("securemcp_client.py"), "--loop", "uvloop"), False, C1, True,
          needs="uvloop"),
    Entry("securemcp-client-trio", "C1: SecureMCP `WebSocketClient`, trio (one reader task)",
          (_client("securemcp_client.py"), "--loop", "trio"), False, C1, True),
    Entry("nextmcp-client", "C1: nextmcp 0.6.0 `WebSocketClient` (the seed's client), asyncio",
          (_client("nextmcp_client.py"), "--loop", "asyncio"), True, C1),
    Entry("websockets-client", "C1: hand-written websockets 17 client, asyncio",
          (_client("websockets_client.py"), "--loop", "asyncio"), True, C1),
    Entry("websockets-client-uvloop", "C1: hand-written websockets 17 client, uvloop",
          (_client("websockets_client.py"), "--loop", "uvloop"), True, C1),
]  # fmt: skip

C1_SERVER = Entry("websockets-uvloop", "the C1 server",
                  (_script("websockets_server.py"), "--uvloop", "--no-compression"), True,
                  C1)  # fmt: skip
C1_FALLBACK = Entry("wsproto-ceiling", "the C1 server without the peers' environment",
                    (_script("wsproto_server.py"),), False, C1)  # fmt: skip
"""C1's one server: the lowest S1 latency of all, and it answers each request as it reads it,
so that the client is what is measured; deflate declined, as the load generator never offers it.
Without the peers' environment (only SecureMCP's clients run then) the ceiling stands in."""

# Issue 12's targets, read off one run's medians.
TARGETS = [
    Target("S3 asyncio >= 1.2 x nextmcp", "securemcp-asyncio", "S3", "nextmcp", 1.2),
    Target("S3 asyncio >= 0.85 x wsproto ceiling", "securemcp-asyncio", "S3", "wsproto-ceiling",
           0.85),
    Target("S3 uvloop >= 1.4 x nextmcp", "securemcp-uvloop", "S3", "nextmcp", 1.4),
    Target("S3 trio >= 1.0 x nextmcp", "securemcp-trio", "S3", "nextmcp", 1.0),
    Target("S1 p50 asyncio <= nextmcp", "securemcp-asyncio", "S1", "nextmcp", 1.0, True),
    Target("S1 p50 trio <= nextmcp", "securemcp-trio", "S1", "nextmcp", 1.0, True),
    Target("S1 p50 asyncio <= 1.1 x wsproto ceiling", "securemcp-asyncio", "S1",
           "wsproto-ceiling", 1.1, True),
    Target("S2 asyncio >= 1.6 x nextmcp", "securemcp-asyncio", "S2", "nextmcp", 1.6),
    Target("S2 uvloop >= websockets (asyncio)", "securemcp-uvloop", "S2", "websockets", 1.0),
    *(
        target
        for backend, most in (("asyncio", 10.0), ("uvloop", 10.0), ("trio", 12.0))
        for target in (
            Target(f"S4 {backend}: every idle connection open at default settings",
                   f"securemcp-{backend}", "S4", None, 1.0, metric="open_share"),
            Target(f"S4 {backend} <= {most:.0f} KiB per idle connection",
                   f"securemcp-{backend}", "S4", None, most, True),
        )
    ),
    *(
        target
        for backend in ("asyncio", "uvloop", "trio")
        for target in (
            Target(f"S5 {backend} >= 1.0 x nextmcp", f"securemcp-{backend}", "S5", "nextmcp"),
            Target(f"M5 {backend} >= 0.8 x S5 {backend}", f"securemcp-{backend}", "M5",
                   f"securemcp-{backend}", 0.8, other_workload="S5"),
        )
    ),
    Target("C1 64 in flight: SecureMCP client (asyncio) >= 1.5 x nextmcp's",
           "securemcp-client-asyncio", "C1-64", "nextmcp-client", 1.5),
    Target("C1 64 in flight: SecureMCP client (trio) >= 1.5 x nextmcp's",
           "securemcp-client-trio", "C1-64", "nextmcp-client", 1.5),
    Target("C1 1 in flight: SecureMCP client (asyncio) >= 1.0 x nextmcp's",
           "securemcp-client-asyncio", "C1-1", "nextmcp-client", 1.0),
    Target("C1 1 in flight: SecureMCP client (trio) >= 1.0 x nextmcp's",
           "securemcp-client-trio", "C1-1", "nextmcp-client", 1.0),
    Target("M2 asyncio >= 5 x MCP SDK (at WARNING)", "securemcp-asyncio", "M2", "mcp-sdk", 5.0),
]  # fmt: skip


def c1_server() -> Entry:
    """The server C1's clients call on this machine."""
    return C1_SERVER if harness.available([C1_SERVER]) else C1_FALLBACK


@contextlib.contextmanager
def running(server: Entry) -> Iterator[tuple[int, int]]:
    """Start ``server`` on port 0, pinned to CPU 0; yield (port, pid); stop it."""
    with harness.running(server.name, server.argv, server.peers_env) as (port, pid):
        yield port, pid


def measure(workload: Workload, port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run the load generator once against a running server; its JSON figures."""
    argv = [
        harness.client_python(), str(HERE / "loadgen.py"),
        "--url", f"ws://127.0.0.1:{port}/", "--server-pid", str(pid),
        "--dialect", workload.dialect,
        "--connections", str(workload.connections), "--depth", str(workload.depth),
        "--payload", str(workload.payload),
        "--warmup", str(args.warmup), "--duration", str(args.duration),
        "--idle", str(args.idle if workload.idle else 0),
        "--client-work-us", str(args.client_work_us),
        *(["--churn"] if workload.churn else []),
    ]  # fmt: skip
    # Opening S4's connections has a budget of 120 s in the load generator.
    return harness.run_client(argv, f"loadgen failed on {workload.key}", 240)


def measure_client(
    client: Entry, workload: Workload, port: int, pid: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Run one C1 client runner once against the running C1 server; its JSON figures."""
    python = str(harness.PEERS_PYTHON) if client.peers_env else sys.executable
    argv = [
        python, *client.argv,
        "--url", f"ws://127.0.0.1:{port}/", "--server-pid", str(pid),
        "--depth", str(workload.depth),
        "--warmup", str(args.warmup), "--duration", str(args.duration),
    ]  # fmt: skip
    return harness.run_client(argv, f"{client.name} failed on {workload.key}", 120)


def one_round(
    servers: Sequence[Entry],
    clients: Sequence[Entry],
    workloads: Sequence[Workload],
    args: argparse.Namespace,
) -> Iterator[tuple[Entry, Workload, dict[str, Any]]]:
    """Every server once over its workloads, then every C1 client.

    Each workload gets a server process of its own: a process's history
    changes what later workloads cost (glibc raises its mmap threshold once a
    large block is freed, after which a server that reads 256 KiB at a time
    stops paying an mmap per read: the ceiling's S3 doubles after an S5;
    HARNESS.md), so every figure is that of a freshly started server.
    """
    warm = next((w for w in WORKLOADS if w.key == args.warm_with), None)
    for server in servers:
        for workload in workloads:
            if workload.key in server.workloads:
                with running(server) as (port, pid):
                    if warm is not None and warm.key in server.workloads:
                        measure(warm, port, pid, args)  # its history only, not measured
                    yield server, workload, measure(workload, port, pid, args)
    c1 = [w for w in workloads if w.client]
    if not (c1 and clients):
        return
    with running(c1_server()) as (port, pid):
        for workload in c1:
            for client in clients:
                yield client, workload, measure_client(client, workload, port, pid, args)


def _versions() -> dict[str, str]:
    found = harness.own_versions(["securemcp", "anyio", "trio", "wsproto", "pydantic", "uvloop"])
    peers = ["picows", "nextmcp", "websockets", "uvloop", "mcp", "uvicorn", "wsproto"]
    for name, version in harness.peer_versions(peers).items():
        found.setdefault(name, version)
        if found[name] != version:
            found[name] += f" (peers: {version})"
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the section; write it into RESULTS.md unless smoke."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_options(parser, "every server x workload, ~1 s")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--idle", type=int, default=10_000, help="S4's idle connections")
    parser.add_argument("--workloads", default="", help="comma-separated workload keys")
    parser.add_argument(
        "--client-work-us",
        type=float,
        default=0.0,
        help="the load generator spins this long per answer (HARNESS.md)",
    )
    parser.add_argument(
        "--warm-with",
        default="",
        help="run this workload first on each server process, unmeasured (HARNESS.md)",
    )
    parser.add_argument(
        "--wait-load",
        type=float,
        default=0.8,
        help="wait (15 min at most) for the 1-minute load to go below",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.warmup, args.duration, args.idle = 1, 0.1, 0.4, 50

    chosen = harness.chosen([*SERVERS, *CLIENTS], args.only)
    servers = [entry for entry in chosen if entry in SERVERS]
    clients = [entry for entry in chosen if entry in CLIENTS]
    workloads = WORKLOADS
    if args.workloads:
        keys = set(args.workloads.split(","))
        workloads = [w for w in WORKLOADS if w.key in keys]

    if not args.smoke:
        options.wait_for_quiet(args.wait_load, 15 * 60)
    load_before = harness.load_average()
    started = time.monotonic()
    runs = harness.Collector()
    for round_number in range(1, args.runs + 1):
        for entry, workload, result in one_round(servers, clients, workloads, args):
            figure = fmt(result[workload.metric], workload.unit)
            summary = f"{figure} {workload.unit}  (errors {result['errors']})"
            if workload.idle:
                summary += f", open {result['connections']}, failed {result['failed']}"
            runs.add(round_number, entry.name, workload.key, result, summary)
    meta = runs.meta(
        load_before, _versions(), args.runs, COMMAND,
        warmup=args.warmup, duration=args.duration, idle=args.idle,
        client_work_us=args.client_work_us, c1_server=c1_server().name,
    )  # fmt: skip
    rows = [*servers, *clients]
    section = markdown(runs.results, rows, workloads, TARGETS, meta, intro(SECTION, meta))
    harness.report(args, SECTION, section, meta, runs.results)
    print(f"total {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
