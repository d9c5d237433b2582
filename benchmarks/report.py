"""The RESULTS.md section of ``benchmarks/run.py``: how, conditions, tables, ratios, targets.

Imported by ``run.py`` (as ``report``, from its own directory); it only
formats figures that are already measured.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

# Run as a script, run.py finds this module's siblings on sys.path[0]; mypy knows them by package.
if TYPE_CHECKING:
    from benchmarks import harness
else:
    import harness


class Workload(Protocol):
    """What the report needs to know of a workload (``run.Workload``)."""

    @property
    def key(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def lower(self) -> bool: ...
    @property
    def idle(self) -> bool: ...
    @property
    def client(self) -> bool: ...

    def heading(self, idle: int) -> str:
        """The workload's title, with S4's number of idle connections."""
        ...


class Row(Protocol):
    """A server or a C1 client, as the report names it."""

    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def securemcp(self) -> bool: ...


@dataclass(frozen=True)
class Target:
    """One of the issue's targets: a median of ``ours`` on ``workload`` against a bound.

    With ``other``, the bound is ``factor`` x the median of ``other`` on
    ``other_workload`` (the same workload unless given); without, ``factor``
    is the bound itself. Met when the ratio (or the figure) is at least the
    bound, or at most it with ``at_most``.
    """

    label: str
    ours: str
    workload: str
    other: str | None = None
    factor: float = 1.0
    at_most: bool = False
    other_workload: str | None = None
    metric: str | None = None
    """The figure compared; the workload's own metric unless given."""


def fmt(value: float, unit: str) -> str:
    """A figure as the tables show it in ``unit``."""
    if unit == "ms":
        return f"{value:.3f}"
    if unit == "KiB/conn":
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _med(runs: list[dict[str, Any]], metric: str) -> float:
    return float(statistics.median(run[metric] for run in runs))


def _idle_table(name: str, runs: list[dict[str, Any]], value: str, spread: str) -> str:
    before = _med(runs, "rss_before_kib") / 1024
    after = _med(runs, "rss_after_kib") / 1024
    failed = max(run["failed"] for run in runs)
    reason = next((run["failure"] for run in runs if run["failure"]), "")
    cells = [
        f"`{name}`", value, spread, f"{before:.1f} -> {after:.1f}",
        f"{min(run['connections'] for run in runs):,} / {runs[0]['asked']:,}",
        f"{failed:,}" + (f" (mostly {reason})" if reason else ""),
        f"{_med(runs, 'open_seconds'):.1f}",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def workload_table(
    workload: Workload, rows: Sequence[Row], results: harness.Results, idle: int
) -> list[str]:
    """One workload's table: a line per server (or client) that ran it."""
    better = "lower is better" if workload.lower else "higher is better"
    lines = ["", f"### {workload.heading(idle)}", ""]
    first = "client" if workload.client else "server"
    if workload.idle:
        lines += [
            f"| {first} | {workload.unit} ({better}) | min - max | RSS before -> after (MiB) "
            "| open / asked | failed to open | seconds to open |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
    else:
        extra = " | p99 ms | calls/s" if workload.unit == "ms" else " | p50 ms"
        lines += [
            f"| {first} | {workload.unit} ({better}) | min - max{extra} | server CPU "
            "| client CPU | errors |",
            "|---|---:|---:|" + "---:|" * extra.count("|") + "---:|---:|---:|",
        ]
    for row in rows:
        runs = results[(row.name, workload.key)]
        values = [run[workload.metric] for run in runs]
        value = f"**{fmt(statistics.median(values), workload.unit)}**"
        spread = f"{fmt(min(values), workload.unit)} - {fmt(max(values), workload.unit)}"
        if workload.idle:
            lines.append(_idle_table(row.name, runs, value, spread))
            continue
        cells = [f"`{row.name}`", value, spread]
        if workload.unit == "ms":
            cells += [f"{_med(runs, 'p99_ms'):.3f}", f"{_med(runs, 'calls_per_s'):,.0f}"]
        else:
            cells.append(f"{_med(runs, 'p50_ms'):.3f}")
        cells += [
            f"{_med(runs, 'server_cpu_pct'):.0f}%",
            f"{_med(runs, 'client_cpu_pct'):.0f}%",
            str(sum(run["errors"] for run in runs)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def ratio_table(
    title: str, results: harness.Results, rows: Sequence[Row], workloads: Sequence[Workload]
) -> list[str]:
    """SecureMCP / peer for every workload both ran (ratio of the medians); none if none ran."""
    ours = [row for row in rows if row.securemcp]
    peers = [row for row in rows if not row.securemcp]
    shown = [w for w in workloads if any((row.name, w.key) in results for row in rows)]
    if not shown:
        return []
    lines = [
        "",
        f"### {title}",
        "",
        "Ratio of the medians, per workload. Throughput (S2, S3, S5, M2, M5, C1): above 1 "
        "SecureMCP is faster. Latency and memory (S1, S4, M1): below 1 SecureMCP is better.",
        "",
        "| SecureMCP / peer | " + " | ".join(w.key for w in shown) + " |",
        "|---|" + "---:|" * len(shown),
    ]
    for peer in peers:
        for mine in ours:
            cells = []
            for workload in shown:
                a = harness.median(results, (mine.name, workload.key), workload.metric)
                b = harness.median(results, (peer.name, workload.key), workload.metric)
                cells.append("" if a is None or not b else f"{a / b:.2f}")
            if any(cells):
                lines.append(f"| `{mine.name}` / `{peer.name}` | " + " | ".join(cells) + " |")
    return lines


def target_lines(
    results: harness.Results, workloads: Sequence[Workload], targets: Sequence[Target]
) -> list[str]:
    """The issue's targets, each met or not, from this run's medians (those that ran)."""
    if not targets:
        return []
    by_key = {w.key: w for w in workloads}
    lines = ["", "### Targets", "", "| target | measured | met |", "|---|---:|:---:|"]
    for target in targets:
        workload = by_key.get(target.workload)
        if workload is None:
            continue
        metric = target.metric or workload.metric
        value = harness.median(results, (target.ours, target.workload), metric)
        if value is None:
            continue
        if target.other is None:
            shown = (
                f"{value:.0%} open"
                if metric == "open_share"
                else f"{fmt(value, workload.unit)} {workload.unit}"
            )
        else:
            key = (target.other, target.other_workload or target.workload)
            other = harness.median(results, key, metric)
            if not other:
                continue
            value /= other
            shown = f"{value:.2f} x"
        met = value <= target.factor if target.at_most else value >= target.factor
        lines.append(f"| {target.label} | {shown} | {'yes' if met else '**no**'} |")
    return lines


def intro(title: str, meta: dict[str, Any]) -> list[str]:
    """The section's heading and how it was measured."""
    slower = (
        f" **The load generator spun {meta['client_work_us']} us per answer** "
        "(`--client-work-us`): not the published configuration, see `HARNESS.md`."
        if meta["client_work_us"]
        else ""
    )
    return [
        title,
        "",
        "Each server in its own process pinned to CPU 0, the load generator in another pinned to "
        "CPU 1: `benchmarks/loadgen.py`, the same client for every server "
        f"({meta['client']}). Closed loop: every connection keeps its calls in flight and sends "
        f"the next one as an answer arrives; {meta['warmup']} s of warm-up, then a "
        f"{meta['duration']} s window. {meta['runs']} runs of each, rounds interleaved (every "
        "server, then again); medians with the min - max range. Every answer is checked (the "
        "echo of the message sent; over MCP not an error, structured and text content the "
        "echo): a wrong one counts as an error. `server CPU` and `client CPU` are the busy share "
        "of one core during the window: a client well under 100% is not the bottleneck. "
        "A fast client that sleeps between answers is the worst case for a server's write "
        "path on this machine; `benchmarks/HARNESS.md` explains why another harness ranks some "
        f"servers differently.{slower}",
        "",
        "Every server runs at its default settings, the worst case a user gets: SecureMCP with "
        "its default `Limits` (1 MiB messages, which S5's 256 KiB fit) and `max_connections`, "
        "the peers as their libraries come, the MCP SDK's FastMCP logging at WARNING instead "
        "of its per-request INFO line. Each server process raises its soft file-descriptor limit "
        "to the hard one. Every workload runs on a freshly started server process (what ran "
        "before changes what later workloads cost: `benchmarks/HARNESS.md`). "
        f"S4 opens {meta['idle']:,} connections after a short warm-up, counts those the "
        "server refused or did not answer, and divides the "
        "growth of its resident memory (VmRSS) by the connections open (refusals can leave "
        "memory behind too).",
        "",
        "C1 measures clients, not servers: each client runner in `benchmarks/clients/` (pinned "
        "to CPU 1) makes closed-loop echo calls over one connection, 1 or 64 in flight as "
        "concurrent tasks, each client at its defaults, against one server pinned to CPU 0: "
        f"`{meta['c1_server']}`. That is the hand-written `websockets` server on uvloop where "
        "the peers' environment exists: it has the lowest S1 latency of the servers and answers "
        "each request as it reads it, so that the client is the bottleneck (the server's CPU "
        "share shows its headroom: near 100%, at about 40,000 calls/s on one connection on "
        "this machine, the figure is the server's limit and only a lower bound for the "
        "client); it declines permessage-deflate, which the `websockets`-based clients offer "
        "and SecureMCP's does not.",
        "",
    ]


def markdown(
    results: harness.Results,
    rows: Sequence[Row],
    workloads: Sequence[Workload],
    targets: Sequence[Target],
    meta: dict[str, Any],
    preface: Sequence[str],
) -> str:
    """The whole section: ``preface`` (see :func:`intro`), conditions, tables, ratios, targets."""
    lines = [*preface]
    lines += harness.conditions(
        meta, "before the run", "(the machine is shared: compare ratios within this run)"
    )
    lines += [f"- `{row.name}`: {row.description}" for row in rows]
    for workload in workloads:
        ran = [row for row in rows if (row.name, workload.key) in results]
        if ran:
            lines += workload_table(workload, ran, results, meta["idle"])
    servers = [w for w in workloads if not w.client]
    clients = [w for w in workloads if w.client]
    lines += ratio_table("Ratios SecureMCP / peer", results, rows, servers)
    lines += ratio_table("Ratios SecureMCP client / peer client (C1)", results, rows, clients)
    lines += target_lines(results, workloads, targets)
    return "\n".join(lines) + "\n"
