"""The command-line options the benchmark scripts share, and the wait for a quiet machine."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

# Run as a script, this file finds its sibling module on sys.path[0]; mypy knows it by package.
if TYPE_CHECKING:
    from benchmarks.harness import load_average
else:
    from harness import load_average


def wait_for_quiet(threshold: float, patience: float) -> None:
    """Poll every 30 s until the 1-minute load is under ``threshold``, for ``patience`` s."""
    deadline = time.monotonic() + patience
    while load_average() >= threshold and time.monotonic() < deadline:
        load = load_average()
        print(f"load {load:.2f} >= {threshold}: waiting", file=sys.stderr, flush=True)
        time.sleep(30)


def add_window_options(parser: argparse.ArgumentParser, smoke: str) -> None:
    """:func:`add_options`, and those of a benchmark of one window per run (M3, S3c)."""
    add_options(parser, smoke)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument(
        "--wait-load", type=float, default=0.8,
        help="wait (--patience s at most) for the 1-minute load to go below",
    )  # fmt: skip
    parser.add_argument("--patience", type=float, default=120.0)


def settle(args: argparse.Namespace) -> float:
    """A smoke run gets one short window; a real one waits for a quiet machine. The load then."""
    if args.smoke:
        args.runs, args.warmup, args.duration = 1, 0.2, 0.8
    else:
        wait_for_quiet(args.wait_load, args.patience)
    return load_average()


def add_options(parser: argparse.ArgumentParser, smoke: str) -> None:
    """The options both benchmarks take; ``smoke`` says what ``--smoke`` runs."""
    parser.add_argument("--smoke", action="store_true", help=smoke)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated server names")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                        help="write RESULTS.md (default: yes, except with --smoke)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also dump every run's figures here")
