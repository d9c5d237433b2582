"""The benchmark harness keeps working: ``benchmarks/run.py --smoke`` runs every server.

Only that the harness runs end to end and reports every server and workload:
no figure is checked against any speed (a shared CI machine's timings mean
nothing). SecureMCP's servers and the bare-wsproto ceiling always run; the
peers (nextmcp, websockets, the MCP SDK) run only where
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
SEED = {"S1", "S2", "S3", "S4", "S5"}
MCP = {"M1", "M2"}


def expected_rows() -> dict[str, set[str]]:
    """Server name -> the workloads it must report."""
    rows = {
        "securemcp-asyncio": SEED | MCP,
        "securemcp-trio": SEED | MCP,
        "wsproto-ceiling": SEED,
    }
    if importlib.util.find_spec("uvloop") is not None:
        rows["securemcp-uvloop"] = SEED | MCP
    if PEERS.exists():
        rows |= {
            "nextmcp": SEED,
            "websockets": SEED,
            "websockets-uvloop": SEED,
            "mcp-sdk": MCP,
        }
    return rows


@pytest.mark.timeout(600)
def test_smoke_run_reports_every_server_and_workload(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    results_md = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    seen: dict[str, set[str]] = {}
    for row in report["results"]:
        seen.setdefault(row["server"], set()).add(row["workload"])
        (run,) = row["runs"]
        assert run["errors"] == 0, row
        if row["workload"] == "S4":
            # Every idle connection was opened and stayed open.
            assert run["connections"] == 50, row
        else:
            assert run["calls"] > 0, row
    assert seen == expected_rows()
    # The markdown section names every server, and --smoke leaves RESULTS.md alone.
    for server in seen:
        assert f"`{server}`" in done.stdout
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == results_md
