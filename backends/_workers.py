"""Serving from several processes: a supervisor forks workers that listen on one port.

Linux only. :meth:`WebSocketTransport.run(workers=N) <backends.server.WebSocketTransport.run>`
makes this process the supervisor. It binds the port once (port 0 is resolved
once, and the banner shows the port) without listening, which keeps the port
reserved, then forks N workers before any event loop exists. Each worker
listens on a socket of its own bound to the same address (``SO_REUSEPORT``)
and serves it on the requested backend; the kernel spreads new connections
over the workers' sockets by a hash of their addresses.

The supervisor runs no event loop at all: it blocks SIGINT, SIGTERM and
SIGCHLD and waits for them with ``sigtimedwait``.

- A worker that exits without being asked (killed, crashed) is logged with its
  pid and status and replaced. One that dies within :data:`MIN_UPTIME` of its
  start counts as a failure: the first is replaced at once, the next ones after
  a delay doubling from :data:`FIRST_BACKOFF` up to :data:`MAX_BACKOFF`, so a
  crash loop cannot spin the CPU. New connections meanwhile go to the other
  workers' sockets; only those already queued on the dead worker's socket,
  not yet accepted, are reset.
- SIGINT or SIGTERM: SIGTERM to every worker (each stops as one process does:
  calls in flight get ``shutdown_grace``, then -32800, connections close with
  1001); a second signal is passed on too (the workers stop waiting for their
  calls). Workers still running after :func:`stop_timeout` are killed; then
  the supervisor returns and ``run`` returns normally.

Workers ignore SIGINT (Ctrl+C in a terminal reaches the whole process group:
the supervisor alone decides) and get SIGTERM if the supervisor dies
(``PR_SET_PDEATHSIG``), so none outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from securemcp.app import SecureMCP
from securemcp.pubsub import Broker, LocalBroker

from ._serving import BACKLOG

__all__ = [
    "Supervisor",
    "bind_sockets",
    "listening_twins",
    "check_workers",
    "duplicate_listening",
    "stop_timeout",
]

logger = logging.getLogger("securemcp")

MIN_UPTIME = 5.0
"""Seconds a worker must live for its death not to count as a failed start."""
FIRST_BACKOFF = 0.5
"""Delay before replacing a worker after its second failure in a row (doubling after)."""
MAX_BACKOFF = 10.0
"""The longest delay between two replacements of a failing worker."""
KILL_MARGIN = 5.0
"""Seconds given to stopping workers beyond their ``shutdown_grace`` and ``close_timeout``."""

_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
_PR_SET_PDEATHSIG = 1


def shared_state_problem(workers: int, app: SecureMCP, broker: Broker) -> str | None:
    """Why ``workers`` processes cannot serve ``app`` with ``broker``, or ``None`` if they can."""
    if workers <= 1 or app.stateless or not isinstance(broker, LocalBroker):
        return None
    return (
        f"{workers} workers need a shared broker: with the default LocalBroker each process "
        "keeps its own rooms and broadcast, which would silently split between them; "
        "use a RedisBroker (securemcp serve --redis URL), or declare the app "
        "SecureMCP(..., stateless=True) if its tools keep nothing between calls"
    )


def check_workers(workers: int, app: SecureMCP, broker: Broker) -> None:
    """Refuse a worker count that cannot work: ``ValueError``, or ``RuntimeError`` off Linux."""
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError("workers must be an integer")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if workers > 1 and not sys.platform.startswith("linux"):
        raise RuntimeError(
            f"workers > 1 is supported on Linux only (this is {sys.platform}): serve with 1 worker"
        )
    problem = shared_state_problem(workers, app, broker)
    if problem is not None:
        raise ValueError(problem)


def stop_timeout(shutdown_grace: float | None, close_timeout: float | None) -> float:
    """How long stopping workers may take before they are killed."""
    grace = 30.0 if shutdown_grace is None else shutdown_grace
    closing = 10.0 if close_timeout is None else close_timeout
    return grace + closing + KILL_MARGIN


def duplicate_listening(sock: socket.socket) -> socket.socket:
    """A non-blocking duplicate of the listening TCP socket ``sock``, for a server to own."""
    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise ValueError("sock must be a TCP socket (AF_INET or AF_INET6, SOCK_STREAM)")
    duplicate = sock.dup()
    duplicate.setblocking(False)
    return duplicate


def bind_sockets(
    host: str, port: int, backlog: int = BACKLOG, *, listen: bool = True, reuse_port: bool = False
) -> list[socket.socket]:
    """Sockets on every address ``host`` resolves to, all on one port (0: any free).

    Listening unless ``listen=False``; ``reuse_port`` lets other sockets of
    this user bind the same addresses (``SO_REUSEPORT``).
    """
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_ADDRCONFIG
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in sorted(set(infos)):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                # Every address on the port the system picked for the first one.
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            if listen:
                sock.listen(backlog)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def listening_twins(
    reserved: Sequence[socket.socket], backlog: int = BACKLOG
) -> list[socket.socket]:
    """A listening socket of this process on each address of ``reserved`` (``SO_REUSEPORT``).

    Each worker listens on a socket of its own and the kernel spreads new
    connections over them by a hash of their addresses: a single shared
    socket would leave that to whichever worker wakes first, which on trio is
    the same one again and again (all 30 of 30 connections in a test).
    """
    twins: list[socket.socket] = []
    try:
        for sock in reserved:
            twin = socket.socket(sock.family, sock.type, sock.proto)
            twins.append(twin)
            twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if sock.family == socket.AF_INET6:
                twin.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            twin.bind(sock.getsockname())
            twin.listen(backlog)
    except BaseException:
        for twin in twins:
            twin.close()
        raise
    return twins


@dataclass(slots=True)
class _Slot:
    """One worker's place: the process filling it now, and its failures in a row."""

    pid: int = 0
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None


class Supervisor:
    """Binds the socket, forks ``workers`` processes running ``serve(sockets)``, keeps them up.

    ``serve`` runs in each worker and returns when the worker has stopped
    (after SIGTERM); an exception in it is logged and the worker exits 1.
    """

    def __init__(
        self,
        serve: Callable[[Sequence[socket.socket]], None],
        host: str,
        port: int,
        workers: int,
        *,
        scheme: str = "ws",
        stop_timeout: float = 25.0,
    ) -> None:
        self._serve = serve
        self._host = host
        self._port = port
        self._slots = [_Slot() for _ in range(workers)]
        self._scheme = scheme
        self._stop_timeout = stop_timeout
        self._sockets: list[socket.socket] = []
        self._pid = os.getpid()

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM, then stop the workers; ``OSError`` if binding fails."""
        # Bound, not listening: the port stays ours while workers come and go,
        # and only the workers' own listening sockets take connections.
        self._sockets = bind_sockets(self._host, self._port, listen=False, reuse_port=True)
        try:
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
            try:
                self._supervise(previous)
            finally:
                # After a signal, or an error here (fork failing): no worker outlives this.
                self._stop()
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        finally:
            for sock in self._sockets:
                sock.close()
        logger.info("[WS] Server stopped")

    def _supervise(self, mask: set[int | signal.Signals]) -> None:
        host = self._sockets[0].getsockname()[0]
        shown = f"[{host}]" if ":" in host else host
        port = self._sockets[0].getsockname()[1]
        count = len(self._slots)
        logger.info(
            "[WS] Starting WebSocket server on %s://%s:%d with %d workers",
            self._scheme,
            shown,
            port,
            count,
        )
        for slot in self._slots:
            self._start(slot, mask)
        logger.info("[WS] Server started successfully")
        while True:
            now = time.monotonic()
            for slot in self._slots:
                if slot.restart_at is not None and slot.restart_at <= now:
                    self._start(slot, mask)
            waits = [slot.restart_at - now for slot in self._slots if slot.restart_at is not None]
            received = signal.sigtimedwait(_SIGNALS, max(0.01, min(waits, default=1.0)))
            if received is not None and received.si_signo != signal.SIGCHLD:
                break
            self._reap(restart=True)

    def _start(self, slot: _Slot, mask: set[int | signal.Signals]) -> None:
        slot.restart_at = None
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the worker would write what is buffered here again
        pid = os.fork()
        if pid == 0:
            self._worker(mask)
        slot.pid, slot.started = pid, time.monotonic()
        logger.info("[WS] Worker %d started", pid)

    def _worker(self, mask: set[int | signal.Signals]) -> NoReturn:
        status = 1
        try:
            # Ctrl+C reaches the whole process group: only the supervisor acts on it.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            _die_with(self._pid)
            listening = listening_twins(self._sockets)
            for sock in self._sockets:
                sock.close()  # The worker's copy of the reservation.
            self._serve(listening)
            status = 0
        except BaseException:
            logger.exception("[WS] Worker %d failed", os.getpid())
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os._exit(status)

    def _reap(self, *, restart: bool) -> None:
        for slot in self._slots:
            if not slot.pid:
                continue
            try:
                pid, status = os.waitpid(slot.pid, os.WNOHANG)
            except ChildProcessError:  # pragma: no cover - reaped by someone else
                pid, status = slot.pid, 0
            if pid == 0:
                continue
            slot.pid = 0
            if not restart:
                logger.debug("[WS] Worker %d %s", pid, _describe(status))
                continue
            now = time.monotonic()
            slot.failures = slot.failures + 1 if now - slot.started < MIN_UPTIME else 0
            delay = 0.0
            if slot.failures > 1:
                delay = min(FIRST_BACKOFF * 2 ** (slot.failures - 2), MAX_BACKOFF)
            slot.restart_at = now + delay
            when = f" in {delay:.1f} s" if delay else ""
            logger.warning("[WS] Worker %d %s; starting a new one%s", pid, _describe(status), when)

    def _stop(self) -> None:
        live = [slot.pid for slot in self._slots if slot.pid]
        logger.info("[WS] Shutting down %d workers", len(live))
        for slot in self._slots:
            slot.restart_at = None
        self._signal_workers(signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout
        while any(slot.pid for slot in self._slots):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for slot in self._slots:
                    if slot.pid:
                        logger.warning("[WS] Worker %d did not stop in time: killed", slot.pid)
                self._signal_workers(signal.SIGKILL)
                for slot in self._slots:
                    if slot.pid:
                        os.waitpid(slot.pid, 0)
                        slot.pid = 0
                break
            received = signal.sigtimedwait(_SIGNALS, min(remaining, 1.0))
            if received is not None and received.si_signo != signal.SIGCHLD:
                # A second Ctrl+C: the workers stop waiting for their calls.
                self._signal_workers(signal.SIGTERM)
            self._reap(restart=False)

    def _signal_workers(self, signum: signal.Signals) -> None:
        for slot in self._slots:
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):  # reaped meanwhile
                    os.kill(slot.pid, signum)


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _die_with(parent: int) -> None:
    """Have the kernel send this process SIGTERM when ``parent`` dies (Linux's PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent:  # it died before the request: nobody would send the signal
        os.kill(os.getpid(), signal.SIGTERM)
