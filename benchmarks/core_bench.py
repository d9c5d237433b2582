"""In-memory round trips per second: the SecureMCP core against bare wsproto.

Both loops move the same ``invoke_tool`` echo request from a client
WebSocket connection to a server one and the answer back, as bytes, with no
socket in between. The SecureMCP loop goes through ``ClientConnection`` and
``ServerConnection`` (JSON-RPC envelope checks, method dispatch, pydantic
validation of the tool's arguments, answer correlation on the client). The
ceiling does the least a server could: two wsproto ``WSConnection`` objects
and ``json`` at both ends, a method looked up in a dict, the function called,
the answer parsed. The ratio core/ceiling is what the protocol layer costs.

Runs are interleaved (core, ceiling, core, ceiling, ...) so that drift in a
shared machine's load hits both sides alike; medians are reported with the
min-max range.

Usage::

    python benchmarks/core_bench.py [--calls N] [--runs R] [--smoke] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic
import pydantic_core
import wsproto
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Message, Request, TextMessage

from securemcp import SecureMCP
from securemcp.protocol import (
    ClientConnection,
    HandshakeRequest,
    ResponseReceived,
    ServerConnection,
    ToolCall,
)

MESSAGE = "hello from the benchmark"
"""The text every call echoes (the same on both sides of the comparison)."""

PIPELINE_DEPTH = 8
"""Calls in flight per batch in the pipelined variant."""

TARGET_RATIO = 0.90
"""Issue 12's target: the full core at least 90% of the bare-wsproto ceiling, 1 call in flight."""


def echo(message: str) -> dict[str, str]:
    """Echo a message back (the benchmark's tool)."""
    return {"echoed": message}


# A loop is built by a factory (handshake included, outside the timing) and
# returns a function that performs ``batches`` batches of ``depth`` calls.
RoundTrips = Callable[[int], None]


def core_loop(depth: int) -> RoundTrips:
    """Client and server SecureMCP cores wired back to back; returns the timed body."""
    app = SecureMCP("bench")
    app.add_tool(echo)
    server = ServerConnection(app)
    client = ClientConnection()
    client.connect("localhost", "/")
    server.receive_data(client.data_to_send())
    for event in server.events_received():
        if isinstance(event, HandshakeRequest):
            server.accept()
    client.receive_data(server.data_to_send())
    client.events_received()  # Connected, Welcome

    arguments = {"message": MESSAGE}

    def run(batches: int) -> None:
        for _ in range(batches):
            for _ in range(depth):
                client.invoke_tool("echo", arguments)
            server.receive_data(client.data_to_send())
            for event in server.events_received():
                if isinstance(event, ToolCall):
                    server.complete(event, event.tool.fn(**event.arguments))
            client.receive_data(server.data_to_send())
            answers = client.events_received()
            if len(answers) != depth or not isinstance(answers[-1], ResponseReceived):
                raise RuntimeError(f"unexpected answers: {answers!r}")

    return run


def ceiling_loop(depth: int) -> RoundTrips:
    """Two bare wsproto connections with ``json`` at both ends; returns the timed body."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="localhost", target="/")))
    for ws_event in server.events():
        if isinstance(ws_event, Request):
            client.receive_data(server.send(AcceptConnection()))
    list(client.events())

    methods: dict[str, Callable[..., Any]] = {"echo": echo}
    next_id = 0

    def handle(text: str) -> str:
        request = json.loads(text)
        params = request["params"]
        result = methods[params["tool_name"]](**params["params"])
        return json.dumps({"id": request["id"], "result": result})

    def run(batches: int) -> None:
        nonlocal next_id
        for _ in range(batches):
            outgoing = []
            for _ in range(depth):
                next_id += 1
                request = {
                    "id": next_id,
                    "method": "invoke_tool",
                    "params": {"tool_name": "echo", "params": {"message": MESSAGE}},
                }
                outgoing.append(client.send(Message(data=json.dumps(request))))
            server.receive_data(b"".join(outgoing))
            answers = [
                server.send(Message(data=handle(event.data)))
                for event in server.events()
                if isinstance(event, TextMessage)
            ]
            client.receive_data(b"".join(answers))
            results = [
                json.loads(event.data)["result"]
                for event in client.events()
                if isinstance(event, TextMessage)
            ]
            if len(results) != depth:
                raise RuntimeError(f"unexpected answers: {results!r}")

    return run


@dataclass(frozen=True)
class Row:
    """One line of the results table: calls per second over the runs."""

    name: str
    depth: int
    rates: tuple[float, ...]

    @property
    def median(self) -> float:
        """Median calls per second."""
        return statistics.median(self.rates)


def measure(factory: Callable[[int], RoundTrips], depth: int, calls: int) -> float:
    """Calls per second of one run of ``calls`` calls (rounded down to whole batches)."""
    run = factory(depth)
    run(max(1, 200 // depth))  # Warm caches and wsproto's buffers outside the timing.
    batches = max(1, calls // depth)
    start = time.perf_counter()
    run(batches)
    elapsed = time.perf_counter() - start
    return batches * depth / elapsed


def benchmark(calls: int, runs: int) -> list[tuple[Row, Row]]:
    """For each depth, interleave core and ceiling runs; return (core, ceiling) pairs."""
    pairs = []
    for depth in (1, PIPELINE_DEPTH):
        core_rates: list[float] = []
        ceiling_rates: list[float] = []
        for _ in range(runs):
            core_rates.append(measure(core_loop, depth, calls))
            ceiling_rates.append(measure(ceiling_loop, depth, calls))
        pairs.append(
            (
                Row("securemcp core", depth, tuple(core_rates)),
                Row("bare wsproto + json (ceiling)", depth, tuple(ceiling_rates)),
            )
        )
    return pairs


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(pairs: Sequence[tuple[Row, Row]]) -> list[str]:
    """The results as Markdown table lines (readable as plain text too).

    The ratio is that of the medians; beside it, the range of the ratios of
    each interleaved pair of runs.
    """
    lines = [
        "| loop | calls in flight | calls/s (median) | min - max | core / ceiling |",
        "|---|---:|---:|---:|---:|",
    ]
    for core, ceiling in pairs:
        paired = [a / b for a, b in zip(core.rates, ceiling.rates, strict=True)]
        ratio = f"**{core.median / ceiling.median:.0%}**"
        if len(paired) > 1:
            ratio += f" ({min(paired):.0%} - {max(paired):.0%})"
        for row in (core, ceiling):
            lines.append(
                f"| {row.name} | {row.depth} | {row.median:,.0f} | "
                f"{min(row.rates):,.0f} - {max(row.rates):,.0f} | "
                f"{ratio if row is core else ''} |"
            )
    return lines


def report(pairs: Sequence[tuple[Row, Row]], calls: int, runs: int, markdown: bool) -> str:
    """The full report: the table, the verdict against the target and, for Markdown, context."""
    ratios = [core.median / ceiling.median for core, ceiling in pairs]
    # The target is for one call in flight; the pipelined ratio is shown beside it.
    met = "met" if ratios[0] >= TARGET_RATIO else "NOT met"
    verdict = f"{ratios[0]:.0%}; {PIPELINE_DEPTH} in flight, not a target: {ratios[1]:.0%}"
    lines: list[str] = []
    if markdown:
        lines += [
            "## Core round trips (in memory)",
            "",
            *textwrap.wrap(
                "`invoke_tool` echo round trips with no socket: the client core sends the "
                "request, the bytes go to the server core, the `ToolCall` is completed with "
                "the sync tool's result, the bytes come back and the client core yields "
                "`ResponseReceived`. The ceiling does the minimal equivalent through two bare "
                "wsproto connections and `json` at both ends. One call in flight at a time, "
                f"then {PIPELINE_DEPTH} pipelined per batch. {runs} runs of {calls:,} calls "
                "per loop, core and ceiling interleaved; medians with the min - max range. The "
                "ratio is that of the medians, with the range of the ratios of each "
                "interleaved pair of runs in brackets.",
                width=100,
            ),
            "",
            f"- Date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- Machine: {os.cpu_count()} cores, {_cpu_model()}, {platform.system()} "
            f"{platform.release()} (shared with other work while measuring: compare the ratios "
            "of one run, not absolute figures across runs)",
            f"- Python {platform.python_version()}, wsproto {wsproto.__version__}, "
            f"pydantic {pydantic.VERSION} (pydantic-core {pydantic_core.__version__})",
            f"- Regenerate: `python benchmarks/core_bench.py --calls {calls} --runs {runs} "
            "--markdown`",
            "",
        ]
    lines += table(pairs)
    lines += [
        "",
        f"Target core/ceiling >= {TARGET_RATIO:.0%} with 1 call in flight: {met} ({verdict}).",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per run")
    parser.add_argument("--runs", type=int, default=5, help="runs per loop, interleaved")
    parser.add_argument(
        "--smoke", action="store_true", help="a few calls only, to check the harness works"
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print a RESULTS.md section with its context"
    )
    args = parser.parse_args(argv)
    calls, runs = (64, 1) if args.smoke else (args.calls, args.runs)
    if calls < 1 or runs < 1:
        parser.error("--calls and --runs must be positive")
    print(report(benchmark(calls, runs), calls, runs, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
