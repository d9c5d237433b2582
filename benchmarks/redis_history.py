"""S7's history part: the example chat's message store, through its tools and at the store.

Closed loop, ``N`` callers with one call in flight each, for the chat's store:
SQLite (the default: WAL, ``synchronous=NORMAL``) and
:class:`~securemcp.redis.RedisMessageStore` with ``appendfsync always`` and
``everysec`` (set on the running Redis with CONFIG SET). Measured twice:
through the chat's tools (``benchmarks/servers/securemcp_history_server.py``
serving ``examples/websocket_chat``'s ``create_app(store)``, driven by
``loadgen.py --tool``: ``send_message`` appends and publishes,
``get_messages`` reads the latest 10 and the room's count), and at the store
itself (this file run as a script, the store client: ``append``, and ``list``
of the latest 10, in one process).

Imported by ``redis_bench.py`` (as ``redis_history``, from its own directory),
which runs the rounds and writes the report. The store client, as
:func:`history_round` runs it::

    python benchmarks/redis_history.py --store SPEC --op append|read --server-pid PID \\
        --connections N --warmup S --duration S
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Run as a script, this file finds its sibling modules on sys.path[0]; mypy knows them by package.
if TYPE_CHECKING:
    from benchmarks import harness
    from benchmarks.servers.securemcp_history_server import open_store
    from benchmarks.window import Stats, measure
else:
    import harness

    sys.path.insert(1, str(harness.SERVERS_DIR))
    from securemcp_history_server import open_store
    from window import Stats, measure

ROOM = "bench"


@dataclass(frozen=True)
class Store:
    """A history store to measure: its name, what it is, and Redis's fsync policy if any."""

    name: str
    description: str
    appendfsync: str | None


STORES = [
    Store("sqlite", "`SQLiteMessageStore`, WAL, `synchronous=NORMAL` (the example's default)",
          None),
    Store("redis always", "`RedisMessageStore`, AOF `appendfsync always`", "always"),
    Store("redis everysec", "`RedisMessageStore`, AOF `appendfsync everysec`", "everysec"),
]  # fmt: skip

OPS = {"append": ("send_message", '{"username":"bench","message":"hello everybody","room":"'
                  + ROOM + '"}'),
       "read": ("get_messages", '{"limit":10,"room":"' + ROOM + '"}')}  # fmt: skip
"""Each history operation: the chat tool that does it, and its arguments."""


def _spec(store: Store, redis: harness.Redis, directory: Path, level: str) -> str:
    return redis.url if store.appendfsync else f"sqlite:{directory / f'chat-{level}.db'}"


def history_round(
    runs: harness.Collector, round_number: int, redis: harness.Redis, directory: Path,
    args: argparse.Namespace,
) -> None:  # fmt: skip
    """Every store, through the tools then at the store level; appends before reads."""
    timing = ["--warmup", str(args.history_warmup), "--duration", str(args.history_duration)]
    for store in STORES:
        fsync = redis.appendfsync(store.appendfsync) if store.appendfsync else None
        with fsync or contextlib.nullcontext():
            spec = _spec(store, redis, directory, "tools")
            argv = (str(harness.SERVERS_DIR / "securemcp_history_server.py"), "--store", spec)
            with harness.running(f"history {store.name}", argv, False) as (port, pid):
                for op, (tool, arguments) in OPS.items():
                    for n in args.connections:
                        client = [
                            harness.client_python(), str(harness.HERE / "loadgen.py"),
                            "--url", f"ws://127.0.0.1:{port}/", "--server-pid", str(pid),
                            "--connections", str(n), "--tool", tool, "--arguments", arguments,
                            *timing,
                        ]  # fmt: skip
                        result = harness.run_client(client, f"loadgen failed on {op}", 120)
                        runs.add(round_number, store.name, f"tools {op} x{n}", result,
                                 history_summary(result))  # fmt: skip
            spec = _spec(store, redis, directory, "store")
            for op in OPS:
                for n in args.connections:
                    client = [
                        sys.executable, str(Path(__file__).resolve()),
                        "--store", spec, "--op", op, "--server-pid", str(redis.pid),
                        "--connections", str(n), *timing,
                    ]  # fmt: skip
                    result = harness.run_client(client, f"store client failed on {op}", 120)
                    runs.add(round_number, store.name, f"store {op} x{n}", result,
                             history_summary(result))  # fmt: skip


def history_summary(result: dict[str, Any]) -> str:
    """One history run's figures for the progress line."""
    return (
        f"{result['calls_per_s']:,.0f} calls/s, p50 {result['p50_ms']:.2f} ms "
        f"p99 {result['p99_ms']:.2f} ms, CPU server {result['server_cpu_pct']:.0f}% "
        f"client {result['client_cpu_pct']:.0f}% (errors {result['errors']})"
    )


async def store_load(args: argparse.Namespace) -> dict[str, Any]:
    """The store client: ``N`` tasks calling the store in a closed loop; the window's figures."""
    store = open_store(args.store)
    stats = Stats()

    async def one() -> None:
        while stats.running:
            started = time.perf_counter()
            try:
                if args.op == "append":
                    await store.append(ROOM, "bench", "hello everybody")
                else:
                    await store.list(ROOM, limit=10)
            except Exception:  # noqa: BLE001 - counted as an error, the loop goes on
                stats.answered(time.perf_counter() - started, False)
            else:
                stats.answered(time.perf_counter() - started, True)

    async with contextlib.AsyncExitStack() as stack:
        if isinstance(store, contextlib.AbstractAsyncContextManager):
            await stack.enter_async_context(store)
        else:
            stack.push_async_callback(store.aclose)
        tasks = [asyncio.create_task(one()) for _ in range(args.connections)]
        # The SQLite store runs in this process: its CPU is this process's.
        pid = args.server_pid if args.store.startswith("redis") else os.getpid()
        figures = await measure(
            stats, asyncio.sleep, warmup=args.warmup, duration=args.duration, server_pid=pid
        )
        await asyncio.gather(*tasks)
    return figures


def history_table(results: harness.Results, level: str, connections: Sequence[int]) -> list[str]:
    """The history table of ``level`` (tools or store): a row per store and operation."""
    header = " | ".join(f"x{n} calls/s | x{n} p50 / p99 ms" for n in connections)
    lines = [
        f"| store | operation | {header} | server CPU (x{connections[-1]}) | errors |",
        "|---|---|" + "---:|---:|" * len(connections) + "---:|---:|",
    ]
    for store in STORES:
        for op in OPS:
            cells, errors, cpu = [], 0, ""
            for n in connections:
                runs = results.get((store.name, f"{level} {op} x{n}"))
                if not runs:
                    cells += ["", ""]
                    continue
                rate = statistics.median(r["calls_per_s"] for r in runs)
                p50 = statistics.median(r["p50_ms"] for r in runs)
                p99 = statistics.median(r["p99_ms"] for r in runs)
                cells += [f"**{rate:,.0f}**", f"{p50:.2f} / {p99:.2f}"]
                errors += sum(r["errors"] for r in runs)
                cpu = f"{statistics.median(r['server_cpu_pct'] for r in runs):.0f}%"
            row = " | ".join([f"`{store.name}`", op, *cells, cpu, str(errors)])
            lines.append(f"| {row} |")
    return lines


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of the history part."""
    parser.add_argument("--connections", default="1,16", help="history callers, comma-separated")
    parser.add_argument("--history-warmup", type=float, default=0.5)
    parser.add_argument("--history-duration", type=float, default=3.0)


def smoke(args: argparse.Namespace) -> None:
    """``--smoke``: short windows, one number of callers."""
    args.history_warmup, args.history_duration, args.connections = 0.1, 0.4, "4"


def main(argv: Sequence[str] | None = None) -> int:
    """The store client: one JSON line of figures."""
    parser = argparse.ArgumentParser(description="S7's store client (run by redis_bench.py)")
    parser.add_argument("--store", required=True, help="redis://... or sqlite:PATH")
    parser.add_argument("--op", choices=list(OPS), required=True)
    parser.add_argument("--server-pid", type=int, default=0, help="Redis's pid")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(store_load(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
