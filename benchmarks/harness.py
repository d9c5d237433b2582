"""What the benchmark orchestrators share: servers (and Redis) in pinned processes, the
machine, RESULTS.md.

Imported by the orchestrators in ``benchmarks/`` (``run.py``, ``http_bench.py``,
``broadcast_bench.py``, ``redis_bench.py`` ...) and their helpers (``report.py``,
``broadcast.py``, ``redis_history.py``), as ``harness``, from their own
directory; standard library only, so that any of the benchmarks' Pythons (the
project's, or the peers' environment) can import it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

HERE = Path(__file__).resolve().parent
SERVERS_DIR = HERE / "servers"
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
RESULTS = HERE / "RESULTS.md"
PORT_LINE = re.compile(r"ws://127\.0\.0\.1:(\d+)")
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"

Results = dict[tuple[str, str], list[dict[str, Any]]]
"""(server name, workload key) -> the figures of each run."""


@dataclass(frozen=True)
class Server:
    """A server to measure: its name in the report, what it is, how to start it."""

    name: str
    description: str
    argv: tuple[str, ...]
    """Its script, then the script's arguments."""
    peers_env: bool
    """Whether it runs from the peers' environment (else from the project's)."""


class Runnable(Protocol):
    """What :func:`available` needs to know of a server."""

    @property
    def name(self) -> str:
        """The name the report gives it."""
        ...

    @property
    def peers_env(self) -> bool:
        """Whether it runs from the peers' environment."""
        ...

    @property
    def needs(self) -> str | None:
        """A module the project's environment must have, if any."""
        ...


ServerT = TypeVar("ServerT", bound=Runnable)


def available(servers: Iterable[ServerT]) -> list[ServerT]:
    """The servers this machine can run: the peers only where their environment exists."""
    return [
        server
        for server in servers
        if (not server.peers_env or PEERS_PYTHON.exists())
        and (server.needs is None or importlib.util.find_spec(server.needs) is not None)
    ]


def chosen(servers: Sequence[ServerT], only: str) -> list[ServerT]:
    """The available servers (those named in comma-separated ``only``, if any); names the rest."""
    here = available(servers)
    missing = [server.name for server in servers if server not in here]
    if missing:
        print(f"not available here (skipped): {', '.join(missing)}", file=sys.stderr)
    if only:
        wanted = set(only.split(","))
        here = [server for server in here if server.name in wanted]
    return here


def pin(cpu: int) -> None:
    """Pin the calling process to ``cpu`` where the machine has two CPUs or more."""
    if len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {cpu})


def client_python() -> str:
    """picows lives in the peers' environment; without it the clients fall back."""
    return str(PEERS_PYTHON) if PEERS_PYTHON.exists() else sys.executable


@contextlib.contextmanager
def running(
    name: str, argv: Sequence[str], peers_env: bool, python: str | None = None
) -> Iterator[tuple[int, int]]:
    """Start server script ``argv`` on port 0, pinned to CPU 0; yield (port, pid); stop it.

    It runs from the peers' environment or the project's, unless ``python`` names the interpreter.
    """
    if python is None:
        python = str(PEERS_PYTHON) if peers_env else sys.executable
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            [python, *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=lambda: pin(0),
        )
        try:
            deadline = time.monotonic() + 30
            port = None
            while port is None:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"{name} did not start:\n{log.read()}")
                time.sleep(0.05)
                log.seek(0)
                match = PORT_LINE.search(log.read())
                port = int(match.group(1)) if match else None
            yield port, process.pid
        finally:
            stop(process)


def stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if ``process`` is still there after 10 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# Redis, for S7 (``redis_bench.py``)


@dataclass(frozen=True)
class Redis:
    """The Redis server in use: its URL and process id."""

    url: str
    pid: int

    def command(self, *args: str) -> str:
        """One command through ``redis-cli``; its output, stripped."""
        done = subprocess.run(
            [REDIS_CLI, "-u", self.url, *args], capture_output=True, text=True, timeout=10
        )
        if done.returncode != 0 or done.stdout.startswith("ERR"):
            raise RuntimeError(f"redis-cli {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout.strip()

    def info(self, field: str) -> str:
        """One field of ``INFO``."""
        for line in self.command("INFO").splitlines():
            name, _, value = line.partition(":")
            if name == field:
                return value.strip()
        raise RuntimeError(f"INFO has no {field}")

    @contextlib.contextmanager
    def appendfsync(self, policy: str) -> Iterator[None]:
        """Run with ``appendfsync`` set to ``policy``, then put the old value back."""
        old = self.command("CONFIG", "GET", "appendfsync").splitlines()[-1]
        self.command("CONFIG", "SET", "appendfsync", policy)
        try:
            yield
        finally:
            self.command("CONFIG", "SET", "appendfsync", old)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_running(url: str | None, directory: Path) -> Iterator[Redis]:
    """The Redis at ``url``; without one, a ``redis-server`` of our own on CPU 0, AOF on."""
    if url is not None:
        found = Redis(url, 0)
        yield Redis(url, int(found.info("process_id")))
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--logfile", str(directory / "redis.log")]  # fmt: skip
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=lambda: pin(0))
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start (see {directory}/redis.log)")
            time.sleep(0.02)
        yield Redis(f"redis://127.0.0.1:{port}/0", process.pid)
    finally:
        stop(process)


def run_client(argv: Sequence[str], failure: str, timeout: float) -> dict[str, Any]:
    """Run a client process pinned to CPU 1; the JSON object on its last line of output."""
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, preexec_fn=lambda: pin(1)
    )
    if done.returncode != 0:
        raise RuntimeError(f"{failure}:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def own_versions(names: Iterable[str]) -> dict[str, str]:
    """The installed versions, in this environment, of those of ``names`` that are installed."""
    found = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def peer_versions(names: Sequence[str], python: Path = PEERS_PYTHON) -> dict[str, str]:
    """The versions of ``names`` in the peers' environment (or ``python``'s); empty without it."""
    if not python.exists():
        return {}
    code = (
        "import importlib.metadata as m, json;"
        f"print(json.dumps({{n: m.version(n) for n in {list(names)!r}}}))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return {}
    found: dict[str, str] = json.loads(out.stdout)
    return found


def cpu_model() -> str:
    """The CPU's model name."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def machine(load_before: float, versions: dict[str, str]) -> dict[str, Any]:
    """The run's date and machine, for the report's conditions."""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "load_before": load_before,
        "load_after": load_average(),
        "versions": versions,
    }


def conditions(meta: dict[str, Any], before: str, note: str) -> list[str]:
    """The report's date, machine, versions, command line, and the heading of its servers."""
    return [
        f"- Date: {meta['date']}",
        f"- Machine: {meta['cores']} cores, {meta['cpu']}, Linux {platform.release()}; "
        f"1-minute load average {meta['load_before']:.2f} {before}, "
        f"{meta['load_after']:.2f} after {note}",
        f"- Python {platform.python_version()}; "
        + ", ".join(f"{name} {version}" for name, version in meta["versions"].items()),
        f"- Regenerate: `{meta['command']}`",
        "",
        "Servers:",
        "",
    ]


class Collector:
    """The figures of every run and the name of the client that measured them."""

    def __init__(self) -> None:
        self.results: Results = {}
        self.client = ""

    def add(
        self, round_number: int, server: str, workload: str, result: dict[str, Any], summary: str
    ) -> None:
        """Keep one run's figures; ``summary`` goes to the progress line on stderr."""
        self.client = result.pop("client", self.client)
        self.results.setdefault((server, workload), []).append(result)
        print(
            f"[round {round_number}] {server:18} {workload}: {summary}",
            file=sys.stderr,
            flush=True,
        )

    def meta(
        self, load_before: float, versions: dict[str, str], runs: int, command: str, **more: Any
    ) -> dict[str, Any]:
        """The report's conditions: the machine, the client, ``more``, runs and command."""
        return {
            **machine(load_before, versions),
            "client": self.client,
            **more,
            "runs": runs,
            "command": command,
        }


def median(results: Results, key: tuple[str, str], metric: str) -> float | None:
    """The median of ``metric`` over the runs of ``key``; None when it did not run."""
    runs = results.get(key)
    return statistics.median(r[metric] for r in runs) if runs else None


def report(
    args: argparse.Namespace, title: str, section: str, meta: dict[str, Any], results: Results
) -> None:
    """Print the section; dump the figures (``--json``); write RESULTS.md unless smoke."""
    print(section)
    if args.json:
        rows = [
            {"server": name, "workload": key, "runs": runs} for (name, key), runs in results.items()
        ]
        args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    if (not args.smoke) if args.write is None else args.write:
        write_section(title, section)
        redraw_charts()


def redraw_charts() -> None:
    """Redraw docs/charts/ from the new RESULTS.md (plot.py needs matplotlib: the docs extra)."""
    done = subprocess.run([sys.executable, str(HERE / "plot.py")], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"charts not redrawn: run python benchmarks/plot.py\n{done.stderr}", file=sys.stderr)


def write_section(title: str, section: str) -> None:
    """Replace (or append) the section headed ``title`` of RESULTS.md, keeping the others."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = text.find(title)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        following = text.find("\n## ", start + len(title))
        rest = "" if following == -1 else text[following + 1 :]
        text = text[:start] + section + ("\n" + rest if rest else "")
    RESULTS.write_text(text)
