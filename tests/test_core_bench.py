"""The core benchmark's harness keeps working (its figures are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "core_bench.py"


def test_smoke_run_prints_both_loops() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    names = [row.split("|")[1].strip() for row in rows[1:]]
    # One row per loop for one call in flight, then for the pipelined batch.
    assert names == ["securemcp core", "bare wsproto + json (ceiling)"] * 2
    assert "Target core/ceiling" in done.stdout


def test_markdown_section_carries_its_context() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--markdown"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("## Core round trips (in memory)\n")
    for field in ("- Date: ", "- Machine: ", "- Python ", "- Regenerate: "):
        assert field in done.stdout
