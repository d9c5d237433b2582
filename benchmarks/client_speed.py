"""How the load generator's speed moves S3's figures: the study behind ``benchmarks/HARNESS.md``.

S3 (100 connections x 1 call in flight) against each server while the load
generator spins ``--work`` microseconds per answer (``loadgen.py
--client-work-us``): 0 is the published configuration, a fast client that
sleeps between answers; more is a slower client, such as another harness's.
Rounds are interleaved (every work value x every server, then again);
medians of the runs. Besides calls/s the table gives the server's CPU time
per call, which stays comparable when the client is the bottleneck.

``--profile`` then samples each server with py-spy (from the peers'
environment) during one more S3 per work value, and gives the share of its
samples on the lines of asyncio's socket transport that call ``send()`` and
``recv()``: where a write that wakes a sleeping peer costs. Servers on
uvloop make those calls in C, out of py-spy's sight: profile asyncio ones.
``--syscalls`` counts, with ``perf stat`` during one more S3 per work value,
the server's ``sendto``, ``recvfrom`` and ``epoll_wait`` calls and its
context switches, per call answered: how many calls share one loop
iteration, one send, one sleep.

Usage::

    python benchmarks/client_speed.py [--work 0,25,50,100] [--runs 3] [--profile] \\
        [--syscalls] [--only wsproto-ceiling,securemcp-asyncio]
"""

from __future__ import annotations

import argparse
import asyncio.selector_events
import collections
import inspect
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Run as a script, this file finds its sibling modules on sys.path[0]; mypy knows them by package.
if TYPE_CHECKING:
    from benchmarks import harness, run
else:
    import harness
    import run

PY_SPY = harness.HERE / ".venv-peers" / "bin" / "py-spy"
DEFAULT_SERVERS = "wsproto-ceiling,securemcp-asyncio,nextmcp,websockets"


def syscall_lines() -> dict[str, set[int]]:
    """The lines of ``asyncio/selector_events.py`` that call ``send`` and ``recv`` on a socket."""
    source = Path(inspect.getfile(asyncio.selector_events)).read_text().splitlines()
    found: dict[str, set[int]] = {"send": set(), "recv": set()}
    for number, line in enumerate(source, 1):
        for call in found:
            if f"._sock.{call}(" in line or f"._sock.{call}_into(" in line:
                found[call].add(number)
    return found


def shares(raw: str, lines: dict[str, set[int]]) -> dict[str, float]:
    """Share of py-spy's samples (``-f raw``) whose innermost frame is each kind of call."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for row in raw.splitlines():
        stack, _, number = row.rpartition(" ")
        if not stack:
            continue
        total += int(number)
        leaf = stack.rsplit(";", 1)[-1]
        if "asyncio/selector_events.py:" in leaf:
            line = int(leaf.rsplit(":", 1)[1].rstrip(")"))
            for call, numbers in lines.items():
                if line in numbers:
                    counts[call] += int(number)
    return {call: 100 * counts[call] / total if total else 0.0 for call in lines}


SAMPLED = 4.0
"""Seconds a sampler (py-spy, perf) watches the server, inside the load generator's window."""

PERF_EVENTS = {
    "send": "syscalls:sys_enter_sendto",
    "recv": "syscalls:sys_enter_recvfrom",
    "epoll": "syscalls:sys_enter_epoll_wait",
    "sleeps": "context-switches",
}
"""What ``--syscalls`` counts in the server, per call: its socket sends and receives, its event
loop's waits for readiness (one per loop iteration) and the times it gave up the CPU; and in
the load generator, its context switches (``client sleeps``: each one a wake-up to pay)."""


def loadgen_pid() -> int:
    """The load generator this process is running (its child running ``loadgen.py``)."""
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        for pid in children.read_text().split():
            if b"loadgen.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
    raise RuntimeError("no load generator running")


def sampled(
    server: run.Entry, work: float, args: argparse.Namespace, samplers: Sequence[Sequence[str]]
) -> tuple[dict[str, Any], list[str]]:
    """S3 at ``work`` us per answer with ``samplers`` watching for ``SAMPLED`` s of the window.

    Each sampler is an argv in which ``{server}``, ``{client}`` (the pids) and
    ``{out}`` (its output file) are filled in. Returns the load generator's
    figures and what each sampler wrote.
    """
    s3 = next(w for w in run.WORKLOADS if w.key == "S3")
    loadgen_args = argparse.Namespace(
        **{**vars(args), "warmup": 1.0, "duration": SAMPLED + 2.0, "client_work_us": work}
    )
    with run.running(server) as (port, pid), tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"sampled{index}.txt" for index in range(len(samplers))]
        started: list[subprocess.Popen[bytes]] = []

        def start() -> None:
            client = loadgen_pid()
            for sampler, out in zip(samplers, outs, strict=True):
                argv = [part.format(server=pid, client=client, out=out) for part in sampler]
                # Pinned with the load generator, so as to take no CPU from the server.
                started.append(subprocess.Popen(
                    argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    preexec_fn=lambda: harness.pin(1),
                ))  # fmt: skip

        # Once the load generator has connected and warmed up.
        timer = threading.Timer(1.5, start)
        timer.start()
        figures = run.measure(s3, port, pid, loadgen_args)
        timer.join()
        for process in started:
            process.wait(30)
        return figures, [out.read_text() for out in outs]


def profile(server: run.Entry, work: float, args: argparse.Namespace) -> dict[str, float]:
    """The share of py-spy's samples of ``server`` on socket send and recv lines."""
    command = [str(PY_SPY), "record", "-r", "500", "-f", "raw", "-d", f"{SAMPLED:g}",
               "-p", "{server}", "-o", "{out}"]  # fmt: skip
    _figures, (raw,) = sampled(server, work, args, [command])
    return shares(raw, syscall_lines())


def perf_counts(text: str) -> dict[str, int]:
    """Event name -> count, from ``perf stat -x ,`` output."""
    counts = {}
    for row in text.splitlines():
        fields = row.split(",")
        if len(fields) > 2 and fields[0].isdigit():
            counts[fields[2]] = int(fields[0])
    return counts


def syscalls(server: run.Entry, work: float, args: argparse.Namespace) -> dict[str, float]:
    """``PERF_EVENTS`` in the server, and the client's sleeps, per call, from ``perf stat``."""

    def perf(pid: str, events: str) -> list[str]:
        return ["perf", "stat", "-x", ",", "-o", "{out}", "-p", pid, "-e", events,
                "sleep", f"{SAMPLED:g}"]  # fmt: skip

    figures, (server_text, client_text) = sampled(server, work, args, [
        perf("{server}", ",".join(PERF_EVENTS.values())), perf("{client}", "context-switches"),
    ])  # fmt: skip
    calls = figures["calls_per_s"] * SAMPLED
    counts = perf_counts(server_text)
    found = {name: counts.get(event, 0) / calls for name, event in PERF_EVENTS.items()}
    found["client sleeps"] = perf_counts(client_text).get("context-switches", 0) / calls
    return found


def sweep(
    servers: Sequence[run.Entry], works: Sequence[float], args: argparse.Namespace
) -> dict[tuple[str, float], list[dict[str, Any]]]:
    """S3 for every server and work value, rounds interleaved; the figures of each run."""
    s3 = next(w for w in run.WORKLOADS if w.key == "S3")
    results: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for round_number in range(1, args.runs + 1):
        for work in works:
            for server in servers:
                with run.running(server) as (port, pid):
                    figures = run.measure(
                        s3, port, pid, argparse.Namespace(**{**vars(args), "client_work_us": work})
                    )
                results.setdefault((server.name, work), []).append(figures)
                print(f"[round {round_number}] {server.name:18} work {work:g} us: "
                      f"{figures['calls_per_s']:,.0f} calls/s, server "
                      f"{figures['server_cpu_pct']:.0f}%, client {figures['client_cpu_pct']:.0f}%",
                      file=sys.stderr, flush=True)  # fmt: skip
    return results


def table(
    results: dict[tuple[str, float], list[dict[str, Any]]],
    servers: Sequence[run.Entry],
    works: Sequence[float],
    extra: dict[tuple[str, float], dict[str, float]],
) -> list[str]:
    """The study's Markdown table: a line per server and work value.

    ``extra`` holds the py-spy shares (``send``, ``recv``: % of samples) and
    the perf counts (``per call ...``) of each, where they were taken.
    """
    counted = (*PERF_EVENTS, "client sleeps")
    columns = [name for name in ("send", "recv", *(f"per call {e}" for e in counted))
               if any(name in found for found in extra.values())]  # fmt: skip
    titles = [f"{c} (count)" if c.startswith("per call") else f"{c}() share" for c in columns]
    lines = [
        "| server | client work us/answer | calls/s | server CPU | client CPU "
        "| server CPU us/call | " + " | ".join(titles) + (" |" if titles else "|"),
        "|---|" + "---:|" * (5 + len(columns)),
    ]
    for server in servers:
        for work in works:
            runs = results[(server.name, work)]
            per_call = statistics.median(
                1e4 * r["server_cpu_pct"] / r["calls_per_s"] for r in runs if r["calls_per_s"]
            )
            found = extra.get((server.name, work), {})
            cells = [
                f"`{server.name}`", f"{work:g}",
                f"{statistics.median(r['calls_per_s'] for r in runs):,.0f}",
                f"{statistics.median(r['server_cpu_pct'] for r in runs):.0f}%",
                f"{statistics.median(r['client_cpu_pct'] for r in runs):.0f}%",
                f"{per_call:.1f}",
                *(f"{found[c]:.2f}" if c.startswith("per call") else f"{found[c]:.0f}%"
                  for c in columns),
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep (and the samplers asked for); print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="0,25,50,100", help="us per answer, comma-separated")
    parser.add_argument("--only", default=DEFAULT_SERVERS, help="comma-separated server names")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--profile", action="store_true", help="py-spy each server (root)")
    parser.add_argument(
        "--syscalls",
        action="store_true",
        help="count each server's syscalls per call with perf (root)",
    )
    args = parser.parse_args(argv)
    if args.profile and not PY_SPY.exists():
        parser.error(f"--profile needs py-spy at {PY_SPY} (bash benchmarks/setup_peers.sh)")
    args.idle = 0
    works = [float(value) for value in args.work.split(",")]
    servers = harness.chosen(run.SERVERS, args.only)
    started = time.monotonic()
    load_before = harness.load_average()
    results = sweep(servers, works, args)
    extra: dict[tuple[str, float], dict[str, float]] = {}
    for server in servers:
        for work in works:
            found = extra.setdefault((server.name, work), {})
            if args.profile:
                found.update(profile(server, work, args))
            if args.syscalls:
                found.update(
                    {
                        f"per call {name}": value
                        for name, value in syscalls(server, work, args).items()
                    }
                )
    print("\n".join(table(results, servers, works, extra)))
    print(
        f"\n{args.runs} runs, medians; 1-minute load {load_before:.2f} before, "
        f"{harness.load_average():.2f} after; {time.monotonic() - started:.0f} s",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
