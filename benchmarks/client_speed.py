"""How the load generator's speed moves S3's figures: the study behind ``benchmarks/HARNESS.md``.

S3 (100 connections x 1 call in flight) against each server while the load
generator spins ``--work`` microseconds per answer (``loadgen.py
--client-work-us``): 0 is the published configuration, a fast client that
sleeps between answers; more is a slower client, such as another harness's.
Rounds are interleaved (every work value x every server, then again);
medians of the runs. Besides calls/s the table gives the server's CPU time
per call, which stays comparable when the client is the bottleneck.

``--profile`` then samples each server with py-spy (from the peers'
environment) during one more S3 per work value, and gives the share of its
samples on the lines of asyncio's socket transport that call ``send()`` and
``recv()``: where a write that wakes a sleeping peer costs. Servers on
uvloop make those calls in C, out of py-spy's sight: profile asyncio ones.

Usage::

    python benchmarks/client_speed.py [--work 0,25,50,100] [--runs 3] [--profile] \\
        [--only wsproto-ceiling,securemcp-asyncio]
"""

from __future__ import annotations

import argparse
import asyncio.selector_events
import collections
import inspect
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Run as a script, this file finds its sibling modules on sys.path[0]; mypy knows them by package.
if TYPE_CHECKING:
    from benchmarks import harness, run
else:
    import harness
    import run

PY_SPY = harness.HERE / ".venv-peers" / "bin" / "py-spy"
DEFAULT_SERVERS = "wsproto-ceiling,securemcp-asyncio,nextmcp,websockets"


def syscall_lines() -> dict[str, set[int]]:
    """The lines of ``asyncio/selector_events.py`` that call ``send`` and ``recv`` on a socket."""
    source = Path(inspect.getfile(asyncio.selector_events)).read_text().splitlines()
    found: dict[str, set[int]] = {"send": set(), "recv": set()}
    for number, line in enumerate(source, 1):
        for call in found:
            if f"._sock.{call}(" in line or f"._sock.{call}_into(" in line:
                found[call].add(number)
    return found


def shares(raw: str, lines: dict[str, set[int]]) -> dict[str, float]:
    """Share of py-spy's samples (``-f raw``) whose innermost frame is each kind of call."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for row in raw.splitlines():
        stack, _, number = row.rpartition(" ")
        if not stack:
            continue
        total += int(number)
        leaf = stack.rsplit(";", 1)[-1]
        if "asyncio/selector_events.py:" in leaf:
            line = int(leaf.rsplit(":", 1)[1].rstrip(")"))
            for call, numbers in lines.items():
                if line in numbers:
                    counts[call] += int(number)
    return {call: 100 * counts[call] / total if total else 0.0 for call in lines}


def profile(server: run.Entry, work: float, args: argparse.Namespace) -> dict[str, float]:
    """Sample ``server`` with py-spy for 4 s inside an S3 window at ``work`` us per answer."""
    s3 = next(w for w in run.WORKLOADS if w.key == "S3")
    loadgen_args = argparse.Namespace(**{**vars(args), "warmup": 1.0, "duration": 6.0,
                                         "client_work_us": work})  # fmt: skip
    with run.running(server) as (port, pid), tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.txt"
        samplers: list[subprocess.Popen[bytes]] = []
        # Pinned with the load generator, so that sampling takes no CPU from the server;
        # started once the load generator has connected and warmed up.
        start = threading.Timer(1.5, lambda: samplers.append(subprocess.Popen(
            [str(PY_SPY), "record", "-r", "500", "-f", "raw", "-d", "4", "-p", str(pid),
             "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=lambda: harness.pin(1),
        )))  # fmt: skip
        start.start()
        run.measure(s3, port, pid, loadgen_args)
        start.join()
        samplers[0].wait(30)
        return shares(out.read_text(), syscall_lines())


def sweep(
    servers: Sequence[run.Entry], works: Sequence[float], args: argparse.Namespace
) -> dict[tuple[str, float], list[dict[str, Any]]]:
    """S3 for every server and work value, rounds interleaved; the figures of each run."""
    s3 = next(w for w in run.WORKLOADS if w.key == "S3")
    results: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for round_number in range(1, args.runs + 1):
        for work in works:
            for server in servers:
                with run.running(server) as (port, pid):
                    figures = run.measure(
                        s3, port, pid, argparse.Namespace(**{**vars(args), "client_work_us": work})
                    )
                results.setdefault((server.name, work), []).append(figures)
                print(f"[round {round_number}] {server.name:18} work {work:g} us: "
                      f"{figures['calls_per_s']:,.0f} calls/s, server "
                      f"{figures['server_cpu_pct']:.0f}%, client {figures['client_cpu_pct']:.0f}%",
                      file=sys.stderr, flush=True)  # fmt: skip
    return results


def table(
    results: dict[tuple[str, float], list[dict[str, Any]]],
    servers: Sequence[run.Entry],
    works: Sequence[float],
    profiles: dict[tuple[str, float], dict[str, float]],
) -> list[str]:
    """The study's Markdown table: a line per server and work value."""
    lines = [
        "| server | client work us/answer | calls/s | server CPU | client CPU "
        "| server CPU us/call | send() share | recv() share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for server in servers:
        for work in works:
            runs = results[(server.name, work)]
            rate = statistics.median(r["calls_per_s"] for r in runs)
            server_cpu = statistics.median(r["server_cpu_pct"] for r in runs)
            client_cpu = statistics.median(r["client_cpu_pct"] for r in runs)
            per_call = statistics.median(
                1e4 * r["server_cpu_pct"] / r["calls_per_s"] for r in runs if r["calls_per_s"]
            )
            shown = profiles.get((server.name, work))
            syscalls = (
                f"{shown['send']:.0f}% | {shown['recv']:.0f}%" if shown is not None else " | "
            )
            lines.append(
                f"| `{server.name}` | {work:g} | {rate:,.0f} | {server_cpu:.0f}% | "
                f"{client_cpu:.0f}% | {per_call:.1f} | {syscalls} |"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep (and the profiles); print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="0,25,50,100", help="us per answer, comma-separated")
    parser.add_argument("--only", default=DEFAULT_SERVERS, help="comma-separated server names")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--profile", action="store_true", help="py-spy each server (root)")
    args = parser.parse_args(argv)
    if args.profile and not PY_SPY.exists():
        parser.error(f"--profile needs py-spy at {PY_SPY} (bash benchmarks/setup_peers.sh)")
    args.idle = 0
    works = [float(value) for value in args.work.split(",")]
    servers = harness.chosen(run.SERVERS, args.only)
    started = time.monotonic()
    load_before = harness.load_average()
    results = sweep(servers, works, args)
    profiles: dict[tuple[str, float], dict[str, float]] = {}
    if args.profile:
        for server in servers:
            for work in works:
                profiles[(server.name, work)] = profile(server, work, args)
    print("\n".join(table(results, servers, works, profiles)))
    print(
        f"\n{args.runs} runs, medians; 1-minute load {load_before:.2f} before, "
        f"{harness.load_average():.2f} after; {time.monotonic() - started:.0f} s",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
