"""benchmarks/plot.py draws the committed results, and the committed charts are up to date.

The charts are SVG (text kept as text, fixed ids, no date) and carry the
SHA-256 of what they were drawn from: the figures read from RESULTS.md and
plot.py's own code. A changed result or a changed chart without running
``python benchmarks/plot.py`` fails here; matplotlib's version may differ
from the one that drew them, since the digest is of the input, not the bytes.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLOT = ROOT / "benchmarks" / "plot.py"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
COMMITTED = ROOT / "docs" / "charts"
CHARTS = ["throughput", "latency", "memory"]
DIGEST = re.compile(r"source sha256 ([0-9a-f]{64})")


def draw(out: Path, results: Path = RESULTS) -> subprocess.CompletedProcess[str]:
    """Run plot.py as a user does."""
    return subprocess.run(
        [sys.executable, str(PLOT), "--results", str(results), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The charts drawn from the committed RESULTS.md into a fresh directory."""
    out = tmp_path_factory.mktemp("charts")
    done = draw(out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(out / f"{name}.svg") for name in CHARTS]
    return out


def source_digest(svg: Path) -> str:
    found = DIGEST.search(svg.read_text())
    assert found is not None, f"{svg} has no source digest"
    return found.group(1)


def svg_texts(svg: Path) -> list[str]:
    """Every text of the drawing: labels, titles, figures."""
    root = ET.parse(svg).getroot()
    return [el.text for el in root.iter("{http://www.w3.org/2000/svg}text") if el.text]


def test_the_charts_show_every_server_and_the_figures(drawn: Path) -> None:
    throughput = svg_texts(drawn / "throughput.svg")
    for label in ["securemcp-asyncio", "securemcp-trio", "nextmcp", "mcp-sdk", "mcp-sdk2-http"]:
        assert label in throughput
    # S2's median for securemcp-asyncio, as RESULTS.md gives it.
    assert " 56,602" in throughput
    latency = svg_texts(drawn / "latency.svg")
    assert "S1: 1 connection, 1 in flight" in latency
    assert "p99" in latency
    memory = svg_texts(drawn / "memory.svg")
    assert " 3.5" in memory
    assert " 16.1" in memory
    for name in CHARTS:
        # Bars, not an empty frame: one path per bar at least.
        assert (drawn / f"{name}.svg").read_text().count("<path") > 20


def test_the_output_is_deterministic(drawn: Path, tmp_path: Path) -> None:
    assert draw(tmp_path).returncode == 0
    for name in CHARTS:
        assert (tmp_path / f"{name}.svg").read_bytes() == (drawn / f"{name}.svg").read_bytes()


def test_the_committed_charts_are_up_to_date(drawn: Path) -> None:
    for name in CHARTS:
        committed = COMMITTED / f"{name}.svg"
        assert committed.is_file(), f"run python benchmarks/plot.py: {committed} is missing"
        assert source_digest(committed) == source_digest(drawn / f"{name}.svg"), (
            f"{committed} is out of date with benchmarks/RESULTS.md: run python benchmarks/plot.py"
        )


def test_a_changed_result_changes_the_digest(drawn: Path, tmp_path: Path) -> None:
    changed = tmp_path / "RESULTS.md"
    text = RESULTS.read_text()
    assert "| `securemcp-asyncio` | **3.5** |" in text
    changed.write_text(
        text.replace("| `securemcp-asyncio` | **3.5** |", "| `securemcp-asyncio` | **3.6** |")
    )
    out = tmp_path / "charts"
    assert draw(out, changed).returncode == 0
    assert source_digest(out / "memory.svg") != source_digest(drawn / "memory.svg")
    assert source_digest(out / "latency.svg") == source_digest(drawn / "latency.svg")


def test_a_missing_table_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "RESULTS.md"
    broken.write_text(RESULTS.read_text().replace("### S4 idle", "### S4 renamed"))
    done = draw(tmp_path / "charts", broken)
    assert done.returncode != 0
    assert "RESULTS.md: 0 tables under '### S4 idle...'" in done.stderr
