"""S3c: a WebSocket connection per call, SecureMCP against the peers of ``run.py``'s S3.

The worst case for a server's set-up and tear-down: 64 clients at a time, each
opening a connection (TCP, the upgrade, the seed dialect's welcome), making one
``invoke_tool`` call of ``echo``, and closing it on the answer, closed loop
(the load generator's ``--churn``). The servers are ``run.py``'s that speak
the seed dialect, each in its own process pinned to CPU 0, a fresh one per
run; the load generator (picows on uvloop, checking every answer) pinned to
CPU 1; rounds interleaved, medians of ``--runs``. Besides calls/s, the section
gives each server's CPU time per call: a loop this latency-bound may leave
both sides short of a full CPU, and then CPU per call is what compares the
servers' own cost.

Usage::

    python benchmarks/churn_bench.py              # 3 runs, writes its section of RESULTS.md
    python benchmarks/churn_bench.py --smoke      # every server for about a second
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

# Run as a script, this file finds its sibling modules on sys.path[0]; mypy knows them by package.
if TYPE_CHECKING:
    from benchmarks import harness, options
    from benchmarks.report import fmt, markdown
    from benchmarks.run import SERVERS, Entry, Workload, measure
else:
    import harness
    import options
    from report import fmt, markdown
    from run import SERVERS, Entry, Workload, measure

SECTION = "## S3c WebSocket: one call per connection"
COMMAND = "bash benchmarks/setup_peers.sh && .venv/bin/python benchmarks/churn_bench.py"

S3C = Workload(
    "S3c", "S3c churn: one call per WebSocket connection, 64 at a time", "seed", 64, 1,
    "calls_per_s", "calls/s", False, churn=True,
)  # fmt: skip
SEED_SERVERS = [entry for entry in SERVERS if "S3" in entry.workloads]
"""``run.py``'s servers of the seed dialect: SecureMCP's, nextmcp, websockets, bare wsproto."""


def cpu_table(results: harness.Results, servers: Sequence[Entry]) -> list[str]:
    """Each server's CPU time per call (medians over the runs), and its ratio to SecureMCP's."""
    lines = [
        "",
        "### S3c server CPU per call (lower is better)",
        "",
        "| server | µs of CPU per call | server / `securemcp-asyncio` |",
        "|---|---:|---:|",
    ]
    per_call = {}
    for server in servers:
        runs = results.get((server.name, S3C.key), [])
        costs = [1e4 * run["server_cpu_pct"] / run["calls_per_s"] for run in runs if run["calls"]]
        if costs:
            per_call[server.name] = sorted(costs)[len(costs) // 2]
    ours = per_call.get("securemcp-asyncio")
    for name, cost in per_call.items():
        ratio = f"{cost / ours:.2f}" if ours else ""
        lines.append(f"| `{name}` | {cost:.0f} | {ratio} |")
    return lines


def intro(meta: dict[str, Any]) -> list[str]:
    """The section's heading and how it was measured."""
    return [
        SECTION,
        "",
        "The seed dialect's `invoke_tool` of `echo`, each call on a WebSocket connection of its "
        "own: 64 clients at a time, each opening a connection (TCP, the upgrade, the welcome), "
        "making one call, closing it on the answer and opening the next (closed loop): the "
        "worst case for a server's set-up and tear-down, many short-lived clients. Each server "
        "in its own process pinned to CPU 0, a fresh process per run; the load generator "
        f"(`benchmarks/loadgen.py --churn`, {meta['client']}) pinned to CPU 1. "
        f"{meta['warmup']} s of warm-up, then a {meta['duration']} s window; {meta['runs']} runs, "
        "rounds interleaved, medians with the min - max range. Every answer is checked (the echo "
        "of the message sent); a connection that fails to open or closes before its answer is "
        "an error. p50 is the call's own latency, the connection's opening not included. Every "
        "server at its defaults, as in the section above. `server CPU` and `client CPU` are the "
        "busy share of one core during the window: when neither is near 100%, the round trips "
        "bound the rate, and the CPU per call (last table) is what compares the servers.",
        "",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run S3c; print the section; write it into RESULTS.md unless smoke."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_window_options(parser, "every server for about a second")
    args = parser.parse_args(argv)
    args.idle, args.client_work_us = 0, 0.0  # what run.measure passes on
    servers = harness.chosen(SEED_SERVERS, args.only)
    load_before = options.settle(args)
    started = time.monotonic()
    runs = harness.Collector()
    for round_number in range(1, args.runs + 1):
        for server in servers:
            with harness.running(server.name, server.argv, server.peers_env) as (port, pid):
                result = measure(S3C, port, pid, args)
            summary = (
                f"{fmt(result['calls_per_s'], 'calls/s')} calls/s, "
                f"server CPU {result['server_cpu_pct']:.0f}%, "
                f"client CPU {result['client_cpu_pct']:.0f}%  (errors {result['errors']})"
            )
            runs.add(round_number, server.name, S3C.key, result, summary)
    meta = runs.meta(
        load_before, harness.own_versions(["securemcp", "wsproto"]), args.runs, COMMAND,
        warmup=args.warmup, duration=args.duration, idle=0,
    )  # fmt: skip
    section = markdown(runs.results, servers, [S3C], [], meta, intro(meta))
    section += "\n".join(cpu_table(runs.results, servers)) + "\n"
    harness.report(args, SECTION, section, meta, runs.results)
    print(f"total {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
