"""What S6 (``broadcast_bench.py``) and S7 (``redis_bench.py``) share: the broadcast workloads.

One sender and a room of receivers in one client process
(``broadcast_client.py``), against broadcast servers already running; two
workloads, B1 (one message in flight) and B2 (eight). This module runs the
client for each workload, prints and collects its figures, and writes their
table; each benchmark describes its own servers and conditions.

Imported by both (as ``broadcast``, from their own directory); standard
library only, like ``harness``.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# Run as a script, this file finds its sibling modules on sys.path[0]; mypy knows them by package.
if TYPE_CHECKING:
    from benchmarks import harness
else:
    import harness

CLIENT = harness.HERE / "broadcast_client.py"


@dataclass(frozen=True)
class Workload:
    """One load shape: messages not yet delivered everywhere at most ``window``."""

    key: str
    title: str
    window: int


WORKLOADS = [
    Workload("B1", "B1 paced: 1 message in flight", 1),
    Workload("B2", "B2 saturated: 8 messages in flight", 8),
]


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of the broadcast part: the room's size and the messages per run."""
    parser.add_argument("--receivers", type=int, default=500)
    parser.add_argument("--messages", type=int, default=400, help="measured messages per run")
    parser.add_argument("--warmup-messages", type=int, default=40)
    parser.add_argument("--stall", type=float, default=20.0, help="seconds without progress")


def smoke(args: argparse.Namespace) -> None:
    """``--smoke``: 20 receivers, a few messages, one run."""
    args.receivers, args.messages, args.warmup_messages, args.runs = 20, 20, 4, 1


def meta(args: argparse.Namespace) -> dict[str, Any]:
    """The report's conditions of the broadcast part."""
    return {"receivers": args.receivers, "warmup": args.warmup_messages, "messages": args.messages}


def measure(
    servers: Sequence[tuple[int, int]],
    workload: Workload,
    args: argparse.Namespace,
    redis_pid: int = 0,
) -> dict[str, Any]:
    """Run the client once against running servers, each (port, pid); its JSON figures."""
    argv = [harness.client_python(), str(CLIENT)]
    for port, pid in servers:
        argv += ["--url", f"ws://127.0.0.1:{port}/", "--server-pid", str(pid)]
    argv += [
        "--redis-pid", str(redis_pid), "--receivers", str(args.receivers),
        "--window", str(workload.window), "--warmup", str(args.warmup_messages),
        "--messages", str(args.messages), "--stall", str(args.stall),
    ]  # fmt: skip
    return harness.run_client(argv, f"client failed on {workload.key}", 600)


def measure_all(
    runs: harness.Collector,
    round_number: int,
    name: str,
    servers: Sequence[tuple[int, int]],
    args: argparse.Namespace,
    redis_pid: int = 0,
) -> None:
    """Every workload against the running ``servers``, collected under ``name``."""
    for workload in WORKLOADS:
        result = measure(servers, workload, args, redis_pid)
        runs.add(round_number, name, workload.key, result, summary(result))


def summary(result: dict[str, Any]) -> str:
    """One run's figures for the progress line."""
    redis = f" redis {result['redis_cpu_pct']:.0f}%" if "redis_cpu_pct" in result else ""
    return (
        f"{result['deliveries_per_s']:,.0f} deliveries/s, lag p50 "
        f"{result['lag_p50_ms']:.2f} ms max {result['lag_max_ms']:.2f} ms, "
        f"CPU server {result['server_cpu_pct']:.0f}% client {result['client_cpu_pct']:.0f}%"
        f"{redis} (errors {result['errors']})"
    )


def cpu_per_delivery(run: dict[str, Any]) -> float:
    """The servers' CPU microseconds per receiver delivery in one run's figures.

    Less sensitive than deliveries/s to other processes taking the server's
    core: CPU time counts only what the servers themselves ran.
    """
    rate: float = run["deliveries_per_s"]
    return run["server_cpu_pct"] * 1e4 / rate if rate else 0.0


def workload_table(
    results: harness.Results, names: Sequence[str], workload: Workload, *, redis: bool = False
) -> list[str]:
    """The lines of ``workload``'s table: a row per server name that ran it (none: no table).

    ``redis`` adds the Redis server's CPU and the servers' CPU per delivery (S7).
    """
    rows = [name for name in names if (name, workload.key) in results]
    if not rows:
        return []
    extra = " redis CPU | server CPU us / delivery |" if redis else ""
    lines = [
        "",
        f"### {workload.title}",
        "",
        "| server | deliveries/s (higher is better) | min - max | lag p50 ms | lag max ms "
        f"| server CPU | client CPU |{extra} errors |",
        "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * (3 if redis else 1),
    ]
    for name in rows:
        runs = results[(name, workload.key)]
        rates = [r["deliveries_per_s"] for r in runs]
        p50 = statistics.median(r["lag_p50_ms"] for r in runs)
        worst = max(r["lag_max_ms"] for r in runs)
        redis_cpu = (
            f" {statistics.median(r.get('redis_cpu_pct', 0.0) for r in runs):.0f}% | "
            f"{statistics.median(cpu_per_delivery(r) for r in runs):.1f} |"
            if redis
            else ""
        )
        lines.append(
            f"| `{name}` | **{statistics.median(rates):,.0f}** | "
            f"{min(rates):,.0f} - {max(rates):,.0f} | {p50:.2f} | {worst:.2f} | "
            f"{statistics.median(r['server_cpu_pct'] for r in runs):.0f}% | "
            f"{statistics.median(r['client_cpu_pct'] for r in runs):.0f}% |{redis_cpu} "
            f"{sum(r['errors'] for r in runs)} |"
        )
    return lines
