"""The client side of one connection: handshake, requests, answer correlation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wsproto import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.events import Event as WSEvent
from wsproto.utilities import RemoteProtocolError

from ..errors import LocalProtocolError, ParseError
from .connection import ConnectionState, _Endpoint
from .events import (
    Connected,
    ConnectionRejected,
    ErrorReceived,
    NotificationReceived,
    ResponseReceived,
    Welcome,
)
from .head import header_pairs
from .jsonrpc import RequestId, is_request_id, is_utf8, loads
from .limits import Limits

__all__ = ["ClientConnection"]


class ClientConnection(_Endpoint):
    """The sans-I/O client side of one WebSocket connection, speaking the seed dialect.

    Call :meth:`connect`, write ``data_to_send()``, feed what the socket gives
    to ``receive_data``; a :class:`Connected` event means requests can flow.
    Answers come back as :class:`ResponseReceived` / :class:`ErrorReceived`
    carrying the id :meth:`send_request` returned.
    """

    __slots__ = (
        "_connect_sent",
        "_next_id",
        "_pending",
        "_reject_body",
        "_reject_headers",
        "_reject_status",
        "jsonrpc",
        "subprotocol",
    )

    def __init__(self, *, limits: Limits | None = None) -> None:
        super().__init__(ConnectionType.CLIENT, limits)
        self.subprotocol: str | None = None
        self.jsonrpc = False
        """Send strict JSON-RPC 2.0 (``"jsonrpc": "2.0"`` on every message), as MCP wants;
        the server's ``ping`` requests are then answered with ``{}``."""
        # A dict, not a set: it keeps the order requests were sent in.
        self._pending: dict[RequestId, None] = {}
        self._next_id = 0
        self._reject_status = 0
        self._reject_headers: tuple[tuple[str, str], ...] = ()
        self._reject_body = bytearray()
        self._connect_sent = False

    def connect(
        self,
        host: str,
        path: str = "/",
        *,
        subprotocols: Iterable[str] = (),
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Start the opening handshake for ``ws://host/path``."""
        if self._connect_sent:
            raise LocalProtocolError("connect() was already called")
        self._connect_sent = True
        headers = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in extra_headers
        ]
        handshake = self._handshake
        assert handshake is not None  # connect() comes first
        self._write(
            handshake.send(
                Request(
                    host=host,
                    target=path,
                    subprotocols=list(subprotocols),
                    extra_headers=headers,
                    extensions=self._extensions(),
                )
            )
        )

    @property
    def pending(self) -> frozenset[RequestId]:
        """Ids of the requests still waiting for an answer."""
        return frozenset(self._pending)

    def send_request(self, method: str, params: Any = None) -> int:
        """Send a request and return its id, unique on this connection."""
        self._require_open()
        self._next_id += 1
        request_id = self._next_id
        message: dict[str, Any] = {"jsonrpc": "2.0"} if self.jsonrpc else {}
        message["id"] = request_id
        message["method"] = method
        if params is not None:
            message["params"] = params
        self._send_json(message)
        self._pending[request_id] = None
        return request_id

    def invoke_tool(self, name: str, arguments: dict[str, Any] | None = None) -> int:
        """Send an ``invoke_tool`` request and return its id."""
        return self.send_request("invoke_tool", {"tool_name": name, "params": arguments or {}})

    def notify(self, method: str, params: Any = None) -> None:
        """Send a notification (no id, never answered)."""
        self._require_open()
        message: dict[str, Any] = {"jsonrpc": "2.0"} if self.jsonrpc else {}
        message["method"] = method
        if params is not None:
            message["params"] = params
        self._send_json(message)

    def forget(self, request_id: RequestId) -> None:
        """Stop waiting for ``request_id`` (a timed-out call); a late answer is then dropped."""
        self._pending.pop(request_id, None)

    def _require_open(self) -> None:
        if self._state is not ConnectionState.OPEN:
            raise LocalProtocolError(f"cannot send on a connection that is {self._state.value}")

    # Hooks

    def _on_handshake_event(self, event: WSEvent) -> None:
        if isinstance(event, AcceptConnection):
            self._opened(event.extensions)
            self.subprotocol = event.subprotocol
            self._events.append(Connected(event.subprotocol, header_pairs(event.extra_headers)))
        elif isinstance(event, RejectConnection):
            self._reject_status = event.status_code
            self._reject_headers = header_pairs(event.headers)
            if not event.has_body:
                self._rejected()
                return
            # The body's first bytes came with the head: the handshake reads them now.
            early, self._early = self._early, b""
            if early and self._handshake is not None:
                try:
                    self._handshake.receive_data(early)
                except RemoteProtocolError as exc:
                    self._handshake_failed(exc)
        elif isinstance(event, RejectData):
            room = self.limits.max_message_size - len(self._reject_body)
            self._reject_body += event.data[: max(room, 0)]
            if event.body_finished:
                self._rejected()

    def _rejected(self) -> None:
        self._state = ConnectionState.CLOSED
        self._events.append(
            ConnectionRejected(self._reject_status, self._reject_headers, bytes(self._reject_body))
        )

    def _handshake_failed(self, exc: RemoteProtocolError | UnicodeError) -> None:
        # The server's answer was not HTTP we understand, or not a valid upgrade.
        self._state = ConnectionState.CLOSED
        self._events.append(ConnectionRejected(0, (), str(exc).encode()))

    def _unanswered(self) -> tuple[RequestId, ...]:
        ids = tuple(self._pending)
        self._pending.clear()
        return ids

    def _on_message(self, data: bytes) -> None:
        try:
            message = loads(data, self.limits.max_json_depth)
        except ParseError:
            if not is_utf8(data):
                self._invalid_utf8()
            return  # A server that sends garbage gets no say in our state.
        if not isinstance(message, dict):
            return
        method = message.get("method")
        request_id = message.get("id")
        if isinstance(method, str):
            if "id" in message:
                # The server asks us something; we serve nothing but MCP's ping.
                if is_request_id(request_id):
                    answer: dict[str, Any] = {"jsonrpc": "2.0"} if self.jsonrpc else {}
                    answer["id"] = request_id
                    if self.jsonrpc and method == "ping":
                        answer["result"] = {}
                    else:
                        answer["error"] = {"code": -32601, "message": f"Unknown method: {method}"}
                    self._send_json(answer)
                return
            self._events.append(NotificationReceived(method, message.get("params")))
            return
        if not is_request_id(request_id) or request_id not in self._pending:
            result = message.get("result")
            if request_id == "welcome" and isinstance(result, dict):
                tools = result.get("tools")
                self._events.append(
                    Welcome(
                        str(result.get("message", "")),
                        tuple(str(t) for t in tools) if isinstance(tools, list) else (),
                    )
                )
            return  # Unknown ids (late answers to forgotten calls) are dropped.
        self._pending.pop(request_id, None)
        error = message.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            self._events.append(
                ErrorReceived(
                    request_id,
                    code if type(code) is int else -32603,
                    str(error.get("message", "")),
                    error.get("data"),
                )
            )
        elif "result" in message:
            self._events.append(ResponseReceived(request_id, message["result"]))
        else:
            self._events.append(
                ErrorReceived(request_id, -32603, "malformed answer: neither result nor error")
            )
