"""MCP Streamable HTTP on the WebSocket port: the plain HTTP requests of one connection.

A connection whose first request is no WebSocket upgrade becomes a keep-alive
sequence of plain HTTP requests (:mod:`securemcp.protocol.http`); its
:class:`~backends._driver.ConnectionDriver` hands each one to an
:class:`HTTPEndpoint`, which answers it like this:

- ``POST <mcp_path>`` with one JSON-RPC message, served without any session:
  a 2026-07-28 request (``_meta`` envelope) through the stateless rules
  (:func:`~securemcp.protocol.mcp_stateless.serve_request`, by way of a fresh
  :class:`~securemcp.protocol.mcp.MCPSession`), a legacy ``initialize`` answered
  statelessly, and legacy ``tools/list``/``tools/call`` under the
  ``MCP-Protocol-Version`` header (no session id is ever issued, so any worker
  can answer any request). A result is ``application/json``; a tool call is
  answered as JSON, or as an SSE stream once it reports progress (the progress
  notifications, then the result). A notification gets 202, malformed JSON
  the JSON-RPC parse error with 400.
- ``GET``/``DELETE <mcp_path>``: 405 (no server-initiated stream, no sessions).
- Any other path: what it got before (the ``http_handler`` page or 404, 400
  without a handler), then the connection closes.

Security is the WebSocket's: every request passes the transport's
:class:`~securemcp.SecurityPolicy` handshake rules (Origin: 403; the bearer
token in ``Authorization``: 401 with ``WWW-Authenticate``), tools keep their
scopes, calls their rate limit (-31029), and the connection holds its
``max_connections_per_*`` slots (``_http_caps.py``: 429 with ``Retry-After``).
Then the media types (``_http_media.py``): 415 for a body not declared
``application/json``, 406 for an ``Accept`` admitting neither answer form.

Timing: ``handshake_timeout`` bounds the wait for each complete request (head
and body) from the connection's start or the previous answer, so a slow head
and an idle keep-alive connection are both closed by it.

One request at a time per connection (HTTP/1.1 answers in order): at most one
tool call in flight here; a client closing the connection cancels it. Writing
the answers and running that call is the base class's job
(:class:`~backends._http_calls.CallAnswers`); reading the requests is this module's.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, cast

from securemcp.auth import Principal
from securemcp.errors import InvalidRequest, RPCError
from securemcp.protocol import HTTPRequest, HTTPRequestReceived
from securemcp.protocol.jsonrpc import loads
from securemcp.protocol.mcp import PROTOCOL_VERSIONS, MCPSession
from securemcp.protocol.mcp_stateless import MODERN_PROTOCOL_VERSIONS, has_envelope
from securemcp.security import HandshakeRefused

from ._forwarded import proxy_peer
from ._http_calls import JSON, CallAnswers
from ._http_caps import hold_slots
from ._http_media import check_media
from ._http_view import (
    HEADER_MISMATCH,
    RequestSession,
    error_body,
    header_mismatch,
    origin_path,
    refusal_answer,
)
from ._http_view import TEXT as _TEXT
from ._http_view import RequestView as _RequestView
from ._security import security_logger
from ._settings import answer_http

if TYPE_CHECKING:
    from securemcp.protocol import ServerConnection

    from ._driver import ConnectionDriver

__all__ = ["HTTPEndpoint"]


DEFAULT_LEGACY_VERSION = "2025-03-26"
"""The revision assumed for a legacy request without ``MCP-Protocol-Version`` (the spec's rule)."""


class HTTPEndpoint(CallAnswers):
    """Answer the plain HTTP requests of one connection (see the module's docstring)."""

    __slots__ = ("via",)

    def __init__(self, driver: ConnectionDriver) -> None:
        super().__init__(driver)
        self.via = proxy_peer(driver.settings.guard.proxies, driver.address, driver.peer)
        """The socket peer when it is a trusted proxy: then the driver's ``address``
        and ``peer`` are each request's client (see ``_forwarded.py``)."""

    # Requests

    def on_request(self, request: HTTPRequestReceived) -> None:
        """Answer ``request`` now, or start the tool call that will."""
        driver = self.driver
        if self.via is not None:
            driver.address, driver.peer = self.via.client(request.headers)
        driver._arm(math.inf, lazy=True)  # the request is complete: no deadline while answering
        settings = driver.settings
        path = request.path.partition("?")[0]
        if path[:1] != "/":
            path = origin_path(path)
        if settings.mcp_path is None or path != settings.mcp_path:
            self._page(request)
            return
        if request.method != "POST":
            self._respond(405, b"Method Not Allowed\n", [("allow", "POST"), _TEXT])
            return
        if driver.server.draining or driver._refuse:
            self.refuse(503, "service unavailable")
            return
        admitted, principal = self._admit(request)
        if not admitted or (settings.guard.capped and not hold_slots(self, request, principal)):
            return
        form = check_media(request)
        if isinstance(form, tuple):
            self._respond(form[0], form[1], [_TEXT])
            return
        self._form = form
        self._principal = principal
        try:
            message = loads(request.body, driver.conn.limits.max_json_depth)
        except RPCError as exc:
            self._respond(400, error_body(None, exc), JSON)
            return
        if not isinstance(message, dict):
            reason = (
                "batch requests are not supported"
                if isinstance(message, list)
                else "expected a JSON object"
            )
            self._respond(400, error_body(None, InvalidRequest(f"Invalid Request: {reason}")), JSON)
            return
        if "id" not in message or (
            "method" not in message and ("result" in message or "error" in message)
        ):
            self._respond(202)  # a notification or a response: nothing to answer
            return
        broker = settings.broker
        request_session = None if broker is None else RequestSession(broker, driver.server.loop)
        view = _RequestView(settings.app, driver.conn.limits, principal, request_session)
        session = MCPSession(cast("ServerConnection", view))
        enveloped = has_envelope(message.get("params"))
        version = None if enveloped else request.header("mcp-protocol-version")
        # A stateless revision named by the header needs the body's envelope too.
        if enveloped or version in MODERN_PROTOCOL_VERSIONS:
            mismatch = header_mismatch(request, message, settings.app.get_tool, principal)
            if mismatch is not None:
                refusal = RPCError(f"Header mismatch: {mismatch}", code=HEADER_MISMATCH)
                self._respond(400, error_body(message.get("id"), refusal), JSON)
                return
        if message.get("method") != "initialize" and not enveloped:
            version = version or DEFAULT_LEGACY_VERSION
            if version not in PROTOCOL_VERSIONS:
                body = f"Bad Request: unsupported MCP-Protocol-Version {version[:40]!r}\n"
                self._respond(400, body.encode(), [_TEXT])
                return
            # Stateless: a legacy request stands for an initialized session.
            session.protocol_version = version
            session.initialized = True
        session.on_message(message)
        if view.call is not None:
            self._session = session
            self._start(view.call, principal)
            return
        status = 400 if view.errored and view.error_id is None else 200
        self._json(status, view.sent[0] if view.sent else b"{}")

    def _admit(self, request: HTTPRequestReceived) -> tuple[bool, Principal | None]:
        """Whether the security policy admits ``request``, and its principal (refused: answered)."""
        driver = self.driver
        try:
            principal = driver.settings.guard.policy.check_request(
                request.path, request.headers, now=time.time()
            )
        except HandshakeRefused as refusal:
            security_logger.warning(
                "HTTP request from %s refused: HTTP %d %s",
                driver.peer,
                refusal.status,
                refusal.reason,
            )
            self._respond(refusal.status, *refusal_answer(refusal))
            return False, None
        except Exception as exc:  # noqa: BLE001 - a plug-in's failure refuses the request
            security_logger.error(
                "the authenticator raised %s; refusing the request", type(exc).__name__
            )
            self._respond(500, b"authentication failed\n", [_TEXT])
            return False, None
        return True, principal

    def _page(self, request: HTTPRequestReceived) -> None:
        """A path other than the MCP endpoint: the answer it had before HTTP serving, then close."""
        settings = self.driver.settings
        if settings.http_handler is None:
            self._respond(400, b"Bad Request: not a WebSocket upgrade\n", [_TEXT])
        elif request.method != "GET":
            self._respond(405, b"Method Not Allowed\n", [("allow", "GET"), _TEXT])
        else:
            page = HTTPRequest(request.method, request.path, request.headers)
            status, headers, body = answer_http(settings, page)
            if not any(name.lower() == "content-type" for name, _ in headers):
                headers = [*headers, _TEXT]
            self._respond(status, body, headers)
        self._http.close()
