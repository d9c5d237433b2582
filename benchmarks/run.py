"""Every SecureMCP backend and its peers under the same workloads, side by side, in one run.

Each server runs in its own process (pinned to CPU 0 when there are two),
the load generator (``benchmarks/loadgen.py``, the same picows client for
every server) in another (pinned to CPU 1). SecureMCP's servers and the bare
wsproto ceiling run from the project's environment; the peers from
``benchmarks/.venv-peers`` (built by ``benchmarks/setup_peers.sh``). Rounds
are interleaved (every server once, then again) so that drift in a shared
machine's load hits every server alike; S4 gets a fresh server process of its
own, so that memory left over from other workloads does not hide its cost.

Workloads (seed dialect unless said):

- S1 latency: 1 connection, 1 call in flight, p50/p99;
- S2 throughput: 16 connections x 8 calls in flight, calls/s;
- S3 fan-in: 100 connections x 1 call in flight, calls/s;
- S4 idle: 2,000 idle connections, server memory (RSS) per connection;
- S5 large: 256 KiB messages, 4 connections x 2 in flight, calls/s;
- M1, M2: S1 and S2 in the MCP dialect (``tools/call``).

Usage::

    python benchmarks/run.py                # full run, writes its section of RESULTS.md
    python benchmarks/run.py --smoke        # every server x workload for about a second
    python benchmarks/run.py --only securemcp-trio,nextmcp --workloads S1,S2 --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# Run as a script, this file finds its sibling module on sys.path[0]; mypy knows it by package.
if TYPE_CHECKING:
    from benchmarks import harness
else:
    import harness

HERE = harness.HERE
SERVERS_DIR = harness.SERVERS_DIR
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
    idle: int = 0


WORKLOADS = [
    Workload("S1", "S1 latency: 1 connection, 1 in flight", "seed", 1, 1, "p50_ms", "ms", True),
    Workload("S2", "S2 throughput: 16 connections x 8 in flight", "seed", 16, 8,
             "calls_per_s", "calls/s", False),
    Workload("S3", "S3 fan-in: 100 connections x 1 in flight", "seed", 100, 1,
             "calls_per_s", "calls/s", False),
    Workload("S4", "S4 idle: 2,000 idle connections", "seed", 0, 0,
             "kib_per_connection", "KiB/conn", True, idle=2000),
    Workload("S5", "S5 large: 256 KiB messages, 4 connections x 2 in flight", "seed", 4, 2,
             "calls_per_s", "calls/s", False, payload=256 * 1024),
    Workload("M1", "M1 (MCP dialect S1): 1 connection, 1 in flight", "mcp", 1, 1,
             "p50_ms", "ms", True),
    Workload("M2", "M2 (MCP dialect S2): 16 connections x 8 in flight", "mcp", 16, 8,
             "calls_per_s", "calls/s", False),
]  # fmt: skip
SEED = ("S1", "S2", "S3", "S4", "S5")
MCP = ("M1", "M2")


@dataclass(frozen=True)
class Server(harness.Server):
    """A server to measure: how to start it and which workloads it speaks."""

    workloads: tuple[str, ...]
    securemcp: bool = False
    needs: str | None = None
    """A module the project's environment must have (uvloop for the uvloop variant)."""


def _script(name: str) -> str:
    return str(SERVERS_DIR / name)


SERVERS = [
    Server("securemcp-asyncio", "SecureMCP, anyio on asyncio",
           (_script("securemcp_server.py"), "--backend", "asyncio"), False, SEED + MCP, True),
    Server("securemcp-uvloop", "SecureMCP, anyio on asyncio with uvloop",
           (_script("securemcp_server.py"), "--backend", "asyncio+uvloop"), False, SEED + MCP,
           True, needs="uvloop"),
    Server("securemcp-trio", "SecureMCP, anyio on trio",
           (_script("securemcp_server.py"), "--backend", "trio"), False, SEED + MCP, True),
    Server("nextmcp", "nextmcp 0.6.0 (the original system), websockets underneath",
           (_script("nextmcp_server.py"),), True, SEED),
    Server("websockets", "hand-written websockets 17 echo, asyncio",
           (_script("websockets_server.py"),), True, SEED),
    Server("websockets-uvloop", "hand-written websockets 17 echo, uvloop",
           (_script("websockets_server.py"), "--uvloop"), True, SEED),
    Server("wsproto-ceiling", "bare wsproto + asyncio.Protocol echo (the ceiling)",
           (_script("wsproto_server.py"),), False, SEED),
    Server("mcp-sdk", "official MCP SDK 1.x WebSocket server (FastMCP, uvicorn)",
           (_script("mcp_sdk_server.py"),), True, MCP),
]  # fmt: skip


@contextlib.contextmanager
def running(server: Server) -> Iterator[tuple[int, int]]:
    """Start ``server`` on port 0, pinned to CPU 0; yield (port, pid); stop it."""
    with harness.running(server.name, server.argv, server.peers_env) as (port, pid):
        yield port, pid


def measure(
    workload: Workload, port: int, pid: int, *, warmup: float, duration: float, idle: int
) -> dict[str, Any]:
    """Run the load generator once against a running server; its JSON figures."""
    argv = [
        harness.client_python(), str(HERE / "loadgen.py"),
        "--url", f"ws://127.0.0.1:{port}/", "--server-pid", str(pid),
        "--dialect", workload.dialect,
        "--connections", str(workload.connections), "--depth", str(workload.depth),
        "--payload", str(workload.payload),
        "--warmup", str(warmup), "--duration", str(duration),
        "--idle", str(idle if workload.idle else 0),
    ]  # fmt: skip
    return harness.run_client(argv, f"loadgen failed on {workload.key}", 120)


def one_round(
    servers: Sequence[Server], workloads: Sequence[Workload], args: argparse.Namespace
) -> Iterator[tuple[Server, Workload, dict[str, Any]]]:
    """Every server once over its workloads: S4 on a fresh process, the rest on another."""
    for server in servers:
        mine = [w for w in workloads if w.key in server.workloads]
        idle = [w for w in mine if w.idle]
        busy = [w for w in mine if not w.idle]
        for group in (idle, busy):
            if not group:
                continue
            with running(server) as (port, pid):
                for workload in group:
                    result = measure(
                        workload, port, pid,
                        warmup=args.warmup, duration=args.duration, idle=args.idle,
                    )  # fmt: skip
                    yield server, workload, result


load_average = harness.load_average


def wait_for_quiet(threshold: float, patience: float) -> None:
    """Poll every 30 s until the 1-minute load is under ``threshold``, for ``patience`` s."""
    deadline = time.monotonic() + patience
    while load_average() >= threshold and time.monotonic() < deadline:
        print(f"load {load_average():.2f} >= {threshold}: waiting", file=sys.stderr, flush=True)
        time.sleep(30)


# Reporting


def _versions() -> dict[str, str]:
    found = harness.own_versions(["securemcp", "anyio", "trio", "wsproto", "pydantic", "uvloop"])
    peers = ["picows", "nextmcp", "websockets", "uvloop", "mcp", "uvicorn", "wsproto"]
    for name, version in harness.peer_versions(peers).items():
        found.setdefault(name, version)
        if found[name] != version:
            found[name] += f" (peers: {version})"
    return found


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.3f}"
    if unit == "KiB/conn":
        return f"{value:.1f}"
    return f"{value:,.0f}"


def summarise(runs: list[dict[str, Any]], metric: str) -> tuple[float, float, float]:
    """Median, min and max of ``metric`` over the runs."""
    values = [run[metric] for run in runs]
    return statistics.median(values), min(values), max(values)


def markdown(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    servers: Sequence[Server],
    workloads: Sequence[Workload],
    meta: dict[str, Any],
) -> str:
    """The RESULTS.md section: conditions, one table per workload, the ratios, the targets."""
    lines = [
        SECTION,
        "",
        "Each server in its own process pinned to CPU 0, the load generator in another pinned to "
        "CPU 1: `benchmarks/loadgen.py`, the same client for every server "
        f"({meta['client']}). Closed loop: every connection keeps its calls in flight and sends "
        f"the next one as an answer arrives; {meta['warmup']} s of warm-up, then a "
        f"{meta['duration']} s window. {meta['runs']} runs of each, rounds interleaved (every "
        "server, then again); medians with the min - max range. `server CPU` and `loadgen CPU` "
        "are the busy share of one core during the window: a loadgen well under 100% is not "
        "the bottleneck. S4 opens its connections on a fresh server process after a short "
        "warm-up and divides the growth of the server's resident memory (VmRSS) by their number."
        " SecureMCP servers run with `Limits(max_message_size=4 MiB)` and "
        "`max_connections=10_000`, every other setting at its default (keepalive pings every "
        "20 s included); the peers run with their defaults (websockets `max_size` raised to "
        "4 MiB in the hand-written server).",
        "",
        *harness.conditions(
            meta, "before the run", "(the machine is shared: compare ratios within this run)"
        ),
    ]
    lines += [f"- `{server.name}`: {server.description}" for server in servers]
    for workload in workloads:
        rows = [s for s in servers if (s.name, workload.key) in results]
        if not rows:
            continue
        better = "lower is better" if workload.lower else "higher is better"
        lines += ["", f"### {workload.title}", ""]
        if workload.idle:
            lines += [
                f"| server | {workload.unit} ({better}) | min - max | RSS before -> after (MiB) "
                "| connections open |",
                "|---|---:|---:|---:|---:|",
            ]
        else:
            extra = " | p99 ms | calls/s" if workload.unit == "ms" else ""
            lines += [
                f"| server | {workload.unit} ({better}) | min - max{extra} | server CPU "
                "| loadgen CPU | errors |",
                "|---|---:|---:|" + ("---:|---:|" if extra else "") + "---:|---:|---:|",
            ]
        for server in rows:
            runs = results[(server.name, workload.key)]
            median, low, high = summarise(runs, workload.metric)
            cells = [
                f"`{server.name}`",
                f"**{_fmt(median, workload.unit)}**",
                f"{_fmt(low, workload.unit)} - {_fmt(high, workload.unit)}",
            ]
            if workload.idle:
                before = statistics.median(r["rss_before_kib"] for r in runs) / 1024
                after = statistics.median(r["rss_after_kib"] for r in runs) / 1024
                cells += [f"{before:.1f} -> {after:.1f}", str(min(r["connections"] for r in runs))]
            else:
                if workload.unit == "ms":
                    cells.append(f"{statistics.median(r['p99_ms'] for r in runs):.3f}")
                    cells.append(f"{statistics.median(r['calls_per_s'] for r in runs):,.0f}")
                cells.append(f"{statistics.median(r['server_cpu_pct'] for r in runs):.0f}%")
                cells.append(f"{statistics.median(r['client_cpu_pct'] for r in runs):.0f}%")
                cells.append(str(sum(r["errors"] for r in runs)))
            lines.append("| " + " | ".join(cells) + " |")
    lines += ratio_table(results, servers, workloads)
    lines += targets(results)
    return "\n".join(lines) + "\n"


def _median(
    results: dict[tuple[str, str], list[dict[str, Any]]], server: str, workload: Workload
) -> float | None:
    runs = results.get((server, workload.key))
    return None if not runs else summarise(runs, workload.metric)[0]


def ratio_table(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    servers: Sequence[Server],
    workloads: Sequence[Workload],
) -> list[str]:
    """SecureMCP / peer for every workload both ran (ratio of the medians)."""
    ours = [s for s in servers if s.securemcp]
    peers = [s for s in servers if not s.securemcp]
    shown = [w for w in workloads if any((s.name, w.key) in results for s in servers)]
    lines = [
        "",
        "### Ratios SecureMCP / peer",
        "",
        "Ratio of the medians, per workload. Throughput (S2, S3, S5, M2): above 1 SecureMCP is "
        "faster. Latency and memory (S1, S4, M1): below 1 SecureMCP is better.",
        "",
        "| SecureMCP / peer | " + " | ".join(w.key for w in shown) + " |",
        "|---|" + "---:|" * len(shown),
    ]
    for peer in peers:
        for mine in ours:
            cells = []
            for workload in shown:
                a = _median(results, mine.name, workload)
                b = _median(results, peer.name, workload)
                cells.append("" if a is None or b is None or b == 0 else f"{a / b:.2f}")
            if any(cells):
                lines.append(f"| `{mine.name}` / `{peer.name}` | " + " | ".join(cells) + " |")
    return lines


TARGETS = [
    # (label, ours, workload, peer, factor, kind) with kind ">=" ratio >= factor, "<=" ratio <=.
    ("S2 asyncio >= 1.5 x nextmcp", "securemcp-asyncio", "S2", "nextmcp", 1.5, ">="),
    ("S2 asyncio >= 0.8 x wsproto ceiling", "securemcp-asyncio", "S2", "wsproto-ceiling", 0.8,
     ">="),
    ("S2 uvloop >= websockets on uvloop", "securemcp-uvloop", "S2", "websockets-uvloop", 1.0,
     ">="),
    ("S2 trio >= 1.2 x nextmcp", "securemcp-trio", "S2", "nextmcp", 1.2, ">="),
    ("S1 p50 asyncio <= nextmcp", "securemcp-asyncio", "S1", "nextmcp", 1.0, "<="),
    ("S1 p50 asyncio <= 1.2 x wsproto ceiling", "securemcp-asyncio", "S1", "wsproto-ceiling",
     1.2, "<="),
    ("S5 asyncio >= nextmcp", "securemcp-asyncio", "S5", "nextmcp", 1.0, ">="),
    ("M2 asyncio >= 5 x MCP SDK", "securemcp-asyncio", "M2", "mcp-sdk", 5.0, ">="),
]  # fmt: skip


def targets(results: dict[tuple[str, str], list[dict[str, Any]]]) -> list[str]:
    """The issue's targets, each met or not, from this run's medians."""
    by_key = {w.key: w for w in WORKLOADS}
    lines = ["", "### Targets", "", "| target | ratio | met |", "|---|---:|:---:|"]
    for label, ours, key, peer, factor, kind in TARGETS:
        a = _median(results, ours, by_key[key])
        b = _median(results, peer, by_key[key])
        if a is None or b is None or b == 0:
            continue
        ratio = a / b
        met = ratio >= factor if kind == ">=" else ratio <= factor
        lines.append(f"| {label} | {ratio:.2f} | {'yes' if met else '**no**'} |")
    for name in ("securemcp-asyncio", "securemcp-uvloop", "securemcp-trio"):
        value = _median(results, name, by_key["S4"])
        if value is not None:
            verdict = "yes" if value <= 10 else "**no**"
            lines.append(
                f"| S4 {name} <= 10 KiB per idle connection | {value:.1f} KiB | {verdict} |"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the section; write it into RESULTS.md unless smoke."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_options(parser, "every server x workload, ~1 s")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--idle", type=int, default=2000, help="S4's idle connections")
    parser.add_argument("--workloads", default="", help="comma-separated workload keys")
    parser.add_argument("--wait-load", type=float, default=0.8,
                        help="wait (15 min at most) for the 1-minute load to go below")  # fmt: skip
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.warmup, args.duration, args.idle = 1, 0.1, 0.4, 50

    servers = harness.chosen(SERVERS, args.only)
    workloads = WORKLOADS
    if args.workloads:
        keys = set(args.workloads.split(","))
        workloads = [w for w in WORKLOADS if w.key in keys]

    if not args.smoke:
        wait_for_quiet(args.wait_load, 15 * 60)
    load_before = load_average()
    started = time.monotonic()
    runs = harness.Collector()
    for round_number in range(1, args.runs + 1):
        for server, workload, result in one_round(servers, workloads, args):
            figure = _fmt(result[workload.metric], workload.unit)
            summary = f"{figure} {workload.unit}  (errors {result['errors']})"
            runs.add(round_number, server.name, workload.key, result, summary)
    meta = runs.meta(
        load_before, _versions(), args.runs, COMMAND, warmup=args.warmup, duration=args.duration
    )
    section = markdown(runs.results, servers, workloads, meta)
    harness.report(args, SECTION, section, meta, runs.results)
    print(f"total {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
