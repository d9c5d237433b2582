"""The load generator: one process driving one workload against one server, then one JSON line.

The same client for every server: ``picows`` (a Cython WebSocket client for
asyncio) on uvloop, from ``benchmarks/.venv-peers``. Where picows is not
installed (a fresh CI machine without the peers environment) it falls back
to the ``websockets`` client of the dev extra, which is slower: figures from
the fallback only keep the harness working (``--smoke``), they are not for
comparison.

Closed loop: each connection keeps ``--depth`` calls in flight and sends the
next one as soon as an answer arrives. After ``--warmup`` seconds the window
of ``--duration`` seconds opens; only calls answered inside it count. The
CPU time of this process and of the server (``/proc/PID/stat``) is taken at
both ends of the window, so that the report shows which side was busy.

``--idle N`` (S4) instead warms the server up, reads its resident memory,
opens ``N`` idle connections, reads it again, and reports the difference per
connection.

Usage::

    python benchmarks/loadgen.py --url ws://127.0.0.1:PORT --server-pid PID \\
        [--dialect seed|mcp] [--connections C] [--depth D] [--payload BYTES] \\
        [--warmup S] [--duration S] [--idle N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

SendText = Callable[[str], None]
Opener = Callable[[str, "Caller", str | None], Awaitable[Callable[[], None]]]

MESSAGE = "hello from the benchmark"
"""The text echoed when no ``--payload`` size is given (24 bytes)."""

MCP_VERSION = "2025-06-18"
"""The protocol version the MCP dialect's ``initialize`` asks for."""

CLK_TCK = os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far, from ``/proc``."""
    with open(f"/proc/{pid}/stat") as file:
        stat = file.read()
    # The command name may hold spaces; the fields after its closing parenthesis do not.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def server_rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB (``VmRSS``)."""
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class Stats:
    """What the connections record while the window is open."""

    measuring: bool = False
    running: bool = True
    calls: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)


class Caller:
    """One connection's calls, whatever client library carries the frames."""

    def __init__(
        self, dialect: str, message: str, depth: int, stats: Stats, *, idle: bool = False
    ) -> None:
        self.dialect = dialect
        self.depth = depth
        self.stats = stats
        self.idle = idle
        self.send: SendText = lambda text: None
        self.ready = asyncio.get_running_loop().create_future()
        self.pending: dict[Any, float] = {}
        self.next_id = 1
        self.alive = False
        if dialect == "mcp":
            self.template = (
                '{"jsonrpc":"2.0","id":%d,"method":"tools/call",'
                '"params":{"name":"echo","arguments":{"message":"' + message + '"}}}'
            )
        else:
            self.template = (
                '{"id":"%d","method":"invoke_tool",'
                '"params":{"tool_name":"echo","params":{"message":"' + message + '"}}}'
            )

    def opened(self, send: SendText) -> None:
        """The WebSocket handshake succeeded; seed servers greet first, MCP needs initialize."""
        self.send = send
        if self.dialect == "mcp":
            params = {
                "protocolVersion": MCP_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "securemcp-loadgen", "version": "1"},
            }
            send(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}))

    def closed(self) -> None:
        """The connection ended; unanswered calls are errors."""
        self.alive = False
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))
        if self.stats.measuring:
            self.stats.errors += len(self.pending)
        self.pending.clear()

    def _start(self) -> None:
        self.alive = True
        if not self.ready.done():
            self.ready.set_result(None)
        if not self.idle:
            for _ in range(self.depth):
                self._call()

    def _call(self) -> None:
        call_id = self.next_id
        self.next_id += 1
        self.pending[call_id if self.dialect == "mcp" else str(call_id)] = time.perf_counter()
        self.send(self.template % call_id)

    def received(self, text: str) -> None:
        """One whole text message from the server."""
        now = time.perf_counter()
        answer = json.loads(text)
        answer_id = answer.get("id")
        if self.dialect == "seed" and answer_id == "welcome" and not self.ready.done():
            self._start()
            return
        if self.dialect == "mcp" and answer_id == 0 and not self.ready.done():
            self.send('{"jsonrpc":"2.0","method":"notifications/initialized"}')
            self._start()
            return
        started = self.pending.pop(answer_id, None)
        if started is None:
            return  # A notification or a server ping request: not ours to count.
        result = answer.get("result")
        ok = isinstance(result, dict) and not result.get("isError")
        stats = self.stats
        if stats.measuring:
            if ok:
                stats.calls += 1
                stats.latencies.append(now - started)
            else:
                stats.errors += 1
        if stats.running:
            self._call()


async def open_picows(url: str, caller: Caller, subprotocol: str | None) -> Callable[[], None]:
    """Connect with picows; returns the function that closes the connection."""
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    class Listener(WSListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        def on_ws_connected(self, transport: WSTransport) -> None:
            caller.opened(lambda text: transport.send(WSMsgType.TEXT, text.encode()))

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind is WSMsgType.TEXT or kind is WSMsgType.CONTINUATION:
                if frame.fin and not self.parts:
                    caller.received(frame.get_payload_as_utf8_text())
                    return
                self.parts.append(frame.get_payload_as_bytes())
                if frame.fin:
                    data, self.parts = b"".join(self.parts), []
                    caller.received(data.decode())
            elif kind is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            caller.closed()

    headers = {"Sec-WebSocket-Protocol": subprotocol} if subprotocol else None
    transport, _listener = await ws_connect(
        Listener, url, extra_headers=headers, max_frame_size=16 * 1024 * 1024
    )

    def close() -> None:
        if not transport.is_disconnected:
            transport.send_close()
            transport.disconnect()

    return close


async def open_websockets(url: str, caller: Caller, subprotocol: str | None) -> Callable[[], None]:
    """Connect with the ``websockets`` client (the fallback); returns the closing function."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed
    from websockets.typing import Subprotocol

    protocols = [Subprotocol(subprotocol)] if subprotocol else None
    ws = await connect(url, subprotocols=protocols, compression=None, max_size=None)
    outgoing: asyncio.Queue[str] = asyncio.Queue()

    async def write() -> None:
        while True:
            await ws.send(await outgoing.get())

    async def read() -> None:
        try:
            async for message in ws:
                caller.received(message if isinstance(message, str) else message.decode())
        except ConnectionClosed:
            pass
        finally:
            caller.closed()

    tasks = [asyncio.create_task(write()), asyncio.create_task(read())]
    caller.opened(outgoing.put_nowait)

    def close() -> None:
        tasks[0].cancel()
        tasks.append(asyncio.create_task(ws.close()))

    return close


def choose_client() -> tuple[Opener, str]:
    """picows where installed, else websockets; and the name to report."""
    try:
        import picows
    except ImportError:
        from importlib.metadata import version

        return open_websockets, f"websockets {version('websockets')} (fallback)"
    return open_picows, f"picows {picows.__version__}"


def percentile(ordered: list[float], fraction: float) -> float:
    """The value at ``fraction`` of a sorted list (nearest rank); 0 when empty."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def open_many(
    opener: Opener, url: str, callers: list[Caller], subprotocol: str | None, parallel: int
) -> list[Callable[[], None]]:
    """Open a connection per caller, ``parallel`` handshakes at a time; wait until each is ready."""
    gate = asyncio.Semaphore(parallel)
    closers: list[Callable[[], None]] = []

    async def one(caller: Caller) -> None:
        async with gate:
            closers.append(await opener(url, caller, subprotocol))
            await asyncio.wait_for(caller.ready, 30)

    await asyncio.gather(*(one(caller) for caller in callers))
    return closers


async def run_load(args: argparse.Namespace, opener: Opener) -> dict[str, Any]:
    """Closed-loop calls for warmup + duration seconds; the figures of the window."""
    stats = Stats()
    message = "a" * args.payload if args.payload else MESSAGE
    subprotocol = "mcp" if args.dialect == "mcp" else None
    callers = [Caller(args.dialect, message, args.depth, stats) for _ in range(args.connections)]
    closers = await open_many(opener, args.url, callers, subprotocol, 50)
    await asyncio.sleep(args.warmup)
    stats.measuring = True
    cpu0, server0, wall0 = time.process_time(), server_cpu_seconds(args.server_pid), time.time()
    await asyncio.sleep(args.duration)
    stats.measuring = False
    cpu1, server1, wall1 = time.process_time(), server_cpu_seconds(args.server_pid), time.time()
    stats.running = False
    # Let the calls in flight land before closing, so the server sees clean closes.
    deadline = time.monotonic() + 2
    # Polling: one check over every connection is simpler than an event per caller.
    while any(caller.pending for caller in callers) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    for close in closers:
        close()
    await asyncio.sleep(0.05)
    elapsed = wall1 - wall0
    ordered = sorted(stats.latencies)
    return {
        "calls": stats.calls,
        "errors": stats.errors,
        "seconds": elapsed,
        "calls_per_s": stats.calls / elapsed,
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "loadgen_cpu_pct": 100 * (cpu1 - cpu0) / elapsed,
        "server_cpu_pct": 100 * (server1 - server0) / elapsed,
    }


async def run_idle(args: argparse.Namespace, opener: Opener) -> dict[str, Any]:
    """S4: the server's resident memory per idle connection."""
    # Warm the server first so that first-use allocations (imports, caches)
    # are not charged to the idle connections.
    warm = await run_load(
        argparse.Namespace(**{**vars(args), "connections": 8, "depth": 4, "duration": 0.3}),
        opener,
    )
    await asyncio.sleep(0.5)
    before = server_rss_kib(args.server_pid)
    stats = Stats()
    callers = [Caller(args.dialect, MESSAGE, 0, stats, idle=True) for _ in range(args.idle)]
    started = time.time()
    subprotocol = "mcp" if args.dialect == "mcp" else None
    closers = await open_many(opener, args.url, callers, subprotocol, 64)
    opening = time.time() - started
    await asyncio.sleep(1.0)
    after = server_rss_kib(args.server_pid)
    open_now = sum(caller.alive for caller in callers)
    for close in closers:
        close()
    await asyncio.sleep(0.2)
    return {
        "connections": open_now,
        "errors": warm["errors"],
        "open_seconds": opening,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": (after - before) / args.idle,
    }


def main() -> None:
    """Parse the options, run the workload, print its figures as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--dialect", choices=["seed", "mcp"], default="seed")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--payload", type=int, default=0, help="message size in bytes")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--idle", type=int, default=0, help="S4: idle connections to open")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    opener, client = choose_client()
    workload = run_idle if args.idle else run_load
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(workload(args, opener))
        loop = "asyncio"
    else:
        result = uvloop.run(workload(args, opener))
        loop = "uvloop"
    result["client"] = f"{client} on {loop}"
    print(json.dumps(result))


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
    sys.stdout.flush()
