"""Charts of the committed benchmark results: ``benchmarks/RESULTS.md`` -> ``docs/charts/*.svg``.

RESULTS.md is the record the benchmark scripts write (each replaces its own
section), so it is the source: this script reads its tables by heading and
column name, and fails naming the table when one it needs is missing or
changed shape. Three charts, each SecureMCP backend beside the peers:

- ``throughput.svg``: calls/s per workload (S2, S3, S5, M2, M3) and broadcast
  deliveries/s (B2), medians with the min - max range of the runs;
- ``latency.svg``: p50 and p99 of one call in flight (S1, M1) and over
  Streamable HTTP (M3);
- ``memory.svg``: resident memory per idle connection (S4).

The SVGs are deterministic (fixed ids, no date, text kept as text) and carry
the SHA-256 of what they were drawn from (the figures and this script) in
their metadata, so ``tests/test_plot.py`` can tell whether the committed charts
are up to date with the committed results. The benchmark scripts run this
after they rewrite RESULTS.md.

Usage::

    python benchmarks/plot.py                 # rewrite docs/charts/ from RESULTS.md
    python benchmarks/plot.py --out /tmp/c    # somewhere else
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt  # after matplotlib.use: no display needed
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
CHARTS = HERE.parent / "docs" / "charts"
DIGEST_PREFIX = "source sha256 "

OURS = "#3b5bdb"
OURS_LIGHT = "#91a7ff"
PEER = "#868e96"
PEER_LIGHT = "#ced4da"

Table = list[dict[str, str]]


@dataclass(frozen=True)
class Panel:
    """One bar chart: a table of RESULTS.md, which column to draw, how to label it."""

    title: str
    heading: str
    """The start of the table's ``###`` heading (within ``section``, when given)."""
    column: str
    section: str = ""
    """The start of the ``##`` section holding the heading, when headings repeat."""
    spread: str | None = "min - max"


THROUGHPUT = [
    Panel("S2: 16 connections x 8 in flight", "S2 throughput", "calls/s (higher is better)"),
    Panel("S3: 100 connections x 1 in flight", "S3 fan-in", "calls/s (higher is better)"),
    Panel("S5: 256 KiB messages", "S5 large", "calls/s (higher is better)"),
    Panel("M2: MCP dialect, 16 x 8", "M2 (MCP dialect S2)", "calls/s (higher is better)"),
    Panel(
        "M3: MCP over Streamable HTTP, 16 x 1",
        "M3: tools/call over Streamable HTTP",
        "calls/s (higher is better)",
    ),
    Panel(
        "B2: broadcast to 500, 8 in flight",
        "B2 saturated",
        "deliveries/s (higher is better)",
        section="S6 broadcast",
    ),
]
LATENCY = [
    (Panel("S1: 1 connection, 1 in flight", "S1 latency", "ms (lower is better)"), "p99 ms"),
    (
        Panel("M1: MCP dialect, 1 in flight", "M1 (MCP dialect S1)", "ms (lower is better)"),
        "p99 ms",
    ),
    (Panel("M3: Streamable HTTP, 16 x 1", "M3 latency", "p50 ms", spread=None), "p99 ms"),
]
MEMORY = Panel("S4: 10,000 idle connections", "S4 idle", "KiB/conn (lower is better)")


def parse_tables(markdown: str) -> dict[tuple[str, str], Table]:
    """Every table of ``markdown``, keyed by its ``##`` section and ``###`` heading."""
    tables: dict[tuple[str, str], Table] = {}
    section = heading = ""
    lines = markdown.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("## "):
            section, heading = line[3:].strip(), ""
        elif line.startswith("### "):
            heading = line[4:].strip()
        elif (
            line.startswith("|")
            and index + 1 < len(lines)
            and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[index + 1].strip())
            and (index == 0 or not lines[index - 1].startswith("|"))
        ):
            header = _cells(line)
            rows = []
            for row in lines[index + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, _cells(row), strict=True)))
            tables[(section, heading)] = rows
    return tables


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def number(cell: str) -> float:
    """A figure as RESULTS.md writes it (``**56,602**``, ``0.112``) as a float."""
    return float(cell.replace("*", "").replace(",", "").strip())


def find_table(tables: dict[tuple[str, str], Table], panel: Panel) -> Table:
    """The table ``panel`` draws; a clear error if RESULTS.md has none or a changed one."""
    found = [
        rows
        for (section, heading), rows in tables.items()
        if heading.startswith(panel.heading) and section.startswith(panel.section)
    ]
    if len(found) != 1:
        raise LookupError(f"RESULTS.md: {len(found)} tables under '### {panel.heading}...'")
    rows = found[0]
    if not rows or panel.column not in rows[0]:
        raise LookupError(f"RESULTS.md: no column {panel.column!r} under '### {panel.heading}'")
    return rows


def series(tables: dict[tuple[str, str], Table], panel: Panel) -> list[dict[str, Any]]:
    """``[{"name", "value", "low", "high"}]`` for each row of the panel's table."""
    points = []
    for row in find_table(tables, panel):
        name = row[next(iter(row))].strip("`")
        value = number(row[panel.column])
        low = high = value
        if panel.spread is not None:
            low, high = (number(part) for part in row[panel.spread].split(" - "))
        points.append({"name": name, "value": value, "low": low, "high": high})
    return points


def figures(markdown: str) -> dict[str, Any]:
    """Everything the charts draw, read from RESULTS.md."""
    tables = parse_tables(markdown)
    latency = []
    for panel, p99 in LATENCY:
        rows = find_table(tables, panel)
        points = series(tables, panel)
        for point, row in zip(points, rows, strict=True):
            point["p99"] = number(row[p99])
        latency.append({"title": panel.title, "points": points})
    return {
        "throughput": [{"title": p.title, "points": series(tables, p)} for p in THROUGHPUT],
        "latency": latency,
        "memory": [{"title": MEMORY.title, "points": series(tables, MEMORY)}],
    }


def digest(data: dict[str, Any]) -> str:
    """What a chart is drawn from: the figures and this script's code."""
    source = json.dumps(data, sort_keys=True).encode() + Path(__file__).read_bytes()
    return hashlib.sha256(source).hexdigest()


def _colors(names: list[str], light: bool = False) -> list[str]:
    ours, peer = (OURS_LIGHT, PEER_LIGHT) if light else (OURS, PEER)
    return [ours if name.startswith("securemcp") else peer for name in names]


def _bars(ax: Axes, panel: dict[str, Any], unit: str) -> None:
    points = panel["points"]
    names = [p["name"] for p in points]
    values = [p["value"] for p in points]
    # Whiskers from the runs' range (clamped: a hand-edited median may sit outside it).
    spread = [
        [max(0.0, p["value"] - p["low"]) for p in points],
        [max(0.0, p["high"] - p["value"]) for p in points],
    ]
    rows = range(len(points))
    ax.barh(rows, values, color=_colors(names), xerr=spread, ecolor="#343a40", capsize=2)
    ax.set_yticks(rows, names)
    ax.invert_yaxis()
    ax.set_title(panel["title"], fontsize=10, loc="left")
    ax.set_xlabel(unit, fontsize=8)
    _style(ax, max(p["high"] for p in points))
    for row, point in zip(rows, points, strict=True):
        value = point["value"]
        label = f" {value:,.0f}" if value >= 100 else f" {value:g}"
        ax.text(max(point["high"], value), row, label, va="center", fontsize=7)


def _style(ax: Axes, top: float) -> None:
    ax.set_xlim(0, top * 1.25)
    if top >= 1000:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.tick_params(labelsize=8)
    ax.grid(axis="x", color="#e9ecef")
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def throughput_chart(data: list[dict[str, Any]]) -> Figure:
    """Calls (or deliveries) per second, one panel per workload."""
    fig, axes = plt.subplots(3, 2, figsize=(11, 10.5), layout="constrained")
    for ax, panel in zip(axes.flat, data, strict=True):
        unit = "deliveries/s" if panel["title"].startswith("B2") else "calls/s"
        _bars(ax, panel, unit)
    fig.suptitle("Throughput, higher is better (medians; whiskers: min - max of the runs)")
    return fig


def latency_chart(data: list[dict[str, Any]]) -> Figure:
    """p50 and p99 per server, one panel per workload."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), layout="constrained")
    for ax, panel in zip(axes.flat, data, strict=True):
        points = panel["points"]
        names = [p["name"] for p in points]
        rows = range(len(points))
        height = 0.4
        ax.barh([r - height / 2 for r in rows], [p["value"] for p in points], height,
                color=_colors(names), label="p50")  # fmt: skip
        ax.barh([r + height / 2 for r in rows], [p["p99"] for p in points], height,
                color=_colors(names, light=True), label="p99")  # fmt: skip
        ax.set_yticks(rows, names)
        ax.invert_yaxis()
        ax.set_title(panel["title"], fontsize=10, loc="left")
        ax.set_xlabel("ms per call", fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
        _style(ax, max(p["p99"] for p in points))
    fig.suptitle("Latency, lower is better: p50 (dark) and p99 (light)")
    return fig


def memory_chart(data: list[dict[str, Any]]) -> Figure:
    """Resident memory per idle connection."""
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    _bars(ax, data[0], "KiB of server memory (RSS) per connection")
    fig.suptitle("Memory per idle connection, lower is better")
    return fig


CHARTS_DRAWN = {"throughput": throughput_chart, "latency": latency_chart, "memory": memory_chart}


def plot(results: Path, out: Path) -> list[Path]:
    """Draw every chart of ``results`` into ``out``; the files written."""
    data = figures(results.read_text())
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in CHARTS_DRAWN.items():
        plt.rcParams["svg.hashsalt"] = "securemcp"  # stable element ids
        plt.rcParams["svg.fonttype"] = "none"  # text stays text: small, readable, searchable
        fig = draw(data[name])
        path = out / f"{name}.svg"
        metadata = {
            "Date": None,
            "Creator": "benchmarks/plot.py",
            "Title": f"SecureMCP benchmarks: {name}",
            "Description": DIGEST_PREFIX + digest(data[name]),
        }
        fig.savefig(path, format="svg", metadata=metadata)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Draw the charts; print where they went."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=CHARTS)
    args = parser.parse_args(argv)
    for path in plot(args.results, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
