"""S6 broadcast: one sender, 500 receivers in one room, every SecureMCP backend beside nextmcp.

Each server runs in its own process pinned to CPU 0; the client process
(``broadcast_client.py``, run by ``benchmarks/.venv-peers``' Python so
that it uses picows on uvloop, else the project's Python with the
``websockets`` client) is pinned to CPU 1 and holds every connection: the
receivers and the sender, all joined to one room. The sender calls
``send_message`` with a sequence number in the text; the server fans each
message out as a ``chat.message`` notification. A message is *delivered*
when the last receiver has it: its **lag** is the time from the sender's
send to that last receipt (one process, one clock).

Two workloads, closed loop on delivery (the next message goes out as soon
as one of the ``window`` messages in flight reached every receiver):

- B1 paced: window 1, the fan-out latency of one message alone (lag p50/max);
- B2 saturated: window 8, deliveries per second (receiver receipts / s).

SecureMCP runs ``benchmarks/servers/securemcp_broadcast_server.py``
(``ctx.publish``); nextmcp 0.6.0 runs
``benchmarks/servers/nextmcp_broadcast_server.py`` (``WebSocketTransport.broadcast()``,
which sends to every connection; the sender joins the room in both, so both
servers write the same 501 frames per message).

Usage::

    python benchmarks/broadcast_bench.py            # full run, writes its section of RESULTS.md
    python benchmarks/broadcast_bench.py --smoke    # every server, 20 receivers, a few messages
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# Run as a script, this file finds its sibling modules on sys.path[0]; mypy knows them by package.
if TYPE_CHECKING:
    from benchmarks import broadcast, harness, options
else:
    import broadcast
    import harness
    import options

SERVERS_DIR = harness.SERVERS_DIR
SECTION = "## S6 broadcast: one sender, a room of receivers"
COMMAND = "bash benchmarks/setup_peers.sh && .venv/bin/python benchmarks/broadcast_bench.py"


@dataclass(frozen=True)
class Server(harness.Server):
    """A broadcast server to measure."""

    securemcp: bool = True
    needs: str | None = None


SERVERS = [
    Server("securemcp-asyncio", "SecureMCP `ctx.publish`, anyio on asyncio",
           ("securemcp_broadcast_server.py", "--backend", "asyncio"), False),
    Server("securemcp-uvloop", "SecureMCP `ctx.publish`, anyio on asyncio with uvloop",
           ("securemcp_broadcast_server.py", "--backend", "asyncio+uvloop"), False,
           needs="uvloop"),
    Server("securemcp-trio", "SecureMCP `ctx.publish`, anyio on trio",
           ("securemcp_broadcast_server.py", "--backend", "trio"), False),
    Server("nextmcp", "nextmcp 0.6.0 `WebSocketTransport.broadcast()`, websockets underneath",
           ("nextmcp_broadcast_server.py",), True, securemcp=False),
]  # fmt: skip


def _versions() -> dict[str, str]:
    found = harness.own_versions(("securemcp", "anyio", "trio", "wsproto", "uvloop"))
    found.update(harness.peer_versions(["nextmcp", "websockets", "picows"]))
    return found


def markdown(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    servers: Sequence[Server],
    meta: dict[str, Any],
) -> str:
    """The RESULTS.md section: conditions, one table per workload, the ratios, the target."""
    lines = [
        SECTION,
        "",
        f"One sender and {meta['receivers']} receivers, all joined to one room, in one client "
        f"process pinned to CPU 1 ({meta['client']}); each server in its own process pinned to "
        "CPU 0. The sender calls `send_message`; the server fans the message out as a "
        "`chat.message` notification to every member (the sender too, in both systems, so each "
        f"message costs {meta['receivers'] + 1} frames). A message's **lag** is the time from "
        "the sender's send to the last receiver's receipt (one clock); **deliveries/s** counts "
        "receiver receipts over the window. Closed loop on delivery: the next message goes out "
        "when one in flight has reached every receiver. "
        f"{meta['warmup']} warm-up messages, then {meta['messages']} measured, per run; "
        f"{meta['runs']} runs, rounds interleaved; medians with the min - max range.",
        "",
        "What each workload shows: in B1 every frame leaves in a send() of its own, so the lag "
        "is the server's cost of writing one message to every connection. B2 lets a server "
        "coalesce several messages per connection in one write. nextmcp reads a connection's "
        "next message only after its tool returned, and its `broadcast()` awaits every send, so "
        "its B2 is its B1 with eight times the lag. `server CPU` and `client CPU` are the busy "
        "share of one core during the window: a client well under 100% is not the bottleneck.",
        "",
        *harness.conditions(meta, "before", "(shared machine: compare the ratios of one run)"),
    ]
    lines += [f"- `{server.name}`: {server.description}" for server in servers]
    for workload in broadcast.WORKLOADS:
        lines += broadcast.workload_table(results, [server.name for server in servers], workload)
    ours = [s for s in servers if s.securemcp]
    lines += [
        "",
        "### Ratios SecureMCP / nextmcp",
        "",
        "Deliveries/s (above 1 SecureMCP is faster) and lag p50 (below 1 SecureMCP is faster), "
        "ratio of the medians. Lag max is the worst of all runs, shown in the tables above.",
        "",
        "| SecureMCP / nextmcp | B1 deliveries/s | B1 lag p50 | B2 deliveries/s | B2 lag p50 |",
        "|---|---:|---:|---:|---:|",
    ]
    for server in ours:
        cells = []
        for key in ("B1", "B2"):
            for metric in ("deliveries_per_s", "lag_p50_ms"):
                a = harness.median(results, (server.name, key), metric)
                b = harness.median(results, ("nextmcp", key), metric)
                cells.append("" if a is None or not b else f"{a / b:.2f}")
        if any(cells):
            lines.append(f"| `{server.name}` | " + " | ".join(cells) + " |")
    a = harness.median(results, ("securemcp-asyncio", "B2"), "deliveries_per_s")
    b = harness.median(results, ("nextmcp", "B2"), "deliveries_per_s")
    if a is not None and b:
        met = "met" if a / b >= 2 else "**not met**"
        lines += ["", f"Target: B2 deliveries/s on asyncio >= 2 x nextmcp: {a / b:.2f} x, {met}."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_options(parser, "every server, briefly")
    broadcast.add_options(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        broadcast.smoke(args)

    servers = harness.chosen(SERVERS, args.only)
    load_before = harness.load_average()
    runs = harness.Collector()
    for round_number in range(1, args.runs + 1):
        for server in servers:
            argv = (str(SERVERS_DIR / server.argv[0]), *server.argv[1:])
            with harness.running(server.name, argv, server.peers_env) as running:
                broadcast.measure_all(runs, round_number, server.name, [running], args)
    meta = runs.meta(load_before, _versions(), args.runs, COMMAND, **broadcast.meta(args))
    harness.report(args, SECTION, markdown(runs.results, servers, meta), meta, runs.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
