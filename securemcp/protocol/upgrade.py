"""The server side of the opening handshake: the upgrade decided, or an HTTP answer.

A :class:`ServerHandshake` turns the client's upgrade request into a
:class:`~securemcp.protocol.HandshakeRequest` event and waits, holding any
input, for the driver's :meth:`~ServerHandshake.accept` or
:meth:`~ServerHandshake.reject`. A request that is no upgrade gets its HTTP
status (400, 405, 431), or, on a server that serves plain HTTP itself, becomes
an :class:`~securemcp.protocol.HTTPRequest` answered with
:meth:`~ServerHandshake.respond`. wsproto's H11Handshake writes the answers.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from http import HTTPStatus

from wsproto import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, Request
from wsproto.events import Event as WSEvent
from wsproto.utilities import RemoteProtocolError

from ..auth import Principal
from ..errors import LocalProtocolError
from . import http_write
from .connection import ConnectionState, _Endpoint
from .events import ConnectionClosed, Event, HandshakeRequest, HTTPRequest
from .frames import CloseCode
from .head import HandshakeTooLarge, header_pairs
from .http import HTTPServerConnection
from .limits import Limits

__all__ = ["ServerHandshake"]

WEBSOCKET_VERSION = "13"
"""The only ``Sec-WebSocket-Version`` spoken (RFC 6455's)."""


class ServerHandshake(_Endpoint):
    """A server connection's upgrade (the base of :class:`ServerConnection`)."""

    __slots__ = (
        "_awaiting_decision",
        "_awaiting_http",
        "_http",
        "_http_methods",
        "principal",
        "subprotocol",
    )

    def __init__(
        self,
        limits: Limits | None,
        *,
        http: bool,
        http_methods: Iterable[str] | None = None,
    ) -> None:
        super().__init__(ConnectionType.SERVER, limits, keep_head=http or http_methods is not None)
        self._awaiting_decision = False
        self._awaiting_http = False
        # With http_methods, a first request that is no upgrade makes the
        # connection a sequence of plain HTTP requests, served by _http.
        self._http_methods = None if http_methods is None else tuple(http_methods)
        self._http: HTTPServerConnection | None = None
        self.subprotocol: str | None = None
        self.principal: Principal | None = None
        """Who is connected, as ``accept()`` was told; ``None`` when anonymous."""

    def accept(
        self,
        subprotocol: str | None = None,
        extra_headers: Iterable[tuple[str, str]] = (),
        *,
        principal: Principal | None = None,
        welcome: bool = True,
    ) -> None:
        """Complete the upgrade for ``principal`` (``None``: anonymous).

        With ``welcome``, greet the client as the original server did. With
        ``subprotocol="mcp"`` the connection speaks MCP, where no welcome is sent.
        """
        self._require_decision("accept")
        self.principal = principal
        headers = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in extra_headers
        ]
        handshake = self._handshake
        assert handshake is not None  # a decision is awaited, so the handshake is on
        extensions = self._extensions()
        self._write(
            handshake.send(
                AcceptConnection(
                    subprotocol=subprotocol, extra_headers=headers, extensions=extensions
                )
            )
        )
        self._awaiting_decision = False
        self._opened(extensions)
        self.subprotocol = subprotocol
        self._on_accepted(subprotocol, welcome)
        # Lift the pause that held input while the handshake awaited a decision.
        self._process()

    def reject(
        self,
        status: int = 400,
        body: bytes | str | None = None,
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Refuse the upgrade with an HTTP answer; the connection is then closed."""
        self._require_decision("reject")
        self._reject(status, body, extra_headers)

    def _require_decision(self, what: str) -> None:
        if not self._awaiting_decision:
            raise LocalProtocolError(f"{what}() is only valid after a HandshakeRequest event")

    def _reject(
        self, status: int, body: bytes | str | None, extra_headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        if body is None:
            try:
                body = HTTPStatus(status).phrase + "\n"
            except ValueError:
                body = ""
        payload = body.encode() if isinstance(body, str) else body
        # Written as plain HTTP answers are, not by wsproto (whose h11 leaves
        # the reason phrase out): the connection closes after it.
        to_head = self._head is not None and self._head.start == b"HEAD "
        self._write(http_write.closing_answer(status, payload, extra_headers, to_head=to_head))
        self._awaiting_decision = False
        self._state = ConnectionState.CLOSED

    def _on_handshake_event(self, event: WSEvent) -> None:
        if isinstance(event, Request):
            headers = header_pairs(event.extra_headers)
            if not _one_nonce(headers):
                # RFC 6455 4.2.1: wsproto takes any value, the last of several.
                self._reject(400, "Bad Request: Sec-WebSocket-Key must be one 16-byte nonce\n")
                return
            self._awaiting_decision = True
            self._events.append(
                HandshakeRequest(
                    path=event.target,
                    host=event.host,
                    headers=headers,
                    subprotocols=tuple(event.subprotocols),
                    extensions=tuple(str(ext) for ext in event.extensions),
                )
            )

    def _handshake_failed(self, exc: RemoteProtocolError | UnicodeError) -> None:
        # Not a WebSocket upgrade (plain HTTP, wrong method, bad headers, oversized head).
        if self._awaiting_http:  # pragma: no cover - wsproto only buffers what follows
            return  # More bytes after a plain request: it is answered once, then closed.
        if isinstance(exc, HandshakeTooLarge):
            self._reject(431, f"Request Header Fields Too Large: {exc}\n")
            return
        request = self._plain_request()
        if request is not None and self._http_methods is not None:
            self._serve_http()
            return
        if request is None:
            hint = exc.event_hint if isinstance(exc, RemoteProtocolError) else None
            if isinstance(hint, RejectConnection) and hint.status_code == 426:
                # RFC 6455 4.2.2: a version not spoken gets the versions that are.
                body = f"Upgrade Required: WebSocket version {WEBSOCKET_VERSION} only\n"
                self._reject(426, body, [("sec-websocket-version", WEBSOCKET_VERSION)])
            else:
                self._reject(400, f"Bad Request: {exc}\n")
        elif request.method != "GET":
            self._reject(405, "Method Not Allowed\n", [("allow", "GET")])
        else:
            self._awaiting_http = True
            self._events.append(request)

    def _plain_request(self) -> HTTPRequest | None:
        """The request whose head was kept, if it is well formed and no upgrade attempt."""
        head = self._head
        if head is None or head.chunks is None:
            return None  # No plain HTTP here: every request that is no upgrade gets 400.
        if not head.complete:
            return None  # The head is incomplete: h11 found it malformed.
        lines = b"".join(head.chunks).decode("latin-1").split("\n")
        parts = lines[0].rstrip("\r").split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
            return None
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            line = line.rstrip("\r")
            if not line:
                continue
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                return None
            headers.append((name.lower(), value.strip()))
        if any(name == "upgrade" for name, _ in headers):
            return None  # A WebSocket upgrade gone wrong stays a 400.
        return HTTPRequest(parts[0], parts[1], tuple(headers))

    def respond(
        self, status: int, body: bytes | str = b"", headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Answer an :class:`HTTPRequest` with ``status``, ``headers`` and ``body``, then close.

        ``Content-Length`` and ``Connection: close`` are added (any given are
        replaced); ``Content-Type`` defaults to ``text/plain; charset=utf-8``.
        """
        if not self._awaiting_http:
            raise LocalProtocolError("respond() is only valid after an HTTPRequest event")
        self._awaiting_http = False
        self._reject(status, body, headers)

    # Plain HTTP requests (with http_methods)

    @property
    def http(self) -> HTTPServerConnection | None:
        """The plain HTTP side, once the first request made this connection one.

        Answer each :class:`~securemcp.protocol.http.HTTPRequestReceived` with its
        ``respond()`` or ``start_stream()``/``send_event()``/``end_stream()``;
        what it writes comes out of this connection's ``data_to_send()`` and
        what it reports out of ``events_received()``.
        """
        return self._http

    def _serve_http(self) -> None:
        head = self._head
        assert head is not None
        assert head.chunks is not None  # kept, with http_methods
        self._start_http(b"".join(head.chunks) + self._early)

    def _start_http(self, data: bytes) -> None:
        """Serve ``data`` and all that follows as plain HTTP requests."""
        self._handshake = None
        self._head = None
        self._early = b""
        self._http = HTTPServerConnection(
            self.limits,
            methods=self._http_methods or (),
            output=self._output,
            emit=self._emit,
            on_close=self._http_closed,
            on_hold=self._http_held,
        )
        self._http.receive_data(data)

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _http_held(self) -> None:
        # Unsent answers hold the next request: taking them (data_to_send) resumes it.
        self._held = True

    def _http_closed(self, lost: bool) -> None:
        self._state = ConnectionState.CLOSED
        if lost:
            self._events.append(ConnectionClosed(CloseCode.ABNORMAL, "connection lost", ()))
        else:
            self._events.append(ConnectionClosed(CloseCode.NORMAL, "HTTP connection done", ()))

    def _receive_unframed(self, data: bytes) -> None:
        http = self._http
        if http is not None:
            # Plain HTTP holds and resumes its own input (see _http_held): none
            # of the WebSocket's processing applies any more.
            http.receive_data(data)
            return
        super()._receive_unframed(data)

    def _receive_handshake(self, data: bytes) -> None:
        head = self._head
        if (
            self._http_methods is not None
            and head is not None
            and not head.start  # the connection's very first bytes
            and data.startswith(b"POST ")
        ):
            # An upgrade is a GET (RFC 6455 4.1): a POST goes to h11 at once,
            # not through wsproto's parse, its refusal, and a parse again. The
            # head's limits are checked first, as for any first request (431).
            head.count(data)
            self._start_http(data)
            return
        super()._receive_handshake(data)

    def _process_handshake(self) -> None:
        http = self._http
        if http is None:
            super()._process_handshake()
        else:
            http.resume()

    def receive_eof(self) -> None:
        """The peer closed its side of the socket (or the backend gave up on it)."""
        http = self._http
        if http is not None:
            http.receive_eof()
            return
        super().receive_eof()

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake; on a plain HTTP connection, drop it."""
        http = self._http
        if http is not None:
            http.close()
            return
        super().close(code, reason)

    @property
    def wants_read(self) -> bool:
        """Whether the backend should read more from the socket now (see the base class)."""
        http = self._http
        if http is not None:
            return http.wants_read and self._output.size < self.limits.max_pending_output
        return self._state is not ConnectionState.CLOSED and self._may_process()

    def _deciding(self) -> bool:
        """Whether input is held while the driver decides (the upgrade, or an HTTP answer)."""
        return self._awaiting_decision or self._awaiting_http

    def _on_accepted(self, subprotocol: str | None, welcome: bool) -> None:
        """The upgrade is done: greet the client, or start the dialect ``subprotocol`` names."""
        raise NotImplementedError


def _one_nonce(headers: tuple[tuple[str, str], ...]) -> bool:
    """Whether the upgrade has one ``Sec-WebSocket-Key``, a base64-encoded 16-byte value."""
    keys = [value for name, value in headers if name == "sec-websocket-key"]
    if len(keys) != 1 or len(keys[0]) != 24:
        return False
    try:
        return len(base64.b64decode(keys[0], validate=True)) == 16
    except ValueError:  # binascii.Error, or a value that is not ASCII
        return False
