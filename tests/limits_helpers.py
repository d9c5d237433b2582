"""Byte-exact frames for the tests of the core's limits: a ping, close frames, deflate.

A ping and its answer, the close frame a server sends and the code of one it
sent, a ping padded to a size, and permessage-deflate: a server past a
handshake offering it, messages compressed as a client would, and a server's
compressed answers inflated.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from securemcp import SecureMCP
from securemcp.protocol import HandshakeRequest, Limits, ServerConnection

from .helpers import (
    OP_CLOSE,
    OP_TEXT,
    UPGRADE_REQUEST,
    close_payload,
    server_frame,
    split_server_frames,
)

PING = b'{"id":1,"method":"ping"}'
PONG = {"id": 1, "result": {"pong": True}}
RSV1 = 0b100
"""The "compressed" bit of a frame's first byte, as client_frame's ``rsv`` takes it."""


def server_close(code: int, reason: str = "") -> bytes:
    return server_frame(close_payload(code, reason), OP_CLOSE)


def close_code(data: bytes) -> int:
    """The code of the close frame that is all of ``data``."""
    [(opcode, payload)] = split_server_frames(data)
    assert opcode == OP_CLOSE
    return int.from_bytes(payload[:2], "big")


def ping_text(size: int) -> bytes:
    """A ping request padded to exactly ``size`` bytes."""
    head, tail = b'{"id":1,"method":"ping","params":"', b'"}'
    text = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(text) == size
    return text


def deflate_request(offer: str = "permessage-deflate") -> bytes:
    return UPGRADE_REQUEST[:-2] + f"Sec-WebSocket-Extensions: {offer}\r\n\r\n".encode()


def open_deflate_server(
    app: SecureMCP, limits: Limits, offer: str = "permessage-deflate"
) -> tuple[ServerConnection, bytes]:
    """A server past the handshake; returns it and its 101 response head."""
    server = ServerConnection(app, limits=limits)
    server.receive_data(deflate_request(offer))
    [request] = server.events_received()
    assert isinstance(request, HandshakeRequest)
    server.accept(welcome=False)
    return server, server.data_to_send()


def compress(data: bytes, *, final: bool = False) -> bytes:
    """``data`` as one permessage-deflate message body (sync-flushed, tail removed)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    if final:
        return compressor.compress(data) + compressor.flush(zlib.Z_FINISH)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate_server_messages(data: bytes) -> list[Any]:
    decompressor = zlib.decompressobj(-15)
    messages = []
    for opcode, payload in split_server_frames(data):
        assert opcode == OP_TEXT
        messages.append(json.loads(decompressor.decompress(payload + b"\x00\x00\xff\xff")))
    return messages


LIMIT = 1000
DEFLATE = Limits(max_message_size=LIMIT, permessage_deflate=True)
