"""The MCP Streamable HTTP load generator: closed-loop ``tools/call`` POSTs, then one JSON line.

M3's client (``benchmarks/http_bench.py``): ``--connections`` HTTP/1.1
keep-alive connections, each with one request in flight, every request a
2026-07-28 stateless ``tools/call`` of ``echo`` (the ``_meta`` envelope in the
body, the routing headers ``MCP-Protocol-Version``, ``Mcp-Method`` and
``Mcp-Name`` beside it). Hand-built requests on an ``asyncio.Protocol``
(uvloop where installed), answers framed by their ``Content-Length``: no HTTP
library between the socket and the check, so that this stays far faster than
the servers (its CPU share is reported).

Every answer is checked: status 200, ``application/json``, the JSON-RPC id of
the request, and the result :class:`loadgen.Echo` accepts (not an error,
structured and text content the echo of the message sent). Anything else, a
missing ``Content-Length`` or a closed connection included, is an error. The
window and the figures are :func:`window.measure`'s, as for ``loadgen.py``.

Usage::

    python benchmarks/http_loadgen.py --url http://127.0.0.1:PORT/mcp --server-pid PID \\
        [--connections C] [--warmup S] [--duration S] [--close]

``--close``: every request says ``Connection: close``, so each call is a new
TCP connection (connect, one POST, the server's close), the ``C`` connections
replaced as they end: the worst case for a server, many short-lived clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

# Run as a script, this file finds its sibling modules on sys.path[0]; mypy knows them by package.
if TYPE_CHECKING:
    from benchmarks.loadgen import MESSAGE, Echo
    from benchmarks.window import Stats, measure
else:
    from loadgen import MESSAGE, Echo
    from window import Stats, measure

PROTOCOL_VERSION = "2026-07-28"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": PROTOCOL_VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
}


class Requests:
    """The bytes of each request, built from two templates around the id and the length."""

    def __init__(self, host: str, path: str, message: str, *, close: bool = False) -> None:
        params = {"name": "echo", "arguments": {"message": message}, "_meta": ENVELOPE}
        body = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "tools/call", "params": params})
        self.before_id, _, self.after_id = body.partition('"id": 0')
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Accept: application/json, text/event-stream\r\n"
            f"MCP-Protocol-Version: {PROTOCOL_VERSION}\r\nMcp-Method: tools/call\r\n"
            "Mcp-Name: echo\r\n" + ("Connection: close\r\n" if close else "") + "Content-Length: "
        )

    def build(self, call_id: int) -> bytes:
        """The whole request of call ``call_id``."""
        body = f'{self.before_id}"id": {call_id}{self.after_id}'.encode()
        return f"{self.head}{len(body)}\r\n\r\n".encode() + body


class Pool:
    """What the connections share: where to connect, what to send and check, the counters."""

    def __init__(self, url: str, stats: Stats, *, close: bool = False) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        authority = f"{self.host}:{self.port}"
        self.requests = Requests(authority, parts.path or "/", MESSAGE, close=close)
        self.echo = Echo(MESSAGE, "mcp")
        self.stats = stats
        self.in_flight = 0
        self.open: set[Connection] = set()
        self.reopened = 0

    async def connect(self) -> None:
        """Open one more connection, which sends its first call at once."""
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: Connection(self), self.host, self.port)

    def reopen(self) -> None:
        """A server closed a connection after an answer (``Connection: close``): replace it."""
        self.reopened += 1
        task = asyncio.get_running_loop().create_task(self.connect())
        task.add_done_callback(self._opened)

    def _opened(self, task: asyncio.Task[None]) -> None:
        if task.exception() is not None and self.stats.measuring:
            self.stats.errors += 1


class Connection(asyncio.Protocol):
    """One keep-alive connection, one request in flight, the next sent as the answer lands."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.call_id = 0
        self.sent = 0.0
        self.in_flight = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the first call."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        self.pool.open.add(self)
        if self.pool.stats.running:
            self._call()

    def _call(self) -> None:
        assert self.transport is not None
        self.call_id += 1
        self.in_flight = True
        self.pool.in_flight += 1
        self.sent = time.perf_counter()
        self.transport.write(self.pool.requests.build(self.call_id))

    def data_received(self, data: bytes) -> None:
        """Frame answers by their Content-Length; check each; send the next call."""
        self.buffer += data
        while self.in_flight:
            end = self.buffer.find(b"\r\n\r\n")
            if end == -1:
                return
            head = bytes(self.buffer[:end]).lower()
            start = head.find(b"\r\ncontent-length:")
            if start == -1:
                self._done(False)
                self._close()
                return
            stop = head.find(b"\r\n", start + 2)
            length = int(head[start + 17 : stop if stop != -1 else len(head)])
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self._done(self._right(head, body))
            if b"\r\nconnection: close" in head:
                self._close()
                if self.pool.stats.running:
                    self.pool.reopen()
            elif self.pool.stats.running:
                self._call()

    def _done(self, right: bool) -> None:
        self.in_flight = False
        self.pool.in_flight -= 1
        self.pool.stats.answered(time.perf_counter() - self.sent, right)

    def _right(self, head: bytes, body: bytes) -> bool:
        if (
            not head.startswith(b"http/1.1 200 ")
            or b"\r\ncontent-type: application/json" not in head
        ):
            return False
        try:
            answer = json.loads(body)
        except ValueError:
            return False
        return (
            type(answer) is dict
            and answer.get("jsonrpc") == "2.0"
            and answer.get("id") == self.call_id
            and self.pool.echo.mcp(answer.get("result"))
        )

    def _close(self) -> None:
        self.pool.open.discard(self)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """A call still in flight is an error."""
        self.pool.open.discard(self)
        if self.in_flight:
            self._done(False)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Closed-loop calls for warmup + duration seconds; the figures of the window."""
    stats = Stats()
    pool = Pool(args.url, stats, close=args.close)
    for _ in range(args.connections):
        await pool.connect()
    figures = await measure(
        stats, asyncio.sleep, warmup=args.warmup, duration=args.duration, server_pid=args.server_pid
    )
    # Let the calls in flight land, so the server sees clean closes.
    deadline = time.monotonic() + 2
    # Polling: one counter over every connection is simpler than an event per call.
    while pool.in_flight and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    for connection in list(pool.open):
        connection._close()
    await asyncio.sleep(0.05)
    if not figures["calls"]:
        raise SystemExit(f"no call answered in the window: {figures}")
    loop = "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"
    figures["client"] = f"benchmarks/http_loadgen.py, asyncio.Protocol on {loop}"
    figures["reconnects"] = pool.reopened
    return figures


def main() -> None:
    """Parse the options, run the load, print its figures as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="http://HOST:PORT/mcp")
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--close", action="store_true", help="one call per connection")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        print(json.dumps(asyncio.run(run(args))))
    else:
        print(json.dumps(uvloop.run(run(args))))


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
    sys.stdout.flush()
