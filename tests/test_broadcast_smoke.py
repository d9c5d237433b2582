"""The S6 broadcast benchmark keeps working: ``benchmarks/broadcast_bench.py --smoke``.

Only that the harness runs end to end, every message reaches every receiver on
every server, and each server and workload is reported: no figure is checked
against any speed (a shared CI machine's timings mean nothing). SecureMCP's
servers always run (uvloop's where uvloop is installed); nextmcp only where
``benchmarks/.venv-peers`` exists (``bash benchmarks/setup_peers.sh``).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benchmarks" / ".venv-peers" / "bin" / "python"


def expected_servers() -> set[str]:
    """The servers the smoke run must report on this machine."""
    names = {"securemcp-asyncio", "securemcp-trio"}
    if importlib.util.find_spec("uvloop") is not None:
        names.add("securemcp-uvloop")
    if PEERS.exists():
        names.add("nextmcp")
    return names


@pytest.mark.timeout(300)
def test_smoke_run_delivers_every_message_on_every_server(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    results_md = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    done = subprocess.run(
        [sys.executable, "benchmarks/broadcast_bench.py", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    seen: dict[str, set[str]] = {}
    for row in report["results"]:
        seen.setdefault(row["server"], set()).add(row["workload"])
        (run,) = row["runs"]
        assert run["errors"] == 0, row
        assert run["closed"] == 0, row
        # Every measured message reached each of the 20 receivers (the run waits for that).
        assert run["messages"] == 20, row
        assert run["deliveries"] == 20 * report["meta"]["receivers"], row
        assert run["lag_max_ms"] >= run["lag_p50_ms"] > 0, row
    assert seen == {name: {"B1", "B2"} for name in expected_servers()}
    for name in seen:
        assert f"`{name}`" in done.stdout
    # --smoke leaves RESULTS.md alone.
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == results_md
