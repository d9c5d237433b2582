"""The S6 broadcast benchmark keeps working: ``benchmarks/broadcast_bench.py --smoke``.

Only that the harness runs end to end, every message reaches every receiver on
every server, and each server and workload is reported: no figure is checked
against any speed (a shared CI machine's timings mean nothing). SecureMCP's
servers always run (uvloop's where uvloop is installed); nextmcp only where
``benchmarks/.venv-peers`` exists (``bash benchmarks/setup_peers.sh``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from .test_bench_smoke import PEERS, run_smoke


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
    seen, meta = run_smoke("broadcast_bench.py", tmp_path, 240)
    for server, runs in seen.items():
        for workload, run in runs.items():
            assert run["closed"] == 0, (server, workload, run)
            # Every measured message reached each of the 20 receivers (the run waits for that).
            assert run["messages"] == 20, (server, workload, run)
            assert run["deliveries"] == 20 * meta["receivers"], (server, workload, run)
            assert run["lag_max_ms"] >= run["lag_p50_ms"] > 0, (server, workload, run)
    assert {server: set(runs) for server, runs in seen.items()} == {
        name: {"B1", "B2"} for name in expected_servers()
    }
