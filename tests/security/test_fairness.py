"""One connection's flood does not starve the others while it lasts.

The server answers calls that cannot suspend in the same pass as the bytes
that asked for them; a peer whose bytes are always ready must still leave room
for everyone else. Here a raw peer pipelines requests as fast as it can while a
well-behaved client, on its own connection, keeps making calls: each of those
must be answered promptly during the flood, not after it.
"""

from __future__ import annotations

import json

import anyio
import pytest

from securemcp.transport import WebSocketClient

from ..helpers import OP_TEXT, text_frame
from .attacks import flood_until, slowest_call
from .conftest import RawPeer, hostile_server

PROMPT = 1.0
"""How long a bystander's call may take while another connection floods (seconds).

A starved bystander waits for the flood to end, which it never does while the
bystander still calls: its call then hits the 5 s bound. A served one takes
milliseconds; 1 s leaves room for a machine busy with other work (0.5 s was
exceeded by 62 ms once on a 2-core machine running two test suites)."""

BATCH = 200
"""Requests the flooder sends per write: its bytes are always ready."""


async def _flood(peer: RawPeer, stop: anyio.Event) -> int:
    """Pipeline echo calls, reading the answers as they come, until ``stop``; the count."""
    batch = b"".join(
        text_frame(
            {"id": n, "method": "invoke_tool", "params": {"tool_name": "echo",
                                                         "params": {"message": "flood"}}}
        )
        for n in range(BATCH)
    )  # fmt: skip

    async def read_one() -> None:
        opcode, payload = await peer.next_frame()
        assert opcode == OP_TEXT
        assert json.loads(payload)["result"] == "flood"

    return await flood_until(stop, lambda: peer.stream.send(batch), read_one)


@pytest.mark.anyio
async def test_a_flooding_connection_does_not_starve_another() -> None:
    async with hostile_server() as server, server.open_peer() as peer:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            flooded: list[int] = []

            async def flood() -> None:
                flooded.append(await _flood(peer, stop))

            tg.start_soon(flood)
            async with WebSocketClient(server.url) as bystander:

                async def call() -> None:
                    assert await bystander.invoke_tool("echo", {"message": "me too"}) == "me too"

                slowest = await slowest_call(call)
            stop.set()
        # The flood really ran alongside: hundreds of its calls were answered.
        [answered] = flooded
        assert answered >= 2 * BATCH
        assert slowest < PROMPT, f"a bystander's call took {slowest:.3f} s during the flood"
