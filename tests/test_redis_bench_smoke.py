"""The S7 Redis benchmark keeps working: ``benchmarks/redis_bench.py --smoke`` on a test's Redis.

Only that the harness runs end to end against a real ``redis-server`` (the
``redis_server`` fixture): every message reaches every receiver in each
broadcast setup, one process or two through Redis; every history store answers
through the chat's tools and at the store level; each setup, store and workload
is reported; and the script leaves Redis's ``appendfsync`` as it found it. No
figure is checked against any speed (a shared CI machine's timings mean
nothing).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .redis_server import RedisServer
from .test_bench_smoke import run_smoke

SETUPS = {"asyncio local", "asyncio redis x1", "asyncio redis x2"}
STORES = {"sqlite", "redis always", "redis everysec"}
BROADCAST = frozenset({"B1", "B2"})
HISTORY = frozenset(f"{level} {op} x4" for level in ("tools", "store") for op in ("append", "read"))


@pytest.mark.timeout(300)
def test_smoke_run_through_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    seen, meta = run_smoke("redis_bench.py", tmp_path, 240, ["--redis-url", redis_server.url])
    assert {name: set(runs) for name, runs in seen.items()} == {
        **dict.fromkeys(SETUPS, BROADCAST),
        **dict.fromkeys(STORES, HISTORY),
    }
    for setup in SETUPS:
        for workload, run in seen[setup].items():
            assert run["closed"] == 0, (setup, workload, run)
            # Every measured message reached each receiver, on both processes (the run waits).
            assert run["messages"] == 20, (setup, workload, run)
            assert run["deliveries"] == 20 * meta["receivers"], (setup, workload, run)
            assert run["lag_max_ms"] >= run["lag_p50_ms"] > 0, (setup, workload, run)
            assert "redis_cpu_pct" in run, (setup, workload, run)
    for store in STORES:
        for workload, run in seen[store].items():
            assert run["calls"] > 0, (store, workload, run)
    # The appends went to this Redis, and its fsync policy is back as the fixture set it.
    assert int(redis_server.command("GET", "{securemcp}:messages:total")) > 0
    assert redis_server.command("CONFIG", "GET", "appendfsync").split() == [
        "appendfsync",
        "always",
    ]
