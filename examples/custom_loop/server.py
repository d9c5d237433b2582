"""A SecureMCP server on the standard library's ``selectors`` module.

It shows that the sans-I/O core embeds in any event loop: no asyncio, trio or
anyio here, only non-blocking sockets, one ``selectors`` loop and one
:class:`~securemcp.protocol.ServerConnection` per client. Tools are sync and
run inline, between two reads.

Run it with ``python examples/custom_loop/server.py [--host HOST] [--port PORT]``.
"""

from __future__ import annotations

import argparse
import logging
import selectors
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from securemcp import SecureMCP
from securemcp.errors import ToolError
from securemcp.protocol import (
    CloseCode,
    ConnectionState,
    HandshakeRequest,
    ServerConnection,
    ToolCall,
)

logger = logging.getLogger("custom_loop")

READ_SIZE = 65536
"""Bytes asked of the socket per read."""

SHUTDOWN_GRACE = 2.0
"""Seconds given to clients to answer our close frame when the server stops."""

app = SecureMCP("custom-loop-demo", "SecureMCP served by a hand-written selectors loop")


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@app.tool()
def echo(message: str) -> dict[str, str]:
    """Echo a message back."""
    return {"echoed": message}


@app.tool()
def upper(text: str) -> str:
    """Return the text in upper case."""
    return text.upper()


@dataclass(eq=False)
class Peer:
    """One client: its socket, its protocol core and the bytes the socket has not taken yet."""

    sock: socket.socket
    conn: ServerConnection
    unsent: bytearray = field(default_factory=bytearray)
    events: int = 0
    """The selector events the peer is registered for (0: not registered)."""


class Server:
    """A single-threaded WebSocket server: every socket non-blocking, one selector for all."""

    def __init__(self, host: str, port: int) -> None:
        self.selector = selectors.DefaultSelector()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, port), family=family)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ)
        # Signals wake the selector through this pair (signal.set_wakeup_fd),
        # so a SIGINT is seen at once rather than at the next network event.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ)
        self.peers: set[Peer] = set()
        self._stop_requested = False

    @property
    def address(self) -> tuple[str, int]:
        """The host and port the server listens on."""
        host, port = self.listener.getsockname()[:2]
        return str(host), int(port)

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: ask the loop to shut down gracefully."""
        self._stop_requested = True

    def serve(self) -> None:
        """Run until a stop is requested, then close every connection with 1001."""
        previous = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        try:
            while not self._stop_requested:
                self._poll(None)
            self._shut_down()
        finally:
            signal.set_wakeup_fd(previous)
            for peer in list(self.peers):
                self._drop(peer)
            self.selector.close()
            self.listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _shut_down(self) -> None:
        # Stop accepting, say goodbye to every client, then give them a moment
        # to answer the close frame so that they see a clean 1001 close.
        self.selector.unregister(self.listener)
        for peer in list(self.peers):
            if peer.conn.state is ConnectionState.OPEN:
                peer.conn.close(CloseCode.GOING_AWAY, "server shutting down")
                self._update(peer)
            elif peer.conn.state is ConnectionState.CONNECTING:
                self._drop(peer)  # No handshake yet: nothing to say goodbye to.
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while self.peers and (remaining := deadline - time.monotonic()) > 0:
            self._poll(remaining)

    def _poll(self, timeout: float | None) -> None:
        for key, mask in self.selector.select(timeout):
            if key.fileobj is self.listener:
                self._accept()
            elif key.fileobj is self._wake_r:
                self._drain_wakeups()
            else:
                peer: Peer = key.data
                if mask & selectors.EVENT_READ:
                    self._read(peer)
                if mask & selectors.EVENT_WRITE:
                    self._update(peer)

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except BlockingIOError:
            pass

    def _accept(self) -> None:
        try:
            sock, address = self.listener.accept()
        except (BlockingIOError, ConnectionError):
            return  # The client gave up before we got to it.
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = Peer(sock, ServerConnection(app))
        self.peers.add(peer)
        logger.info("connection from %s", address)
        self._update(peer)

    def _read(self, peer: Peer) -> None:
        try:
            data = peer.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except ConnectionError:
            data = b""
        if data:
            peer.conn.receive_data(data)
        else:
            peer.conn.receive_eof()
        self._update(peer)

    def _handle_events(self, peer: Peer) -> None:
        conn = peer.conn
        # Answering a call may let the core parse requests it had held back, so
        # keep going until it has nothing more to say.
        while events := conn.events_received():
            for event in events:
                if isinstance(event, HandshakeRequest):
                    # Authentication and Origin checks would go here (conn.reject(401)).
                    conn.accept()
                elif isinstance(event, ToolCall):
                    self._run(conn, event)

    def _run(self, conn: ServerConnection, call: ToolCall) -> None:
        if call.tool.is_async:
            conn.fail(call, ToolError("this server runs sync tools only"))
            return
        try:
            result = call.tool.fn(**call.arguments)
        except Exception as exc:  # noqa: BLE001 - the tool's failure is the caller's answer
            conn.fail(call, exc)
        else:
            conn.complete(call, result)

    def _update(self, peer: Peer) -> None:
        """Write what the socket takes, then register for what the peer needs next."""
        if peer not in self.peers:
            return
        conn = peer.conn
        while True:
            self._handle_events(peer)
            if peer.unsent:
                if not self._send(peer):
                    return
                if peer.unsent:
                    break  # The socket is full: wait until it is writable.
            # Take the core's output only once ours is gone: what we do not take
            # counts against the core's max_pending_output, and at that limit it
            # stops reading (wants_read) so a client that never reads cannot
            # make us buffer without bound.
            output = conn.data_to_send()
            if not output:
                break
            peer.unsent += output
        if conn.state is ConnectionState.CLOSED and not peer.unsent:
            self._drop(peer)
            return
        wanted = 0
        if conn.wants_read:
            wanted |= selectors.EVENT_READ
        if peer.unsent:
            wanted |= selectors.EVENT_WRITE
        if wanted == peer.events:
            return
        # A selector cannot hold a registration for no events: unregister instead.
        if peer.events == 0:
            self.selector.register(peer.sock, wanted, peer)
        elif wanted == 0:
            self.selector.unregister(peer.sock)
        else:
            self.selector.modify(peer.sock, wanted, peer)
        peer.events = wanted

    def _send(self, peer: Peer) -> bool:
        """Write as much of ``peer.unsent`` as the socket takes; False if the peer was dropped."""
        try:
            sent = peer.sock.send(peer.unsent)
        except BlockingIOError:
            return True
        except ConnectionError:
            # The client is gone: nothing we hold can reach it any more.
            peer.conn.receive_eof()
            peer.conn.events_received()
            self._drop(peer)
            return False
        del peer.unsent[:sent]
        return True

    def _drop(self, peer: Peer) -> None:
        if peer.events:
            self.selector.unregister(peer.sock)
            peer.events = 0
        self.peers.discard(peer)
        peer.sock.close()
        logger.info("connection closed")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, serve until SIGINT or SIGTERM, return the exit status."""
    parser = argparse.ArgumentParser(description="SecureMCP on a selectors loop")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8766, help="port to bind; 0 picks a free one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    server = Server(args.host, args.port)
    signal.signal(signal.SIGINT, server.request_stop)
    signal.signal(signal.SIGTERM, server.request_stop)
    host, port = server.address
    shown = f"[{host}]" if ":" in host else host
    print(f"listening on ws://{shown}:{port}", flush=True)
    server.serve()
    print("server stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
