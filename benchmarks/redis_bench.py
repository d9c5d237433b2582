"""S7 Redis: S6's broadcast through Redis across processes, and the history's calls per second.

Two parts, one Redis server (``redis-server``, AOF on, pinned to CPU 0 beside
the servers; the clients are pinned to CPU 1, as in S6):

**Broadcast.** S6's client and workloads (``broadcast_bench.py``: one sender,
``--receivers`` receivers in one room, B1 window 1 and B2 window 8) against
``benchmarks/servers/securemcp_broadcast_server.py`` in three setups per
backend: ``local``, one process with the in-process broker (S6's figure,
measured again in the same run); ``redis x1``, one process with
``--redis URL`` (:class:`~securemcp.redis.RedisBroker`: every publication is
also PUBLISHed, and comes back to be skipped); ``redis x2``, two processes on
the same Redis, the receivers dealt out evenly between them and the sender on
the first, so that half the room hears each message through Redis.

**History.** Closed loop, ``N`` callers with one call in flight each, for the
example chat's store: SQLite (the default: WAL, ``synchronous=NORMAL``) and
:class:`~securemcp.redis.RedisMessageStore` with ``appendfsync always`` and
``everysec`` (set on the running Redis with CONFIG SET). Measured twice:
through the chat's tools (``benchmarks/servers/securemcp_history_server.py``
serving ``examples/websocket_chat``'s ``create_app(store)``, driven by
``loadgen.py --tool``: ``send_message`` appends and publishes, ``get_messages``
reads the latest 10 and the room's count), and at the store itself
(``--store-client``: ``append``, and ``list`` of the latest 10, in one process).

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
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Run as a script, this file finds its sibling modules on sys.path[0]; mypy knows them by package.
if TYPE_CHECKING:
    from benchmarks import broadcast_bench as s6
    from benchmarks import harness
    from benchmarks.servers.securemcp_history_server import open_store
    from benchmarks.window import Stats, measure
else:
    import broadcast_bench as s6
    import harness

    sys.path.insert(1, str(harness.SERVERS_DIR))
    from securemcp_history_server import open_store
    from window import Stats, measure

SECTION = "## S7 Redis: broadcast and history across processes"
COMMAND = "bash benchmarks/setup_peers.sh && .venv/bin/python benchmarks/redis_bench.py"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
ROOM = "bench"


# --- Redis ---------------------------------------------------------------------


@dataclass(frozen=True)
class Redis:
    """The Redis server in use: its URL and process id."""

    url: str
    pid: int

    def command(self, *args: str) -> str:
        """One command through ``redis-cli``; its output, stripped."""
        done = subprocess.run(
            [REDIS_CLI, "-u", self.url, *args], capture_output=True, text=True, timeout=10
        )
        if done.returncode != 0 or done.stdout.startswith("ERR"):
            raise RuntimeError(f"redis-cli {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout.strip()

    def info(self, field: str) -> str:
        """One field of ``INFO``."""
        for line in self.command("INFO").splitlines():
            name, _, value = line.partition(":")
            if name == field:
                return value.strip()
        raise RuntimeError(f"INFO has no {field}")

    @contextlib.contextmanager
    def appendfsync(self, policy: str) -> Iterator[None]:
        """Run with ``appendfsync`` set to ``policy``, then put the old value back."""
        old = self.command("CONFIG", "GET", "appendfsync").splitlines()[-1]
        self.command("CONFIG", "SET", "appendfsync", policy)
        try:
            yield
        finally:
            self.command("CONFIG", "SET", "appendfsync", old)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_running(url: str | None, directory: Path) -> Iterator[Redis]:
    """The Redis at ``url``; without one, a ``redis-server`` of our own on CPU 0, AOF on."""
    if url is not None:
        found = Redis(url, 0)
        yield Redis(url, int(found.info("process_id")))
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--logfile", str(directory / "redis.log")]  # fmt: skip
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=lambda: harness.pin(0))
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start (see {directory}/redis.log)")
            time.sleep(0.02)
        yield Redis(f"redis://127.0.0.1:{port}/0", process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
    runs: harness.Collector, round_number: int, setups: Sequence[Setup], redis: Redis,
    args: argparse.Namespace,
) -> None:  # fmt: skip
    """Each setup's servers started, both workloads measured, servers stopped."""
    for setup in setups:
        with contextlib.ExitStack() as stack:
            servers = [
                stack.enter_context(harness.running(setup.name, setup.argv(redis.url), False))
                for _ in range(setup.processes)
            ]
            for workload in s6.WORKLOADS:
                result = s6.measure(servers, workload, args, redis.pid)
                runs.add(round_number, setup.name, workload.key, result, s6.summary(result))


# --- history ---------------------------------------------------------------------


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


def _spec(store: Store, redis: Redis, directory: Path, level: str) -> str:
    return redis.url if store.appendfsync else f"sqlite:{directory / f'chat-{level}.db'}"


def history_round(
    runs: harness.Collector, round_number: int, redis: Redis, directory: Path,
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
                        sys.executable, str(Path(__file__).resolve()), "--store-client",
                        "--store", spec, "--op", op, "--server-pid", str(redis.pid),
                        "--store-connections", str(n), *timing,
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
    """``--store-client``: ``N`` tasks calling the store in a closed loop; the window's figures."""
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
        tasks = [asyncio.create_task(one()) for _ in range(args.store_connections)]
        # The SQLite store runs in this process: its CPU is this process's.
        pid = args.server_pid if args.store.startswith("redis") else os.getpid()
        figures = await measure(
            stats, asyncio.sleep, warmup=args.warmup, duration=args.duration, server_pid=pid
        )
        await asyncio.gather(*tasks)
    return figures


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


def _versions(redis: Redis) -> dict[str, str]:
    found = harness.own_versions(("securemcp", "anyio", "trio", "uvloop", "coredis"))
    found["redis-server"] = redis.info("redis_version")
    found.update(harness.peer_versions(["picows"]))
    return found


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


def _median_of(results: harness.Results, key: tuple[str, str], metric: str) -> float | None:
    """The median of ``metric`` over the runs of ``key`` (``cpu`` is CPU per delivery)."""
    if metric != "cpu":
        return harness.median(results, key, metric)
    runs = results.get(key)
    return statistics.median(s6.cpu_per_delivery(r) for r in runs) if runs else None


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
    lines += [f"- `{store.name}`: {store.description}" for store in STORES]
    for workload in s6.WORKLOADS:
        lines += s6.workload_table(results, [s.name for s in setups], workload, redis=True)
    lines += ratio_lines(results, setups)
    for level, title in (("tools", "through the chat's tools"), ("store", "at the store")):
        lines += ["", f"### History {title}", "", *history_table(results, level, connections)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the store client (``--store-client``) or the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store-client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--op", choices=list(OPS), help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--store-connections", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=0.5, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=3.0, help=argparse.SUPPRESS)
    harness.add_options(parser, "asyncio only, 20 receivers, short history windows")
    parser.set_defaults(runs=2)
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--backends", default="asyncio,uvloop,trio",
                        help="comma-separated: asyncio, uvloop, trio")  # fmt: skip
    parser.add_argument("--parts", default="broadcast,history", help="broadcast, history")
    parser.add_argument("--receivers", type=int, default=500)
    parser.add_argument("--messages", type=int, default=400, help="measured messages per run")
    parser.add_argument("--warmup-messages", type=int, default=40)
    parser.add_argument("--stall", type=float, default=20.0, help="seconds without progress")
    parser.add_argument("--connections", default="1,16", help="history callers, comma-separated")
    parser.add_argument("--history-warmup", type=float, default=0.5)
    parser.add_argument("--history-duration", type=float, default=3.0)
    parser.add_argument("--from-json", type=Path, metavar="PATH",
                        help="measure nothing: rewrite the section from a --json dump")  # fmt: skip
    args = parser.parse_args(argv)
    if args.store_client:
        print(json.dumps(asyncio.run(store_load(args))), flush=True)
        return 0
    if args.from_json:
        dump = json.loads(args.from_json.read_text())
        results = {(row["server"], row["workload"]): row["runs"] for row in dump["results"]}
        ran = [setup for setup in SETUPS if (setup.name, "B1") in results]
        harness.report(args, SECTION, markdown(results, ran, dump["meta"]), dump["meta"], results)
        return 0
    if args.smoke:
        args.receivers, args.messages, args.warmup_messages, args.runs = 20, 20, 4, 1
        args.history_warmup, args.history_duration, args.backends = 0.1, 0.4, "asyncio"
        args.connections = "4"
    args.connections = [int(n) for n in args.connections.split(",")]
    backends = set(args.backends.split(","))
    parts = set(args.parts.split(","))
    setups = harness.chosen(
        [s for s in SETUPS if s.name.split()[0] in backends and "broadcast" in parts], args.only
    )

    load_before = harness.load_average()
    runs = harness.Collector()
    with tempfile.TemporaryDirectory(prefix="s7-") as temp, redis_running(
        args.redis_url, Path(temp)
    ) as redis:  # fmt: skip
        for round_number in range(1, args.runs + 1):
            broadcast_round(runs, round_number, setups, redis, args)
            if "history" in parts:
                history_round(runs, round_number, redis, Path(temp), args)
        meta = runs.meta(
            load_before, _versions(redis), args.runs, COMMAND,
            receivers=args.receivers, warmup=args.warmup_messages, messages=args.messages,
            connections=args.connections, history_warmup=args.history_warmup,
            history_duration=args.history_duration, fs=_fs_type(Path(temp)),
        )  # fmt: skip
    harness.report(args, SECTION, markdown(runs.results, setups, meta), meta, runs.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
