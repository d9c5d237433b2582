"""One read buffer per thread for the asyncio protocols, server and client.

asyncio's plain protocols receive a fresh bytes object per read, allocated at
the transport's full read size (256 KiB): glibc serves that with mmap and
takes it back with mremap and munmap, page faults included, unless some
earlier free happened to raise its mmap threshold. Under many small messages
that was a third of a server's CPU, and how much depended on the process's
history. ``asyncio.BufferedProtocol`` reads into a buffer we own instead; a
read is consumed before the next one starts on the same loop, so every
connection on a loop's thread can share one.
"""

from __future__ import annotations

import threading

__all__ = ["READ_SIZE", "read_buffer"]

READ_SIZE = 256 * 1024
"""The most one read takes: what asyncio's transports read at once by default."""

_local = threading.local()


def read_buffer() -> memoryview:
    """This thread's read buffer (made on first use)."""
    try:
        view: memoryview = _local.view
    except AttributeError:
        view = _local.view = memoryview(bytearray(READ_SIZE))
    return view
