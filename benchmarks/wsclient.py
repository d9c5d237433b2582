"""What the load generators share: the WebSocket client and opening many connections.

Imported by ``benchmarks/loadgen.py`` and ``benchmarks/broadcast_client.py``
(as ``wsclient``, from their own directory). They run in the
peers' environment, which has picows, or in the project's, which has
``websockets`` only: so this imports the standard library at the top and the
client libraries inside the functions that use them.
"""

from __future__ import annotations

import asyncio
import re
import resource
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

SendText = Callable[[str], None]


class Handler(Protocol):
    """One connection's callbacks, whatever library carries the frames."""

    ready: asyncio.Future[None]
    """Done when the connection can carry the workload (welcome, initialize, join...)."""

    def opened(self, send: SendText) -> None:
        """The WebSocket handshake succeeded; ``send`` writes one text message."""

    def received(self, text: str) -> None:
        """One whole text message from the server."""

    def closed(self) -> None:
        """The connection ended."""


Opener = Callable[[str, Handler, str | None], Awaitable[Callable[[], None]]]
"""Connect ``handler`` to a URL with an optional subprotocol; returns the closing function."""

OPEN_TIMEOUT = 10.0
"""Seconds one connection may take to open and become ready before it counts as failed."""


async def open_picows(url: str, handler: Handler, subprotocol: str | None) -> Callable[[], None]:
    """Connect with picows; returns the function that closes the connection.

    A refused handshake (an HTTP status other than 101, such as 503 from a
    server at its connection limit) raises :class:`ConnectionError`.
    """
    from picows import WSError, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    class Listener(WSListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        def on_ws_connected(self, transport: WSTransport) -> None:
            handler.opened(lambda text: transport.send(WSMsgType.TEXT, text.encode()))

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind is WSMsgType.TEXT or kind is WSMsgType.CONTINUATION:
                if frame.fin and not self.parts:
                    handler.received(frame.get_payload_as_utf8_text())
                    return
                self.parts.append(frame.get_payload_as_bytes())
                if frame.fin:
                    data, self.parts = b"".join(self.parts), []
                    handler.received(data.decode())
            elif kind is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            handler.closed()

    headers = {"Sec-WebSocket-Protocol": subprotocol} if subprotocol else None
    try:
        transport, _listener = await ws_connect(
            Listener, url, extra_headers=headers, max_frame_size=16 * 1024 * 1024
        )
    except WSError as error:
        # "expected upgrade response with status 101 ..., but received 503": name the status.
        status = re.search(r"received (\d{3})", str(error))
        raise ConnectionError(f"HTTP {status[1]}" if status else str(error)) from error

    def close() -> None:
        if not transport.is_disconnected:
            transport.send_close()
            transport.disconnect()

    return close


async def open_websockets(
    url: str, handler: Handler, subprotocol: str | None
) -> Callable[[], None]:
    """Connect with the ``websockets`` client (the fallback); returns the closing function.

    A refused handshake raises :class:`ConnectionError`, as with picows.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake
    from websockets.typing import Subprotocol

    protocols = [Subprotocol(subprotocol)] if subprotocol else None
    try:
        ws = await connect(url, subprotocols=protocols, compression=None, max_size=None)
    except InvalidHandshake as error:
        raise ConnectionError(str(error)) from error
    outgoing: asyncio.Queue[str] = asyncio.Queue()

    async def write() -> None:
        while True:
            await ws.send(await outgoing.get())

    async def read() -> None:
        try:
            async for message in ws:
                handler.received(message if isinstance(message, str) else message.decode())
        except ConnectionClosed:
            pass
        finally:
            handler.closed()

    tasks = [asyncio.create_task(write()), asyncio.create_task(read())]
    handler.opened(outgoing.put_nowait)

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


async def open_many(
    opener: Opener,
    url: str,
    handlers: Sequence[Handler],
    subprotocol: str | None,
    parallel: int,
    *,
    failures: list[str] | None = None,
    budget: float = 120.0,
) -> list[Callable[[], None]]:
    """A connection per handler, ``parallel`` handshakes at a time; waits until each is ready.

    A connection that cannot open (refused, an HTTP status such as 503, not
    ready within ``OPEN_TIMEOUT`` s) raises, unless ``failures`` is given:
    then its reason is appended there and the others go on. Either way the
    whole takes at most about ``budget`` s: connections not yet tried by then
    fail at once, so that a server refusing or ignoring some cannot hang the
    run. Returns the closing functions of the connections that opened.
    """
    gate = asyncio.Semaphore(parallel)
    closers: list[Callable[[], None]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget

    async def one(handler: Handler) -> None:
        async with gate:
            close: Callable[[], None] | None = None
            try:
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError("not tried: the opening budget ran out")
                async with asyncio.timeout(min(OPEN_TIMEOUT, left)):
                    close = await opener(url, handler, subprotocol)
                    await handler.ready
            # ConnectionError (refusals, closes before ready) is an OSError.
            except (OSError, TimeoutError) as error:
                if failures is None:
                    raise
                failures.append(str(error) or type(error).__name__)
                if close is not None:
                    close()
                return
            closers.append(close)

    await asyncio.gather(*(one(handler) for handler in handlers))
    return closers


def run_workload(
    workload: Callable[[Opener], Coroutine[Any, Any, dict[str, Any]]],
) -> dict[str, Any]:
    """Raise the fd limit, run ``workload`` on uvloop (else asyncio); figures with ``client``."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    opener, client = choose_client()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(workload(opener))
        loop = "asyncio"
    else:
        result = uvloop.run(workload(opener))
        loop = "uvloop"
    result["client"] = f"{client} on {loop}"
    return result
