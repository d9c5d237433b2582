"""trio and uvloop are extras: the asyncio path runs without them, and asking for them says which.

Each test runs a fresh interpreter in which ``import trio`` and ``import uvloop``
fail, as after ``pip install securemcp`` with no extra (``sys.modules[name] =
None`` is Python's own way to make an import fail). tests/test_packaging.py
does the same in a clean virtual environment where they are really absent.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from securemcp.cli import main

BLOCK = """\
import sys
sys.modules["trio"] = None
sys.modules["uvloop"] = None
"""

TIMEOUT = 30


def run_blocked(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter where trio and uvloop cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_asyncio_serves_and_calls_without_trio_or_uvloop() -> None:
    done = run_blocked(
        """
        import anyio
        from securemcp import SecureMCP
        from securemcp.testing import TestClient
        from securemcp.transport import WebSocketClient, WebSocketTransport

        app = SecureMCP("no-extras")

        @app.tool()
        async def echo(message: str) -> dict:
            return {"echoed": message}

        async def main() -> None:
            transport = WebSocketTransport(app)
            async with anyio.create_task_group() as tg:
                port = await tg.start(transport.serve, "127.0.0.1", 0)
                async with WebSocketClient(f"ws://127.0.0.1:{port}") as client:
                    print(await client.invoke_tool("echo", {"message": "hi"}))
                async with WebSocketClient(f"ws://127.0.0.1:{port}", mcp=True) as client:
                    print((await client.call_tool("echo", {"message": "mcp"})).value())
                tg.cancel_scope.cancel()
            # The test kit too (its trio parts load only on trio).
            async with TestClient(app) as client:
                print(await client.invoke_tool("echo", {"message": "in memory"}))

        anyio.run(main)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "{'echoed': 'hi'}",
        "{'echoed': 'mcp'}",
        "{'echoed': 'in memory'}",
    ]


def test_run_on_a_backend_without_its_extra_names_the_extra() -> None:
    done = run_blocked(
        """
        from securemcp import SecureMCP
        from securemcp.transport import WebSocketTransport

        for backend in ("trio", "asyncio+uvloop"):
            try:
                WebSocketTransport(SecureMCP("x")).run(port=0, backend=backend)
            except RuntimeError as exc:
                print(exc)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "backend 'trio' needs trio, which is not installed: pip install 'securemcp[trio]', "
        "or use backend='asyncio'",
        "backend 'asyncio+uvloop' needs uvloop, which is not installed: "
        "pip install 'securemcp[uvloop]', or use backend='asyncio'",
    ]


def test_serve_on_a_backend_without_its_extra_is_one_error_line() -> None:
    cli = """
        from securemcp.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    for options, extra in [(["--backend", "trio"], "trio"), (["--uvloop"], "uvloop")]:
        # The app is never imported: the missing extra is found first.
        done = run_blocked(cli, "serve", "no_such_module:app", "--port", "0", *options)
        assert done.returncode == 1, done.stderr
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("error: backend ")
        assert f"pip install 'securemcp[{extra}]'" in done.stderr


def test_serve_in_process_names_the_missing_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    find_spec = importlib.util.find_spec

    def without_trio(name: str, package: str | None = None) -> Any:
        return None if name == "trio" else find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_trio)
    assert main(["serve", "no_such_module:app", "--backend", "trio"]) == 1
    assert capsys.readouterr().err == (
        "error: backend 'trio' needs trio, which is not installed: "
        "pip install 'securemcp[trio]', or use backend='asyncio'\n"
    )
