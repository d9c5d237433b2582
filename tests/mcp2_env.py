"""The official MCP SDK 2.x, in a virtual environment of its own, and a server made with it.

The project's environment pins the SDK to 1.x (``mcp>=1.30,<2``), whose
WebSocket transport the WebSocket interop tests use; 2.x dropped that
transport and speaks Streamable HTTP, which :class:`securemcp.transport.HTTPClient`
is tested against. The two cannot share an environment, so the session fixture
:func:`mcp2_python` builds ``.venv-mcp2`` at the repository's root (git-ignored)
with the interpreter running the tests, installs :data:`REQUIREMENTS` from the
package index, and reuses it while its stamp matches. Outside CI a failed build
(no index) skips the tests that need it, saying why; in CI (``CI`` set) it fails
them. ``python tests/mcp2_env.py`` builds it ahead of pytest, as ``.ci/run`` does.

:func:`sdk2_http_server` runs ``tests/sdk2_http_server.py`` under that
environment's interpreter and yields its URL; :func:`sdk2_http_server_auth` is
the same server demanding the bearer token :data:`TOKEN`.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = [
    "REQUIREMENTS",
    "TOKEN",
    "build_env",
    "mcp2_python",
    "sdk2_http_server",
    "sdk2_http_server_auth",
    "sdk2_http_server_json",
]

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-mcp2"
REQUIREMENTS = ("mcp==2.3.0", "uvicorn>=0.31")
STAMP = VENV / "requirements.txt"
"""Written last, once the install succeeded: the environment is complete when it matches."""
SERVER_SCRIPT = Path(__file__).resolve().parent / "sdk2_http_server.py"
TOKEN = "sdk2-test-token"
INSTALL_TIMEOUT = 300.0
START_TIMEOUT = 30.0
ATTEMPTS = 2


def _python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _complete(venv: Path) -> bool:
    stamp = venv / STAMP.name
    return (
        _python(venv).exists()
        and stamp.exists()
        and stamp.read_text().split() == list(REQUIREMENTS)
    )


def build_env() -> Path:
    """``.venv-mcp2``'s interpreter, building the environment unless it is complete.

    Built beside its final place and renamed into it, so that an interrupted
    build never passes for a complete one; a file lock keeps two test runs from
    building it at once. Raises :class:`RuntimeError` with pip's output.
    """
    lock_path = ROOT / ".venv-mcp2.lock"
    with open(lock_path, "w") as lock:
        if sys.platform != "win32":
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(VENV):
            return _python(VENV)
        errors: list[str] = []
        for attempt in range(1, ATTEMPTS + 1):
            partial = ROOT / ".venv-mcp2.partial"
            shutil.rmtree(partial, ignore_errors=True)
            try:
                subprocess.run(
                    [sys.executable, "-m", "venv", str(partial)],
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
                subprocess.run(
                    [str(_python(partial)), "-m", "pip", "install", "--quiet", *REQUIREMENTS],
                    check=True,
                    capture_output=True,
                    timeout=INSTALL_TIMEOUT,
                )
            except subprocess.CalledProcessError as exc:
                output = (exc.stderr or b"").decode(errors="replace")[-2000:]
                errors.append(f"attempt {attempt}: {exc.cmd[-1]} exited {exc.returncode}: {output}")
                continue
            except subprocess.TimeoutExpired as exc:
                errors.append(f"attempt {attempt}: timed out after {exc.timeout} s")
                continue
            (partial / STAMP.name).write_text("\n".join(REQUIREMENTS) + "\n")
            shutil.rmtree(VENV, ignore_errors=True)
            partial.rename(VENV)
            return _python(VENV)
        raise RuntimeError(
            f"could not build {VENV.name} with {' '.join(REQUIREMENTS)}:\n" + "\n".join(errors)
        )


@pytest.fixture(scope="session")
def mcp2_python() -> Path:
    """The interpreter of the environment holding the official MCP SDK 2.x."""
    try:
        return build_env()
    except RuntimeError as exc:
        message = f"the MCP SDK 2.x environment is unavailable: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


class SDK2Server:
    """``tests/sdk2_http_server.py`` in a subprocess: start, read its URL, stop."""

    def __init__(self, python: Path, log: Path, *args: str) -> None:
        self.log = log
        with open(log, "ab") as err:
            self.process = subprocess.Popen(
                [str(python), str(SERVER_SCRIPT), *args],
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    self.stop()
                    raise RuntimeError(f"the SDK 2.x server printed no URL: {self._tail()}")
                # os.read: a buffered read would keep bytes that select() then misses.
                byte = os.read(self.process.stdout.fileno(), 1)
                if not byte:
                    self.stop()
                    raise RuntimeError(f"the SDK 2.x server exited: {self._tail()}")
                line += byte
        word, _, url = line.decode().strip().partition(" ")
        if word != "URL":
            self.stop()
            raise RuntimeError(f"unexpected first line from the SDK 2.x server: {line!r}")
        return url

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.contextmanager
def _serve(python: Path, factory: pytest.TempPathFactory, *args: str) -> Iterator[str]:
    server = SDK2Server(python, factory.mktemp("sdk2") / "server.log", *args)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sdk2_http_server(mcp2_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The SDK 2.x server's URL (``http://127.0.0.1:<port>/mcp``): SSE answers, sessions."""
    with _serve(mcp2_python, tmp_path_factory) as url:
        yield url


@pytest.fixture(scope="session")
def sdk2_http_server_json(
    mcp2_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The same server answering plain JSON, without sessions (``stateless_http``)."""
    with _serve(mcp2_python, tmp_path_factory, "--json", "--stateless") as url:
        yield url


@pytest.fixture(scope="session")
def sdk2_http_server_auth(
    mcp2_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The same server demanding ``Authorization: Bearer`` :data:`TOKEN`."""
    with _serve(mcp2_python, tmp_path_factory, "--token", TOKEN) as url:
        yield url


if __name__ == "__main__":
    print(f"MCP SDK 2.x environment ready: {build_env()}")
