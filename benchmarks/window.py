"""The measurement window every closed-loop client shares: counters, CPU on both sides, figures.

Imported by ``benchmarks/loadgen.py``, ``benchmarks/broadcast_client.py``,
``benchmarks/redis_history.py`` and the C1 client runners in
``benchmarks/clients/`` (as ``window``, from their own directory or with it
put on ``sys.path``). They run in the peers'
environment or the project's, on asyncio or trio: so this is standard library
only, and waits with the ``sleep`` it is given.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far, from ``/proc``."""
    with open(f"/proc/{pid}/stat") as file:
        stat = file.read()
    # The command name may hold spaces; the fields after its closing parenthesis do not.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Stats:
    """What the calls record while the window is open.

    A caller counts an answer only while ``measuring``, and sends its next
    call only while ``running``.
    """

    measuring: bool = False
    running: bool = True
    calls: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)

    def answered(self, latency: float, ok: bool) -> None:
        """One call came back after ``latency`` seconds, with the right answer or not."""
        if self.measuring:
            if ok:
                self.calls += 1
                self.latencies.append(latency)
            else:
                self.errors += 1


def percentile(ordered: list[float], fraction: float) -> float:
    """The value at ``fraction`` of a sorted list (nearest rank); 0 when empty."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(
    stats: Stats,
    sleep: Callable[[float], Awaitable[Any]],
    *,
    warmup: float,
    duration: float,
    server_pid: int,
) -> dict[str, Any]:
    """Let the calls warm up, open the window for ``duration`` s, stop the calls; the figures.

    The CPU time of this process (``client_cpu_pct``) and of the server is
    taken at both ends of the window, so that the report shows which side was
    busy: a client well under 100% is not the bottleneck.
    """
    await sleep(warmup)
    stats.measuring = True
    cpu0, server0, wall0 = time.process_time(), server_cpu_seconds(server_pid), time.time()
    await sleep(duration)
    stats.measuring = False
    cpu1, server1, wall1 = time.process_time(), server_cpu_seconds(server_pid), time.time()
    stats.running = False
    elapsed = wall1 - wall0
    ordered = sorted(stats.latencies)
    return {
        "calls": stats.calls,
        "errors": stats.errors,
        "seconds": elapsed,
        "calls_per_s": stats.calls / elapsed,
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "client_cpu_pct": 100 * (cpu1 - cpu0) / elapsed,
        "server_cpu_pct": 100 * (server1 - server0) / elapsed,
    }
