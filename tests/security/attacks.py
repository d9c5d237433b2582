"""What the WebSocket attacks and their HTTP twins share: peers held until dropped, floods timed.

:func:`dropped_at_the_timeout` watches many half-sent requests until the server
drops them; :func:`flood_until` keeps a flooding peer busy; :func:`slowest_call`
times a bystander's calls meanwhile.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence

import anyio

from .conftest import RawPeer

EARLY = 0.9
"""A timer may not fire before this fraction of its duration (scheduling leeway);
one firing at half its duration fails."""


async def dropped_at_the_timeout(
    peers: Sequence[RawPeer],
    opened: Sequence[float],
    after: float,
    meanwhile: Callable[[], Awaitable[None]],
) -> None:
    """Each of ``peers`` (opened at ``opened``) is dropped ``after`` seconds, no byte answered.

    Not before that (the server's timeout), and not long after; ``meanwhile()``
    runs while they hang.
    """
    closed = [math.inf] * len(peers)
    received = [b""] * len(peers)

    async def watch(index: int) -> None:
        received[index] = await peers[index].until_eof()
        closed[index] = anyio.current_time()

    with anyio.fail_after(after + 5.0):
        async with anyio.create_task_group() as tg:
            for index in range(len(peers)):
                tg.start_soon(watch, index)
            await meanwhile()
    assert received == [b""] * len(peers)
    lived = [end - start for start, end in zip(opened, closed, strict=True)]
    assert min(lived) >= EARLY * after, f"closed after {min(lived):.3f} s"
    assert max(lived) < after + 2.0, f"closed after {max(lived):.3f} s"


async def flood_until(
    stop: anyio.Event, send: Callable[[], Awaitable[None]], read_one: Callable[[], Awaitable[None]]
) -> int:
    """``send()`` again and again until ``stop``, reading answers meanwhile; how many were read."""
    answered = 0

    async def read() -> None:
        nonlocal answered
        while True:
            await read_one()
            answered += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        while not stop.is_set():
            await send()
        tg.cancel_scope.cancel()
    return answered


async def slowest_call(call: Callable[[], Awaitable[None]], times: int = 20) -> float:
    """The longest of ``times`` calls of ``call()``, in seconds (each bounded by 5 s)."""
    slowest = 0.0
    for _ in range(times):
        start = anyio.current_time()
        with anyio.fail_after(5):
            await call()
        slowest = max(slowest, anyio.current_time() - start)
    return slowest
