"""S7 Redis: S6's broadcast through Redis across processes, and the history's calls per second.

Two parts, one Redis server (``redis-server``, AOF on, pinned to CPU 0 beside
the servers; the clients are pinned to CPU 1, as in S6):

**Broadcast.** S6's client and workloads (``broadcast.py``: one sender,
``--receivers`` receivers in one room, B1 window 1 and B2 window 8) against
``benchmarks/servers/securemcp_broadcast_server.py`` in three setups per
backend: ``local``, one process with the in-process broker (S6's figure,
measured again in the same run); ``redis x1``, one process with
``--redis URL`` (:class:`~securemcp.redis.RedisBroker`: every publication is
also PUBLISHed, and comes back to be skipped); ``redis x2``, two processes on
the same Redis, the receivers dealt out evenly between them and the sender on
the first, so that half the room hears each message through Redis.

**History.** Closed loop, ``N`` callers with one call in flight each, for the
example chat's store (SQLite, and Redis with two fsync policies), through the
chat's tools and at the store itself: ``redis_history.py``.

Usage::

    python benchmarks/redis_bench.py                 # full run, writes its section of RESULTS.md
    python benchmarks/redis_bench.py --smoke         # asyncio only, 20 receivers, short windows
    python benchmarks/redis_bench.py --redis-url redis://127.0.0.1:PORT/0   # an existing Redis

Without ``--redis-url`` the script starts its own ``redis-server`` on a free
port in a temporary directory, and stops it at the end; with it, the script
changes only ``appendfsync`` there, and puts it back.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Run as a script, this file finds its sibling modules on sys.path[0]; mypy knows them by package.
if TYPE_CHECKING:
    from benchmarks import broadcast, harness, options, redis_history
else:
    import broadcast
    import harness
    import options
    import redis_history

SECTION = "## S7 Redis: broadcast and history across processes"
COMMAND = "bash benchmarks/setup_peers.sh && .venv/bin/python benchmarks/redis_bench.py"


# --- broadcast -------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """Broadcast servers to run together: one backend, the broker, how many processes."""

    name: str
    description: str
    backend: str
    processes: int
    redis: bool
    needs: str | None = None
    peers_env: bool = False

    def argv(self, redis_url: str) -> tuple[str, ...]:
        """The server script and its arguments."""
        argv: tuple[str, ...] = (
            str(harness.SERVERS_DIR / "securemcp_broadcast_server.py"),
            "--backend",
            self.backend,
        )
        return (*argv, "--redis", redis_url) if self.redis else argv


BACKENDS = [("asyncio", "asyncio", None), ("uvloop", "asyncio+uvloop", "uvloop"),
            ("trio", "trio", None)]  # fmt: skip


def _setups() -> list[Setup]:
    setups = []
    for short, backend, needs in BACKENDS:
        x2 = "2 processes, `RedisBroker`, receivers split evenly, the sender on the first"
        setups += [
            Setup(f"{short} local", f"{backend}: 1 process, the in-process broker (S6)",
                  backend, 1, False, needs),
            Setup(f"{short} redis x1", f"{backend}: 1 process, `RedisBroker`",
                  backend, 1, True, needs),
            Setup(f"{short} redis x2", f"{backend}: {x2}", backend, 2, True, needs),
        ]  # fmt: skip
    return setups


SETUPS = _setups()


def broadcast_round(
    runs: harness.Collector, round_number: int, setups: Sequence[Setup], redis: harness.Redis,
    args: argparse.Namespace,
) -> None:  # fmt: skip
    """Each setup's servers started, both workloads measured, servers stopped."""
    for setup in setups:
        with contextlib.ExitStack() as stack:
            servers = [
                stack.enter_context(harness.running(setup.name, setup.argv(redis.url), False))
                for _ in range(setup.processes)
            ]
            broadcast.measure_all(runs, round_number, setup.name, servers, args, redis.pid)


# --- the report --------------------------------------------------------------------


def _fs_type(path: Path) -> str:
    """The file system ``path`` is on, from ``/proc/mounts`` (the longest mount point)."""
    best, kind = "", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        mount = fields[1]
        inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, kind = mount, f"{fields[2]} on {fields[0]}"
    return kind


def _versions(redis: harness.Redis) -> dict[str, str]:
    found = harness.own_versions(("securemcp", "anyio", "trio", "uvloop", "coredis"))
    found["redis-server"] = redis.info("redis_version")
    found.update(harness.peer_versions(["picows"]))
    return found


def _median_of(results: harness.Results, key: tuple[str, str], metric: str) -> float | None:
    """The median of ``metric`` over the runs of ``key`` (``cpu`` is CPU per delivery)."""
    if metric != "cpu":
        return harness.median(results, key, metric)
    runs = results.get(key)
    return statistics.median(broadcast.cpu_per_delivery(r) for r in runs) if runs else None


def ratio_lines(results: harness.Results, setups: Sequence[Setup]) -> list[str]:
    """Each Redis setup against its backend's ``local``: deliveries/s, lag p50, CPU/delivery."""
    lines = [
        "",
        "### Through Redis / in-process, per backend",
        "",
        "Ratio of the medians: deliveries/s (below 1: fewer through Redis), lag p50 (above 1: "
        "later through Redis), and the servers' CPU per delivery (above 1: each delivery costs "
        "more CPU through Redis; the least disturbed by other jobs taking CPU 0).",
        "",
        "| setup / local | B1 deliveries/s | B1 lag p50 | B1 CPU/delivery "
        "| B2 deliveries/s | B2 lag p50 | B2 CPU/delivery |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for setup in setups:
        if not setup.redis:
            continue
        local = setup.name.split()[0] + " local"
        cells = []
        for key in ("B1", "B2"):
            for metric in ("deliveries_per_s", "lag_p50_ms", "cpu"):
                a = _median_of(results, (setup.name, key), metric)
                b = _median_of(results, (local, key), metric)
                cells.append("" if a is None or not b else f"{a / b:.2f}")
        lines.append(f"| `{setup.name}` | " + " | ".join(cells) + " |")
    return lines


def markdown(results: harness.Results, setups: Sequence[Setup], meta: dict[str, Any]) -> str:
    """The RESULTS.md section: conditions, the broadcast tables and ratios, the history tables."""
    connections = meta["connections"]
    lines = [
        SECTION,
        "",
        "Generated by `benchmarks/redis_bench.py`; what these figures can and cannot show on "
        "this machine, and how the design scales past it: `benchmarks/HARNESS.md`, "
        '"S7: reading the Redis figures".',
        "",
        f"**Broadcast**: S6's client and workloads ({meta['receivers']} receivers and one "
        f"sender in one room, {meta['warmup']} warm-up then {meta['messages']} measured "
        "messages per run, the client pinned to CPU 1, "
        f"{meta['client']}), against the same broadcast server in three setups per backend: "
        "`local` (the in-process broker, S6's figure again), `redis x1` (one process with "
        "`--redis`: each message also PUBLISHed, and skipped when it comes back), `redis x2` "
        "(two processes on one Redis, the receivers split evenly, the sender on the first: "
        "half the room hears each message through Redis). Every server process **and Redis** "
        "are pinned to CPU 0: `server CPU` sums the server processes, `redis CPU` is Redis's, "
        "each as a share of one core. Lag is the slowest receiver's.",
        "",
        f"**History**: closed loop, x{' and x'.join(str(n) for n in connections)} callers "
        f"with one call in flight each, {meta['history_warmup']} s warm-up then "
        f"{meta['history_duration']} s measured per run. `tools`: the chat example's "
        "`create_app(store)` served on asyncio (CPU 0), called by the load generator (CPU 1): "
        "`append` is `send_message` (append, then publish to a room nobody joined), `read` is "
        "`get_messages` (the latest 10, and the room's count: two store calls). `store`: the "
        "store's own `append` and `list(limit=10)` from one asyncio process on CPU 1 "
        "(server CPU: Redis's; for SQLite, which runs in that process, the process's own). "
        f"The SQLite file and the AOF are on {meta['fs']}.",
        "",
        f"{meta['runs']} runs, rounds interleaved; medians (min - max for deliveries/s).",
        "",
        *harness.conditions(meta, "before", "(other engineers' jobs shared the machine)"),
    ]
    lines[-2] = "Setups and stores:"
    lines += [f"- `{setup.name}`: {setup.description}" for setup in setups]
    lines += [f"- `{store.name}`: {store.description}" for store in redis_history.STORES]
    for workload in broadcast.WORKLOADS:
        lines += broadcast.workload_table(results, [s.name for s in setups], workload, redis=True)
    lines += ratio_lines(results, setups)
    for level, title in (("tools", "through the chat's tools"), ("store", "at the store")):
        table = redis_history.history_table(results, level, connections)
        lines += ["", f"### History {title}", "", *table]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the whole benchmark, or rewrite its section from a ``--json`` dump."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_options(parser, "asyncio only, 20 receivers, short history windows")
    parser.set_defaults(runs=2)
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--backends", default="asyncio,uvloop,trio",
                        help="comma-separated: asyncio, uvloop, trio")  # fmt: skip
    parser.add_argument("--parts", default="broadcast,history", help="broadcast, history")
    broadcast.add_options(parser)
    redis_history.add_options(parser)
    parser.add_argument("--from-json", type=Path, metavar="PATH",
                        help="measure nothing: rewrite the section from a --json dump")  # fmt: skip
    args = parser.parse_args(argv)
    if args.from_json:
        dump = json.loads(args.from_json.read_text())
        results = {(row["server"], row["workload"]): row["runs"] for row in dump["results"]}
        ran = [setup for setup in SETUPS if (setup.name, "B1") in results]
        harness.report(args, SECTION, markdown(results, ran, dump["meta"]), dump["meta"], results)
        return 0
    if args.smoke:
        broadcast.smoke(args)
        redis_history.smoke(args)
        args.backends = "asyncio"
    args.connections = [int(n) for n in args.connections.split(",")]
    backends = set(args.backends.split(","))
    parts = set(args.parts.split(","))
    setups = harness.chosen(
        [s for s in SETUPS if s.name.split()[0] in backends and "broadcast" in parts], args.only
    )

    load_before = harness.load_average()
    runs = harness.Collector()
    with tempfile.TemporaryDirectory(prefix="s7-") as temp, harness.redis_running(
        args.redis_url, Path(temp)
    ) as redis:  # fmt: skip
        for round_number in range(1, args.runs + 1):
            broadcast_round(runs, round_number, setups, redis, args)
            if "history" in parts:
                redis_history.history_round(runs, round_number, redis, Path(temp), args)
        meta = runs.meta(
            load_before, _versions(redis), args.runs, COMMAND, **broadcast.meta(args),
            connections=args.connections, history_warmup=args.history_warmup,
            history_duration=args.history_duration, fs=_fs_type(Path(temp)),
        )  # fmt: skip
    harness.report(args, SECTION, markdown(runs.results, setups, meta), meta, runs.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
