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
import contextlib
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVERS_DIR = HERE / "servers"
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
RESULTS = HERE / "RESULTS.md"
SECTION = "## S6 broadcast: one sender, a room of receivers"
COMMAND = "bash benchmarks/setup_peers.sh && .venv/bin/python benchmarks/broadcast_bench.py"
PORT_LINE = re.compile(r"ws://127\.0\.0\.1:(\d+)")
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
class Server:
    """A broadcast server to measure."""

    name: str
    description: str
    argv: tuple[str, ...]
    peers_env: bool
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

CLK_TCK = os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far, from ``/proc``."""
    with open(f"/proc/{pid}/stat") as file:
        stat = file.read()
    # The command name may hold spaces; the fields after its closing parenthesis do not.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Peer:
    """One connection's callbacks, whatever library carries the frames."""

    def __init__(self, bench: Bench, index: int) -> None:
        self.bench = bench
        self.index = index
        self.send: Callable[[str], None] = lambda text: None
        self.joined = asyncio.get_running_loop().create_future()
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
        elif not self.joined.done() and '"join"' in text:
            if '"result"' in text:
                self.joined.set_result(None)
            else:
                self.joined.set_exception(RuntimeError(f"join_room failed: {text}"))
        elif '"error"' in text:
            self.bench.errors += 1

    def closed(self) -> None:
        """The connection ended."""
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("closed before joining"))
        self.bench.closed += 1


Opener = Callable[[str, Peer], Awaitable[Callable[[], None]]]


class Bench:
    """The sender's loop and the receipts of every receiver."""

    def __init__(
        self, receivers: int, window: int, warmup: int, messages: int, server_pid: int
    ) -> None:
        self.receivers = receivers
        self.server_pid = server_pid
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
            self.cpu["server0"] = server_cpu_seconds(self.server_pid)
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
            self.cpu["server1"] = server_cpu_seconds(self.server_pid)
            if not self.finished.done():
                self.finished.set_result(None)
        else:
            self.send_next()

    def figures(self) -> dict[str, Any]:
        """Deliveries per second over the measured messages, and their lags."""
        measured = len(self.lags)
        seconds = self.window_end - self.window_start
        ordered = sorted(self.lags)
        cpu = self.cpu
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
        }


async def open_picows(url: str, peer: Peer) -> Callable[[], None]:
    """Connect with picows; returns the function that closes the connection."""
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    class Listener(WSListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        def on_ws_connected(self, transport: WSTransport) -> None:
            peer.opened(lambda text: transport.send(WSMsgType.TEXT, text.encode()))

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind is WSMsgType.TEXT or kind is WSMsgType.CONTINUATION:
                if frame.fin and not self.parts:
                    peer.received(frame.get_payload_as_utf8_text())
                    return
                self.parts.append(frame.get_payload_as_bytes())
                if frame.fin:
                    data, self.parts = b"".join(self.parts), []
                    peer.received(data.decode())
            elif kind is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            peer.closed()

    transport, _listener = await ws_connect(Listener, url)

    def close() -> None:
        if not transport.is_disconnected:
            transport.send_close()
            transport.disconnect()

    return close


async def open_websockets(url: str, peer: Peer) -> Callable[[], None]:
    """Connect with the ``websockets`` client (the fallback); returns the closing function."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    ws = await connect(url, compression=None, max_size=None)
    outgoing: asyncio.Queue[str] = asyncio.Queue()

    async def write() -> None:
        while True:
            await ws.send(await outgoing.get())

    async def read() -> None:
        try:
            async for message in ws:
                peer.received(message if isinstance(message, str) else message.decode())
        except ConnectionClosed:
            pass
        finally:
            peer.closed()

    tasks = [asyncio.create_task(write()), asyncio.create_task(read())]
    peer.opened(outgoing.put_nowait)

    def close() -> None:
        tasks[0].cancel()
        tasks.append(asyncio.create_task(ws.close()))

    return close


def choose_client() -> tuple[Opener, str]:
    """picows where installed, else websockets; and the name to report."""
    try:
        import picows
    except ImportError:
        return open_websockets, f"websockets {importlib.metadata.version('websockets')} (fallback)"
    return open_picows, f"picows {picows.__version__}"


async def run_client(args: argparse.Namespace, opener: Opener) -> dict[str, Any]:
    """Connect everybody, join the room, run the sender's loop; the figures."""
    bench = Bench(args.receivers, args.window, args.warmup, args.messages, args.server_pid)
    peers = [Peer(bench, index) for index in range(args.receivers)]
    sender = Peer(bench, -1)
    gate = asyncio.Semaphore(50)
    closers: list[Callable[[], None]] = []

    async def join(peer: Peer) -> None:
        async with gate:
            closers.append(await opener(args.url, peer))
            await asyncio.wait_for(peer.joined, 30)

    await asyncio.gather(*(join(peer) for peer in [*peers, sender]))
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
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    opener, client = choose_client()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run_client(args, opener))
        loop = "asyncio"
    else:
        result = uvloop.run(run_client(args, opener))
        loop = "uvloop"
    result["client"] = f"{client} on {loop}"
    print(json.dumps(result), flush=True)


# --- the orchestrator ---------------------------------------------------------


def _pin(cpu: int) -> None:
    if len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {cpu})


def available_servers() -> list[Server]:
    """The servers this machine can run: nextmcp only where the peers' environment exists."""
    return [
        server
        for server in SERVERS
        if (not server.peers_env or PEERS_PYTHON.exists())
        and (server.needs is None or importlib.util.find_spec(server.needs) is not None)
    ]


@contextlib.contextmanager
def running(server: Server) -> Iterator[tuple[int, int]]:
    """Start ``server`` on port 0, pinned to CPU 0; yield (port, pid); stop it."""
    python = str(PEERS_PYTHON) if server.peers_env else sys.executable
    argv = [python, str(SERVERS_DIR / server.argv[0]), *server.argv[1:]]
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=lambda: _pin(0),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            port = None
            while port is None:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"{server.name} did not start:\n{log.read()}")
                time.sleep(0.05)
                log.seek(0)
                match = PORT_LINE.search(log.read())
                port = int(match.group(1)) if match else None
            yield port, process.pid
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def measure(port: int, pid: int, workload: Workload, args: argparse.Namespace) -> dict[str, Any]:
    """Run the client once against a running server; its JSON figures."""
    python = str(PEERS_PYTHON) if PEERS_PYTHON.exists() else sys.executable
    argv = [
        python, str(Path(__file__).resolve()), "--client",
        "--url", f"ws://127.0.0.1:{port}/", "--server-pid", str(pid),
        "--receivers", str(args.receivers),
        "--window", str(workload.window), "--warmup", str(args.warmup_messages),
        "--messages", str(args.messages), "--stall", str(args.stall),
    ]  # fmt: skip
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=600, preexec_fn=lambda: _pin(1)
    )
    if done.returncode != 0:
        raise RuntimeError(f"client failed on {workload.key}:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _versions() -> dict[str, str]:
    found = {}
    for name in ("securemcp", "anyio", "trio", "wsproto", "uvloop"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    if PEERS_PYTHON.exists():
        code = (
            "import importlib.metadata as m, json;"
            "print(json.dumps({n: m.version(n) for n in ['nextmcp', 'websockets', 'picows']}))"
        )
        out = subprocess.run([str(PEERS_PYTHON), "-c", code], capture_output=True, text=True)
        if out.returncode == 0:
            found.update(json.loads(out.stdout))
    return found


def _median(results: dict[tuple[str, str], list[dict[str, Any]]], key: tuple[str, str],
            metric: str) -> float | None:  # fmt: skip
    runs = results.get(key)
    return statistics.median(r[metric] for r in runs) if runs else None


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
        f"- Date: {meta['date']}",
        f"- Machine: {meta['cores']} cores, {meta['cpu']}, Linux {platform.release()}; "
        f"1-minute load average {meta['load_before']:.2f} before, {meta['load_after']:.2f} after "
        "(shared machine: compare the ratios of one run)",
        f"- Python {platform.python_version()}; "
        + ", ".join(f"{name} {version}" for name, version in meta["versions"].items()),
        f"- Regenerate: `{meta['command']}`",
        "",
        "Servers:",
        "",
    ]
    lines += [f"- `{server.name}`: {server.description}" for server in servers]
    for workload in WORKLOADS:
        rows = [s for s in servers if (s.name, workload.key) in results]
        if not rows:
            continue
        lines += [
            "",
            f"### {workload.title}",
            "",
            "| server | deliveries/s (higher is better) | min - max | lag p50 ms | lag max ms "
            "| server CPU | client CPU | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for server in rows:
            runs = results[(server.name, workload.key)]
            rates = [r["deliveries_per_s"] for r in runs]
            p50 = statistics.median(r["lag_p50_ms"] for r in runs)
            worst = max(r["lag_max_ms"] for r in runs)
            lines.append(
                f"| `{server.name}` | **{statistics.median(rates):,.0f}** | "
                f"{min(rates):,.0f} - {max(rates):,.0f} | {p50:.2f} | {worst:.2f} | "
                f"{statistics.median(r['server_cpu_pct'] for r in runs):.0f}% | "
                f"{statistics.median(r['client_cpu_pct'] for r in runs):.0f}% | "
                f"{sum(r['errors'] for r in runs)} |"
            )
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
                a = _median(results, (server.name, key), metric)
                b = _median(results, ("nextmcp", key), metric)
                cells.append("" if a is None or not b else f"{a / b:.2f}")
        if any(cells):
            lines.append(f"| `{server.name}` | " + " | ".join(cells) + " |")
    a = _median(results, ("securemcp-asyncio", "B2"), "deliveries_per_s")
    b = _median(results, ("nextmcp", "B2"), "deliveries_per_s")
    if a is not None and b:
        met = "met" if a / b >= 2 else "**not met**"
        lines += ["", f"Target: B2 deliveries/s on asyncio >= 2 x nextmcp: {a / b:.2f} x, {met}."]
    return "\n".join(lines) + "\n"


def write_section(section: str) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md, keeping the others."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = text.find(SECTION)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        following = text.find("\n## ", start + len(SECTION))
        rest = "" if following == -1 else text[following + 1 :]
        text = text[:start] + section + ("\n" + rest if rest else "")
    RESULTS.write_text(text)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the client (``--client``) or the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--window", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="every server, briefly")
    parser.add_argument("--receivers", type=int, default=500)
    parser.add_argument("--messages", type=int, default=400, help="measured messages per run")
    parser.add_argument("--warmup-messages", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stall", type=float, default=20.0, help="seconds without progress")
    parser.add_argument("--only", default="", help="comma-separated server names")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                        help="write RESULTS.md (default: yes, except with --smoke)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also dump every run's figures here")
    args = parser.parse_args(argv)
    if args.client:
        client_main(args)
        return 0
    if args.smoke:
        args.receivers, args.messages, args.warmup_messages, args.runs = 20, 20, 4, 1
    write = (not args.smoke) if args.write is None else args.write

    servers = available_servers()
    if args.only:
        servers = [s for s in servers if s.name in set(args.only.split(","))]
    missing = [s.name for s in SERVERS if s not in available_servers()]
    if missing:
        print(f"not available here (skipped): {', '.join(missing)}", file=sys.stderr)
    load_before = _load()
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    client = ""
    for round_number in range(1, args.runs + 1):
        for server in servers:
            with running(server) as (port, pid):
                for workload in WORKLOADS:
                    result = measure(port, pid, workload, args)
                    client = result.pop("client", client)
                    results.setdefault((server.name, workload.key), []).append(result)
                    print(
                        f"[round {round_number}] {server.name:18} {workload.key}: "
                        f"{result['deliveries_per_s']:,.0f} deliveries/s, lag p50 "
                        f"{result['lag_p50_ms']:.2f} ms max {result['lag_max_ms']:.2f} ms, "
                        f"CPU server {result['server_cpu_pct']:.0f}% "
                        f"client {result['client_cpu_pct']:.0f}% (errors {result['errors']})",
                        file=sys.stderr,
                        flush=True,
                    )
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "load_before": load_before,
        "load_after": _load(),
        "versions": _versions(),
        "client": client,
        "receivers": args.receivers,
        "warmup": args.warmup_messages,
        "messages": args.messages,
        "runs": args.runs,
        "command": COMMAND,
    }
    section = markdown(results, servers, meta)
    print(section)
    if args.json:
        rows = [
            {"server": name, "workload": key, "runs": runs} for (name, key), runs in results.items()
        ]
        args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    if write:
        write_section(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
