"""S6 broadcast: one sender, 500 receivers in one room, every SecureMCP backend beside nextmcp.

Each server runs in its own process pinned to CPU 0; the client process
(this file with ``--client``, run by ``benchmarks/.venv-peers``' Python so
that it uses picows on uvloop, else the project's Python with the
``websockets`` client) is pinned to CPU 1 and holds every connection: the
receivers and the sender, all joined to one room. The sender calls
``send_message`` with a sequence number in the text; the server fans each
message out as a ``chat.message`` notification. A message is *delivered*
when the last receiver has it: its **lag** is the time from the sender's
send to that last receipt (one process, one clock).

Two workloads, closed loop on delivery (the next message goes out as soon
as one of the ``window`` messages in flight reached every receiver):

- B1 paced: window 1, the fan-out latency of one message alone (lag p50/max);
- B2 saturated: window 8, deliveries per second (receiver receipts / s).

SecureMCP runs ``benchmarks/servers/securemcp_broadcast_server.py``
(``ctx.publish``); nextmcp 0.6.0 runs
``benchmarks/servers/nextmcp_broadcast_server.py`` (``WebSocketTransport.broadcast()``,
which sends to every connection; the sender joins the room in both, so both
servers write the same 501 frames per message).

Usage::

    python benchmarks/broadcast_bench.py            # full run, writes its section of RESULTS.md
    python benchmarks/broadcast_bench.py --smoke    # every server, 20 receivers, a few messages
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Run as a script, this file finds its sibling modules on sys.path[0]; mypy knows them by package.
if TYPE_CHECKING:
    from benchmarks import harness
    from benchmarks.window import server_cpu_seconds
    from benchmarks.wsclient import Opener, open_many, run_workload
else:
    import harness
    from window import server_cpu_seconds
    from wsclient import Opener, open_many, run_workload

SERVERS_DIR = harness.SERVERS_DIR
SECTION = "## S6 broadcast: one sender, a room of receivers"
COMMAND = "bash benchmarks/setup_peers.sh && .venv/bin/python benchmarks/broadcast_bench.py"
ROOM = "bench"
SEQ = "seq:"
"""Marks the sequence number inside each message's text (found without parsing the JSON)."""


@dataclass(frozen=True)
class Workload:
    """One load shape: messages not yet delivered everywhere at most ``window``."""

    key: str
    title: str
    window: int


WORKLOADS = [
    Workload("B1", "B1 paced: 1 message in flight", 1),
    Workload("B2", "B2 saturated: 8 messages in flight", 8),
]


@dataclass(frozen=True)
class Server(harness.Server):
    """A broadcast server to measure."""

    securemcp: bool = True
    needs: str | None = None


SERVERS = [
    Server("securemcp-asyncio", "SecureMCP `ctx.publish`, anyio on asyncio",
           ("securemcp_broadcast_server.py", "--backend", "asyncio"), False),
    Server("securemcp-uvloop", "SecureMCP `ctx.publish`, anyio on asyncio with uvloop",
           ("securemcp_broadcast_server.py", "--backend", "asyncio+uvloop"), False,
           needs="uvloop"),
    Server("securemcp-trio", "SecureMCP `ctx.publish`, anyio on trio",
           ("securemcp_broadcast_server.py", "--backend", "trio"), False),
    Server("nextmcp", "nextmcp 0.6.0 `WebSocketTransport.broadcast()`, websockets underneath",
           ("nextmcp_broadcast_server.py",), True, securemcp=False),
]  # fmt: skip


# --- the client (runs in its own process, ``--client``) ---------------------


class Peer:
    """One connection's callbacks, whatever library carries the frames."""

    def __init__(self, bench: Bench, index: int) -> None:
        self.bench = bench
        self.index = index
        self.send: Callable[[str], None] = lambda text: None
        self.ready = asyncio.get_running_loop().create_future()
        """Done once the peer has joined the room."""
        self.welcomed = False

    def opened(self, send: Callable[[str], None]) -> None:
        """The WebSocket is open; the server greets first."""
        self.send = send

    def received(self, text: str) -> None:
        """One whole text message from the server."""
        at = text.find(SEQ)
        if at != -1 and '"chat.message"' in text:
            self.bench.delivered(int(text[at + 4 : at + 14]), self.index)
        elif not self.welcomed:
            self.welcomed = True
            self.send(
                json.dumps(
                    {"id": "join", "method": "invoke_tool",
                     "params": {"tool_name": "join_room", "params": {"room": ROOM}}}
                )
            )  # fmt: skip
        elif not self.ready.done() and '"join"' in text:
            if '"result"' in text:
                self.ready.set_result(None)
            else:
                self.ready.set_exception(RuntimeError(f"join_room failed: {text}"))
        elif '"error"' in text:
            self.bench.errors += 1

    def closed(self) -> None:
        """The connection ended."""
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before joining"))
        self.bench.closed += 1


class Bench:
    """The sender's loop and the receipts of every receiver."""

    def __init__(
        self,
        receivers: int,
        window: int,
        warmup: int,
        messages: int,
        server_pids: Sequence[int],
        redis_pid: int = 0,
    ) -> None:
        self.receivers = receivers
        self.server_pids = server_pids
        """Every server process (S7 runs two): their CPU is summed."""
        self.redis_pid = redis_pid
        """The Redis server's process, if any (0: none), whose CPU is reported apart."""
        self.window = window
        self.warmup = warmup
        self.total = warmup + messages
        self.sent_at: dict[int, float] = {}
        self.counts: dict[int, int] = {}
        self.lags: list[float] = []
        self.next_seq = 0
        self.done_count = 0
        self.errors = 0
        self.closed = 0
        self.window_start = 0.0
        self.window_end = 0.0
        self.cpu: dict[str, float] = {}
        self.finished = asyncio.get_running_loop().create_future()
        self.sender: Peer | None = None
        self.last_progress = time.perf_counter()

    def send_next(self) -> None:
        """Send one more message if the run is not over."""
        assert self.sender is not None
        seq = self.next_seq
        if seq >= self.total:
            return
        self.next_seq += 1
        text = (
            f'{{"id":"s{seq}","method":"invoke_tool","params":{{"tool_name":"send_message",'
            f'"params":{{"username":"bench","message":"{SEQ}{seq:010d} hello everybody",'
            f'"room":"{ROOM}"}}}}}}'
        )
        now = time.perf_counter()
        if seq == self.warmup:
            self.window_start = now
            self.cpu["client0"] = time.process_time()
            self.read_cpu("0")
        self.sent_at[seq] = now
        self.counts[seq] = 0
        self.sender.send(text)

    def delivered(self, seq: int, index: int) -> None:
        """Receiver ``index`` got message ``seq``."""
        now = time.perf_counter()
        if index < 0:
            return  # The sender's own copy: written by the server, not counted.
        count = self.counts.get(seq, -1) + 1
        if count == 0:
            return  # A copy of a message already delivered everywhere: not ours to count.
        if count < self.receivers:
            self.counts[seq] = count
            return
        self.last_progress = now
        del self.counts[seq]
        if seq >= self.warmup:
            self.lags.append(now - self.sent_at[seq])
        del self.sent_at[seq]
        self.done_count += 1
        if self.done_count == self.total:
            self.window_end = now
            self.cpu["client1"] = time.process_time()
            self.read_cpu("1")
            if not self.finished.done():
                self.finished.set_result(None)
        else:
            self.send_next()

    def read_cpu(self, end: str) -> None:
        """The servers' CPU time so far (and Redis's), at ``end`` "0" or "1" of the window."""
        self.cpu["server" + end] = sum(server_cpu_seconds(pid) for pid in self.server_pids)
        if self.redis_pid:
            self.cpu["redis" + end] = server_cpu_seconds(self.redis_pid)

    def figures(self) -> dict[str, Any]:
        """Deliveries per second over the measured messages, and their lags."""
        measured = len(self.lags)
        seconds = self.window_end - self.window_start
        ordered = sorted(self.lags)
        cpu = self.cpu
        more = {}
        if self.redis_pid:
            more["redis_cpu_pct"] = 100 * (cpu["redis1"] - cpu["redis0"]) / seconds
        return {
            "messages": measured,
            "deliveries": measured * self.receivers,
            "seconds": seconds,
            "deliveries_per_s": measured * self.receivers / seconds if seconds > 0 else 0.0,
            "lag_p50_ms": ordered[len(ordered) // 2] * 1000 if ordered else 0.0,
            "lag_max_ms": ordered[-1] * 1000 if ordered else 0.0,
            "errors": self.errors,
            "client_cpu_pct": 100 * (cpu["client1"] - cpu["client0"]) / seconds,
            "server_cpu_pct": 100 * (cpu["server1"] - cpu["server0"]) / seconds,
            **more,
        }


async def run_client(args: argparse.Namespace, opener: Opener) -> dict[str, Any]:
    """Connect everybody, join the room, run the sender's loop; the figures.

    With several ``--url`` (one room across server processes) the receivers
    are dealt out evenly between them, and the sender joins the first.
    """
    bench = Bench(
        args.receivers, args.window, args.warmup, args.messages, args.server_pid, args.redis_pid
    )
    peers = [Peer(bench, index) for index in range(args.receivers)]
    sender = Peer(bench, -1)
    urls: list[str] = args.url
    groups = [peers[first :: len(urls)] for first in range(len(urls))]
    groups[0].append(sender)
    opened = await asyncio.gather(
        *(open_many(opener, url, group, None, 50) for url, group in zip(urls, groups, strict=True))
    )
    closers = [close for group in opened for close in group]
    bench.sender = sender
    for _ in range(args.window):
        bench.send_next()
    # Polling for a stall: a server that drops a receiver's copy would otherwise hang the run.
    while not bench.finished.done():
        await asyncio.wait([bench.finished], timeout=1.0)
        if time.perf_counter() - bench.last_progress > args.stall:
            raise RuntimeError(
                f"no message reached every receiver for {args.stall} s "
                f"({bench.done_count}/{bench.total} delivered, {bench.closed} closed)"
            )
    figures = bench.figures()
    figures["closed"] = bench.closed
    for close in closers:
        close()
    await asyncio.sleep(0.1)
    return figures


def client_main(args: argparse.Namespace) -> None:
    """The ``--client`` process: one JSON line of figures."""
    print(json.dumps(run_workload(lambda opener: run_client(args, opener))), flush=True)


# --- the orchestrator ---------------------------------------------------------


def measure(
    servers: Sequence[tuple[int, int]],
    workload: Workload,
    args: argparse.Namespace,
    redis_pid: int = 0,
) -> dict[str, Any]:
    """Run the client once against running servers, each (port, pid); its JSON figures."""
    argv = [harness.client_python(), str(Path(__file__).resolve()), "--client"]
    for port, pid in servers:
        argv += ["--url", f"ws://127.0.0.1:{port}/", "--server-pid", str(pid)]
    argv += [
        "--redis-pid", str(redis_pid), "--receivers", str(args.receivers),
        "--window", str(workload.window), "--warmup", str(args.warmup_messages),
        "--messages", str(args.messages), "--stall", str(args.stall),
    ]  # fmt: skip
    return harness.run_client(argv, f"client failed on {workload.key}", 600)


def summary(result: dict[str, Any]) -> str:
    """One run's figures for the progress line."""
    redis = f" redis {result['redis_cpu_pct']:.0f}%" if "redis_cpu_pct" in result else ""
    return (
        f"{result['deliveries_per_s']:,.0f} deliveries/s, lag p50 "
        f"{result['lag_p50_ms']:.2f} ms max {result['lag_max_ms']:.2f} ms, "
        f"CPU server {result['server_cpu_pct']:.0f}% client {result['client_cpu_pct']:.0f}%"
        f"{redis} (errors {result['errors']})"
    )


def _versions() -> dict[str, str]:
    found = harness.own_versions(("securemcp", "anyio", "trio", "wsproto", "uvloop"))
    found.update(harness.peer_versions(["nextmcp", "websockets", "picows"]))
    return found


def cpu_per_delivery(run: dict[str, Any]) -> float:
    """The servers' CPU microseconds per receiver delivery in one run's figures.

    Less sensitive than deliveries/s to other processes taking the server's
    core: CPU time counts only what the servers themselves ran.
    """
    rate: float = run["deliveries_per_s"]
    return run["server_cpu_pct"] * 1e4 / rate if rate else 0.0


def workload_table(
    results: harness.Results, names: Sequence[str], workload: Workload, *, redis: bool = False
) -> list[str]:
    """The lines of ``workload``'s table: a row per server name that ran it (none: no table).

    ``redis`` adds the Redis server's CPU and the servers' CPU per delivery (S7).
    """
    rows = [name for name in names if (name, workload.key) in results]
    if not rows:
        return []
    extra = " redis CPU | server CPU us / delivery |" if redis else ""
    lines = [
        "",
        f"### {workload.title}",
        "",
        "| server | deliveries/s (higher is better) | min - max | lag p50 ms | lag max ms "
        f"| server CPU | client CPU |{extra} errors |",
        "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * (3 if redis else 1),
    ]
    for name in rows:
        runs = results[(name, workload.key)]
        rates = [r["deliveries_per_s"] for r in runs]
        p50 = statistics.median(r["lag_p50_ms"] for r in runs)
        worst = max(r["lag_max_ms"] for r in runs)
        redis_cpu = (
            f" {statistics.median(r.get('redis_cpu_pct', 0.0) for r in runs):.0f}% | "
            f"{statistics.median(cpu_per_delivery(r) for r in runs):.1f} |"
            if redis
            else ""
        )
        lines.append(
            f"| `{name}` | **{statistics.median(rates):,.0f}** | "
            f"{min(rates):,.0f} - {max(rates):,.0f} | {p50:.2f} | {worst:.2f} | "
            f"{statistics.median(r['server_cpu_pct'] for r in runs):.0f}% | "
            f"{statistics.median(r['client_cpu_pct'] for r in runs):.0f}% |{redis_cpu} "
            f"{sum(r['errors'] for r in runs)} |"
        )
    return lines


def markdown(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    servers: Sequence[Server],
    meta: dict[str, Any],
) -> str:
    """The RESULTS.md section: conditions, one table per workload, the ratios, the target."""
    lines = [
        SECTION,
        "",
        f"One sender and {meta['receivers']} receivers, all joined to one room, in one client "
        f"process pinned to CPU 1 ({meta['client']}); each server in its own process pinned to "
        "CPU 0. The sender calls `send_message`; the server fans the message out as a "
        "`chat.message` notification to every member (the sender too, in both systems, so each "
        f"message costs {meta['receivers'] + 1} frames). A message's **lag** is the time from "
        "the sender's send to the last receiver's receipt (one clock); **deliveries/s** counts "
        "receiver receipts over the window. Closed loop on delivery: the next message goes out "
        "when one in flight has reached every receiver. "
        f"{meta['warmup']} warm-up messages, then {meta['messages']} measured, per run; "
        f"{meta['runs']} runs, rounds interleaved; medians with the min - max range.",
        "",
        "What each workload shows: in B1 every frame leaves in a send() of its own, so the lag "
        "is the server's cost of writing one message to every connection. B2 lets a server "
        "coalesce several messages per connection in one write. nextmcp reads a connection's "
        "next message only after its tool returned, and its `broadcast()` awaits every send, so "
        "its B2 is its B1 with eight times the lag. `server CPU` and `client CPU` are the busy "
        "share of one core during the window: a client well under 100% is not the bottleneck.",
        "",
        *harness.conditions(meta, "before", "(shared machine: compare the ratios of one run)"),
    ]
    lines += [f"- `{server.name}`: {server.description}" for server in servers]
    for workload in WORKLOADS:
        lines += workload_table(results, [server.name for server in servers], workload)
    ours = [s for s in servers if s.securemcp]
    lines += [
        "",
        "### Ratios SecureMCP / nextmcp",
        "",
        "Deliveries/s (above 1 SecureMCP is faster) and lag p50 (below 1 SecureMCP is faster), "
        "ratio of the medians. Lag max is the worst of all runs, shown in the tables above.",
        "",
        "| SecureMCP / nextmcp | B1 deliveries/s | B1 lag p50 | B2 deliveries/s | B2 lag p50 |",
        "|---|---:|---:|---:|---:|",
    ]
    for server in ours:
        cells = []
        for key in ("B1", "B2"):
            for metric in ("deliveries_per_s", "lag_p50_ms"):
                a = harness.median(results, (server.name, key), metric)
                b = harness.median(results, ("nextmcp", key), metric)
                cells.append("" if a is None or not b else f"{a / b:.2f}")
        if any(cells):
            lines.append(f"| `{server.name}` | " + " | ".join(cells) + " |")
    a = harness.median(results, ("securemcp-asyncio", "B2"), "deliveries_per_s")
    b = harness.median(results, ("nextmcp", "B2"), "deliveries_per_s")
    if a is not None and b:
        met = "met" if a / b >= 2 else "**not met**"
        lines += ["", f"Target: B2 deliveries/s on asyncio >= 2 x nextmcp: {a / b:.2f} x, {met}."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the client (``--client``) or the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", action="append", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, action="append", help=argparse.SUPPRESS)
    parser.add_argument("--redis-pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--window", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=20, help=argparse.SUPPRESS)
    harness.add_options(parser, "every server, briefly")
    parser.add_argument("--receivers", type=int, default=500)
    parser.add_argument("--messages", type=int, default=400, help="measured messages per run")
    parser.add_argument("--warmup-messages", type=int, default=40)
    parser.add_argument("--stall", type=float, default=20.0, help="seconds without progress")
    args = parser.parse_args(argv)
    if args.client:
        client_main(args)
        return 0
    if args.smoke:
        args.receivers, args.messages, args.warmup_messages, args.runs = 20, 20, 4, 1

    servers = harness.chosen(SERVERS, args.only)
    load_before = harness.load_average()
    runs = harness.Collector()
    for round_number in range(1, args.runs + 1):
        for server in servers:
            argv = (str(SERVERS_DIR / server.argv[0]), *server.argv[1:])
            with harness.running(server.name, argv, server.peers_env) as (port, pid):
                for workload in WORKLOADS:
                    result = measure([(port, pid)], workload, args)
                    runs.add(round_number, server.name, workload.key, result, summary(result))
    meta = runs.meta(
        load_before, _versions(), args.runs, COMMAND,
        receivers=args.receivers, warmup=args.warmup_messages, messages=args.messages,
    )  # fmt: skip
    harness.report(args, SECTION, markdown(runs.results, servers, meta), meta, runs.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
