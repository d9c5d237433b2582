"""The M3 benchmark keeps working: ``benchmarks/http_bench.py --smoke``.

Only that the harness runs end to end against SecureMCP's server and the
official MCP SDK 2.x server over Streamable HTTP, with every answer right (the
load generator checks each one): no figure is checked against any speed (a
shared CI machine's timings mean nothing). The SDK 2.x server needs
``.venv-mcp2``, which the ``mcp2_python`` fixture builds (or skips without).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .test_bench_smoke import run_smoke


@pytest.mark.timeout(300)
def test_smoke_run_reports_securemcp_and_the_sdk2_server(tmp_path: Path, mcp2_python: Path) -> None:
    del mcp2_python  # Built: the SDK 2.x server runs.
    seen, meta = run_smoke(
        "http_bench.py", tmp_path, 240, ["--only", "securemcp-asyncio,mcp-sdk2-http"]
    )
    assert set(seen) == {"securemcp-asyncio", "mcp-sdk2-http"}
    for server, runs in seen.items():
        assert set(runs) == {"M3", "M3c"}, server
        assert runs["M3"]["calls"] > 0, (server, runs)
        # One call per connection: every answer closed its connection, each was replaced.
        assert runs["M3c"]["calls"] > 0, (server, runs)
        assert runs["M3c"]["errors"] == 0, (server, runs)
        assert runs["M3c"]["reconnects"] >= runs["M3c"]["calls"], (server, runs)
    assert meta["versions"]["mcp (SDK 2.x server)"] == "2.3.0"


@pytest.mark.parametrize("loop", ["path", "h11", "h11-connection"])
def test_the_instruction_count_loops_serve_the_m3_request(loop: str) -> None:
    """``http_cost.py``'s loops (what valgrind counts) run and answer right, without valgrind."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "http_cost.py"
    done = subprocess.run(
        [sys.executable, str(script), "--inner", loop, "950"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # The path loop checks every answer (200, a tool result) and exits non-zero otherwise.
    assert done.returncode == 0, done.stdout + done.stderr
