"""The benchmark harness keeps working: ``benchmarks/run.py --smoke`` runs every server.

Only that the harness runs end to end and reports every server, client and
workload, with every answer right (the load generator and the C1 clients check
each echo): no figure is checked against any speed (a shared CI machine's
timings mean nothing). SecureMCP's servers and clients and the bare-wsproto
ceiling always run; the peers (nextmcp, websockets, the MCP SDK, and their
clients) run only where ``benchmarks/.venv-peers`` exists
(``bash benchmarks/setup_peers.sh``).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benchmarks" / ".venv-peers" / "bin" / "python"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
SEED = {"S1", "S2", "S3", "S4", "S5"}
MCP = {"M1", "M2"}
OURS = SEED | MCP | {"M5"}
C1 = {"C1-1", "C1-64"}


def expected_rows() -> dict[str, set[str]]:
    """Server (or C1 client) name -> the workloads it must report."""
    rows = {
        "securemcp-asyncio": OURS,
        "securemcp-trio": OURS,
        "wsproto-ceiling": SEED,
        "securemcp-client-asyncio": C1,
        "securemcp-client-trio": C1,
    }
    if importlib.util.find_spec("uvloop") is not None:
        rows["securemcp-uvloop"] = OURS
        rows["securemcp-client-uvloop"] = C1
    if PEERS.exists():
        rows |= {
            "nextmcp": SEED,
            "websockets": SEED,
            "websockets-uvloop": SEED,
            "mcp-sdk": MCP,
            "nextmcp-client": C1,
            "websockets-client": C1,
            "websockets-client-uvloop": C1,
        }
    return rows


def run_smoke(
    script: str, tmp_path: Path, timeout: float, extra: Sequence[str] = ()
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, Any]]:
    """Run ``benchmarks/SCRIPT --smoke [EXTRA]``: server -> workload -> its run; the meta.

    Checks what every smoke run must show: it succeeded, each row holds one run
    without errors, the markdown section names every server, and RESULTS.md is
    left alone.
    """
    out = tmp_path / "smoke.json"
    results_md = RESULTS_MD.read_text()
    done = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--smoke", "--json", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    seen: dict[str, dict[str, dict[str, Any]]] = {}
    for row in report["results"]:
        (run,) = row["runs"]
        assert run["errors"] == 0, row
        seen.setdefault(row["server"], {})[row["workload"]] = run
    for server in seen:
        assert f"`{server}`" in done.stdout
    assert RESULTS_MD.read_text() == results_md
    meta: dict[str, Any] = report["meta"]
    return seen, meta


@pytest.mark.timeout(600)
def test_smoke_run_reports_every_server_and_workload(tmp_path: Path) -> None:
    seen, _meta = run_smoke("run.py", tmp_path, 540)
    for server, runs in seen.items():
        for workload, run in runs.items():
            if workload == "S4":
                # Every idle connection was opened and stayed open.
                assert run["connections"] == 50, (server, run)
                assert run["failed"] == 0, (server, run)
            else:
                assert run["calls"] > 0, (server, workload, run)
    assert {server: set(runs) for server, runs in seen.items()} == expected_rows()


@pytest.mark.timeout(300)
def test_churn_smoke_run_opens_a_connection_per_call(tmp_path: Path) -> None:
    """``benchmarks/churn_bench.py --smoke``: S3c on every seed-dialect server."""
    seen, _meta = run_smoke("churn_bench.py", tmp_path, 240)
    assert set(seen) == {name for name, runs in expected_rows().items() if "S3" in runs}
    for server, runs in seen.items():
        run = runs["S3c"]
        assert run["calls"] > 0, (server, run)
        # Each answered call had a connection of its own, opened inside the window
        # but for those of the 64 slots that straddled its start.
        assert run["connections_opened"] >= run["calls"] - 64, (server, run)
