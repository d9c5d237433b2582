"""The load generator: one process driving one workload against one server, then one JSON line.

The same client for every server: ``picows`` (a Cython WebSocket client for
asyncio) on uvloop, from ``benchmarks/.venv-peers``; without it, the slower
``websockets`` client of the dev extra, whose figures only keep the harness
working (``--smoke``) and are not for comparison.

Closed loop: each connection keeps ``--depth`` calls in flight and sends the
next one as soon as an answer arrives. After ``--warmup`` seconds the window
of ``--duration`` seconds opens; only calls answered inside it count. The
CPU time of this process and of the server (``/proc/PID/stat``) is taken at
both ends of the window, so that the report shows which side was busy.

Every answer is checked, not only counted: in the seed dialect the result
must be ``{"echoed": <the message sent>}``; in the MCP dialect ``isError``
must be false (or absent, which means false), ``structuredContent`` (when
there) that same object and the first text content its JSON. A wrong answer
is an error.

``--client-work-us N`` spins N microseconds after each answer before the
next call goes out: a slower client, for ``benchmarks/HARNESS.md``'s study
of how the client's speed changes the servers' costs. The default, 0, is
what the report publishes: a fast client that sleeps between answers.

``--tool NAME --arguments JSON`` (seed dialect) calls another tool than
``echo`` (S7 calls the chat example's ``send_message`` and ``get_messages``):
then any result is a right answer, and an error answer an error.

``--churn`` (S3c): each of the ``--connections`` slots opens a connection,
waits until it is ready (welcome, or ``initialize``), makes one call, closes
it on the answer and opens the next. Failing to open, or closing before the
answer, is an error.

``--idle N`` (S4) instead warms the server up, reads its resident memory,
opens ``N`` idle connections, reads it again, and reports the difference per
connection that opened; connections the server refuses (503 past its limit)
or does not answer in time are counted and named, not waited for.

Usage::

    python benchmarks/loadgen.py --url ws://127.0.0.1:PORT --server-pid PID \\
        [--dialect seed|mcp] [--connections C] [--depth D] [--payload BYTES] \\
        [--warmup S] [--duration S] [--idle N] [--churn] [--client-work-us N] \\
        [--tool NAME --arguments JSON]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import sys
import time
from typing import TYPE_CHECKING, Any

# Run as a script, this file finds its sibling modules on sys.path[0]; mypy knows them by package.
if TYPE_CHECKING:
    from benchmarks.window import Stats, measure
    from benchmarks.wsclient import OPEN_TIMEOUT, Opener, SendText, open_many, run_workload
else:
    from window import Stats, measure
    from wsclient import OPEN_TIMEOUT, Opener, SendText, open_many, run_workload

MESSAGE = "hello from the benchmark"
"""The text echoed when no ``--payload`` size is given (24 bytes)."""

MCP_VERSION = "2025-06-18"
"""The protocol version the MCP dialect's ``initialize`` asks for."""


def server_rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB (``VmRSS``)."""
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def busy(seconds: float) -> None:
    """Spin for ``seconds`` without yielding: the CPU a slower client spends per answer."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class Echo:
    """The right answer to an echo of ``message``, prepared once so that each check is cheap."""

    def __init__(self, message: str, dialect: str = "seed") -> None:
        self.result = {"echoed": message}
        # Whole answers in the forms the servers here write (compact, json's
        # default separators), split around the request id: an answer equal to
        # one of them is right without parsing it. Large answers (S5, M5) are
        # otherwise parsed in Python at a cost that made the load generator,
        # not the server, the bottleneck. Any other form is parsed and checked.
        self.forms: list[tuple[str, str]] = []
        for separators in ((",", ":"), (", ", ": ")):
            comma, colon = separators
            if dialect == "mcp":
                result = {
                    "content": [
                        {"type": "text", "text": json.dumps(self.result, separators=(",", ":"))}
                    ],
                    "structuredContent": self.result,
                    "isError": False,
                }
                head = f'{{"jsonrpc"{colon}"2.0"{comma}"id"{colon}'
                tail = f'{comma}"result"{colon}{json.dumps(result, separators=separators)}}}'
            else:
                head = f'{{"id"{colon}"'
                tail = f'"{comma}"result"{colon}{json.dumps(self.result, separators=separators)}}}'
            self.forms.append((head, tail))
        self.mcp_ids = dialect == "mcp"
        # The JSON texts servers write for it (compact, json's default, the SDK's indent=2):
        # a string comparison settles most answers; only another form is parsed.
        self.texts = (
            json.dumps(self.result, separators=(",", ":")),
            json.dumps(self.result),
            json.dumps(self.result, indent=2),
        )

    def known(self, text: str) -> int | str | None:
        """The id of ``text`` if it is a right answer in a known form, else ``None``."""
        for head, tail in self.forms:
            if text.startswith(head) and text.endswith(tail):
                middle = text[len(head) : len(text) - len(tail)]
                if middle.isdigit():
                    return int(middle) if self.mcp_ids else middle
        return None

    def seed(self, result: Any) -> bool:
        """A seed dialect result: exactly ``{"echoed": message}``."""
        return bool(result == self.result)

    def mcp(self, result: Any) -> bool:
        """An MCP ``tools/call`` result: not an error, structured and text content the echo."""
        if type(result) is not dict or result.get("isError", False) is not False:
            return False
        if result.get("structuredContent", self.result) != self.result:
            return False
        content = result.get("content")
        if type(content) is not list or not content or type(content[0]) is not dict:
            return False
        text = content[0].get("text")
        if text in self.texts:  # A tuple: == on each, which compares lengths before bytes.
            return True
        try:
            return isinstance(text, str) and bool(json.loads(text) == self.result)
        except ValueError:
            return False


class Caller:
    """One connection's calls, whatever client library carries the frames."""

    def __init__(
        self,
        dialect: str,
        message: str,
        depth: int,
        stats: Stats,
        *,
        idle: bool = False,
        once: bool = False,
        work: float = 0.0,
        tool: tuple[str, str] | None = None,
    ) -> None:
        self.dialect = dialect
        self.depth = depth
        self.stats = stats
        self.idle = idle
        self.once = once
        """Make ``depth`` calls, then resolve ``finished`` (``--churn``) instead of calling on."""
        self.finished = asyncio.get_running_loop().create_future()
        self.work = work
        self.send: SendText = lambda text: None
        self.ready = asyncio.get_running_loop().create_future()
        self.pending: dict[Any, float] = {}
        self.next_id = 1
        self.alive = False
        self.echo = echo = Echo(message, dialect)
        self.check = echo.mcp if dialect == "mcp" else echo.seed
        if tool is not None:
            # Another tool (seed dialect): its name and JSON arguments; any result is right.
            name, arguments = tool
            self.check = lambda result: result is not None
            self.template = (
                f'{{"id":"%d","method":"invoke_tool","params":{{"tool_name":{json.dumps(name)},'
                f'"params":{arguments.replace("%", "%%")}}}}}'
            )
        elif dialect == "mcp":
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
        if not self.finished.done():
            self.finished.set_result(None)

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
        known = self.echo.known(text)
        if known is not None and known in self.pending:
            self._answered(now, self.pending.pop(known), right=True)
            return
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
        self._answered(now, started, right=self.check(answer.get("result")))

    def _answered(self, now: float, started: float, *, right: bool) -> None:
        self.stats.answered(now - started, right)
        if self.work:
            busy(self.work)
        if self.once:
            if not self.pending and not self.finished.done():
                self.finished.set_result(None)
        elif self.stats.running:
            self._call()


async def run_load(args: argparse.Namespace, opener: Opener) -> dict[str, Any]:
    """Closed-loop calls for warmup + duration seconds; the figures of the window."""
    stats = Stats()
    message = "a" * args.payload if args.payload else MESSAGE
    subprotocol = "mcp" if args.dialect == "mcp" else None
    work = args.client_work_us / 1e6
    tool = (args.tool, args.arguments) if args.tool else None
    callers = [
        Caller(args.dialect, message, args.depth, stats, work=work, tool=tool)
        for _ in range(args.connections)
    ]
    closers = await open_many(opener, args.url, callers, subprotocol, 50)
    figures = await measure(
        stats, asyncio.sleep, warmup=args.warmup, duration=args.duration, server_pid=args.server_pid
    )
    # Let the calls in flight land before closing, so the server sees clean closes.
    deadline = time.monotonic() + 2
    # Polling: one check over every connection is simpler than an event per caller.
    while any(caller.pending for caller in callers) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    for close in closers:
        close()
    await asyncio.sleep(0.05)
    return figures


async def run_churn(args: argparse.Namespace, opener: Opener) -> dict[str, Any]:
    """S3c: a connection per call, ``--connections`` of them at a time; the window's figures."""
    stats = Stats()
    subprotocol = "mcp" if args.dialect == "mcp" else None
    opened = 0  # connections ready inside the window: one per call, or churn is not churning

    async def slot() -> None:
        nonlocal opened
        while stats.running:
            caller = Caller(args.dialect, MESSAGE, 1, stats, once=True)
            close = None
            try:
                async with asyncio.timeout(OPEN_TIMEOUT):
                    close = await opener(args.url, caller, subprotocol)
                    await caller.ready
                    opened += stats.measuring
                    await caller.finished
            # ConnectionError (refusals, closes before ready) is an OSError.
            except (OSError, TimeoutError):
                if stats.measuring:
                    stats.errors += 1
            finally:
                if close is not None:
                    close()

    slots = [asyncio.create_task(slot()) for _ in range(args.connections)]
    figures = await measure(
        stats, asyncio.sleep, warmup=args.warmup, duration=args.duration, server_pid=args.server_pid
    )
    figures["connections_opened"] = opened
    await asyncio.gather(*slots)  # each ends with the cycle it is in
    await asyncio.sleep(0.05)
    return figures


async def run_idle(args: argparse.Namespace, opener: Opener) -> dict[str, Any]:
    """S4: the server's resident memory per idle connection, and how many it let open."""
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
    failures: list[str] = []
    closers = await open_many(opener, args.url, callers, subprotocol, 64, failures=failures)
    opening = time.time() - started
    await asyncio.sleep(1.0)
    after = server_rss_kib(args.server_pid)
    open_now = sum(caller.alive for caller in callers)
    for close in closers:
        close()
    await asyncio.sleep(0.2)
    reasons = collections.Counter(failures).most_common(1)  # The usual one, e.g. "HTTP 503".
    return {
        "connections": open_now,
        "asked": args.idle,
        "open_share": open_now / args.idle,
        "failed": len(failures),
        "failure": reasons[0][0] if reasons else "",
        "errors": warm["errors"],
        "open_seconds": opening,
        "rss_before_kib": before,
        "rss_after_kib": after,
        # Per connection that is open: refused ones cost the server nothing once refused.
        "kib_per_connection": (after - before) / max(open_now, 1),
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
    parser.add_argument("--churn", action="store_true", help="S3c: a new connection per call")
    parser.add_argument("--client-work-us", type=float, default=0.0,
                        help="spin this many microseconds per answer")  # fmt: skip
    parser.add_argument("--tool", help="call this tool instead of echo (seed dialect)")
    parser.add_argument("--arguments", default="{}", help="the tool's arguments, as JSON")
    args = parser.parse_args()
    if args.tool:
        json.loads(args.arguments)  # Fail here on malformed JSON, not as an error per call.
    workload = run_idle if args.idle else run_churn if args.churn else run_load
    print(json.dumps(run_workload(lambda opener: workload(args, opener))))


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
    sys.stdout.flush()
