"""The S6/S7 broadcast client: one process holding every receiver and the sender.

Run by :func:`benchmarks.broadcast.measure` (with ``benchmarks/.venv-peers``'
Python, so that it uses picows on uvloop, else the project's Python with the
``websockets`` client), pinned to CPU 1. Every connection joins one room; the
sender calls ``send_message`` with a sequence number in the text, and the
server fans each message out as a ``chat.message`` notification. A message is
*delivered* when the last receiver has it: its **lag** is the time from the
sender's send to that last receipt (one process, one clock). Closed loop on
delivery: the next message goes out as soon as one of the ``--window``
messages in flight reached every receiver. Prints one JSON line of figures.

Usage (what ``measure`` runs)::

    python benchmarks/broadcast_client.py --url ws://127.0.0.1:PORT/ --server-pid PID \\
        [--url ... --server-pid ...] [--redis-pid PID] [--receivers N] [--window N] \\
        [--warmup N] [--messages N] [--stall S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

# Run as a script, this file finds its sibling modules on sys.path[0]; mypy knows them by package.
if TYPE_CHECKING:
    from benchmarks.window import server_cpu_seconds
    from benchmarks.wsclient import Opener, open_many, run_workload
else:
    from window import server_cpu_seconds
    from wsclient import Opener, open_many, run_workload

ROOM = "bench"
SEQ = "seq:"
"""Marks the sequence number inside each message's text (found without parsing the JSON)."""


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the client once: one JSON line of figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", action="append", required=True, help="a server's ws:// URL")
    parser.add_argument("--server-pid", type=int, action="append", default=[])
    parser.add_argument("--redis-pid", type=int, default=0, help="Redis's pid (0: no Redis)")
    parser.add_argument("--receivers", type=int, default=500)
    parser.add_argument("--window", type=int, default=1, help="messages in flight")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up messages")
    parser.add_argument("--messages", type=int, default=400, help="measured messages")
    parser.add_argument("--stall", type=float, default=20.0, help="seconds without progress")
    args = parser.parse_args(argv)
    print(json.dumps(run_workload(lambda opener: run_client(args, opener))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
