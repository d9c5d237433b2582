"""What a connection has to send: frames queued as they are built, counted, taken in order.

The count is what ``Limits.max_pending_output`` is checked against. A backend
takes the bytes whole (``data_to_send``), or as chunks in which every large
part of a message stands on its own instead of being copied into one buffer
with the rest (``data_to_send_chunks``).
"""

from __future__ import annotations

from .frames import text_frame, text_frame_header

__all__ = ["LARGE", "Output"]

LARGE = 64 * 1024
"""Bytes from which an outgoing part is handed to the backend on its own, not copied."""


class Output:
    """The bytes waiting to be written, oldest first."""

    __slots__ = ("_chunks", "size")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self.size = 0
        """How many bytes are waiting."""

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def append(self, data: bytes) -> None:
        """Queue ``data`` after what is waiting."""
        self._chunks.append(data)
        self.size += len(data)

    def append_text(self, payload: bytes, *more: bytes) -> None:
        """Queue a server's text frame carrying ``payload`` followed by ``more``.

        A large message is queued as its header and its parts, so that
        :meth:`take_chunks` hands them over uncopied.
        """
        size = len(payload) + sum(map(len, more)) if more else len(payload)
        if size < LARGE:
            self.append(text_frame(payload, *more))
            return
        self.append(text_frame_header(size))
        self.append(payload)
        for part in more:
            self.append(part)

    def take(self) -> bytes:
        """Everything waiting, as one bytes object (empty: nothing)."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._clear()
        return data

    def take_chunks(self) -> list[bytes]:
        """Everything waiting, in order: small pieces joined, large parts on their own."""
        chunks = self._chunks
        if len(chunks) <= 1:
            taken = chunks[:]
        else:
            taken = []
            small: list[bytes] = []
            for chunk in chunks:
                if len(chunk) < LARGE:
                    small.append(chunk)
                    continue
                if small:
                    taken.append(small[0] if len(small) == 1 else b"".join(small))
                    small = []
                taken.append(chunk)
            if small:
                taken.append(small[0] if len(small) == 1 else b"".join(small))
        self._clear()
        return taken

    def _clear(self) -> None:
        self._chunks.clear()
        self.size = 0
