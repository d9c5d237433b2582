"""The tutorial, step by step as docs/tutorial.md tells it, on asyncio and trio.

``examples/tutorial/notes.py`` is served as a user would (``python notes.py
--backend B``), then called from the command line, from Python
(``client.py``) and from the official MCP Python SDK (``mcp_client.py``); the
outputs are the ones the page shows; and the page's own tests (``test_notes.py``,
with ``securemcp.testing.TestClient``) pass as it runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cli_helpers import BACKENDS, Server, run_cli

# The project's own pytest options (coverage, its plugins) are not a reader's.
PYTEST_AS_A_READER = (
    sys.executable,
    "-m",
    "pytest",
    "-o",
    "addopts=",
    "-p",
    "no:cacheprovider",
    "-v",
)
TUTORIAL = Path(__file__).resolve().parent.parent / "examples" / "tutorial"
ADMIN = {"NOTES_ADMIN_TOKEN": "admin-secret"}


@pytest.fixture(params=BACKENDS)
def notes_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """``python notes.py --port 0 --backend B``, with the admin's token in the environment."""
    server = Server(
        TUTORIAL, "--backend", request.param, command=("notes.py", "--port", "0"), env=ADMIN
    )
    try:
        yield server
    finally:
        server.close()


def run_script(name: str, url: str) -> list[str]:
    """Run one of the tutorial's client scripts; its output lines."""
    done = subprocess.run(
        [sys.executable, name, url],
        cwd=TUTORIAL,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **ADMIN},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_call_it_from_the_command_line(notes_server: Server) -> None:
    tools = run_cli("tools", notes_server.url)
    assert tools.returncode == 0, tools.stderr
    assert [line.split()[0] for line in tools.stdout.splitlines()] == [
        "NAME",
        "add_note",
        "list_notes",
    ]
    added = run_cli("call", notes_server.url, "add_note", "text=buy milk")
    assert added.returncode == 0, added.stderr
    assert added.stdout == '{\n  "number": 1\n}\n'
    refused = run_cli("call", notes_server.url, "clear_notes")
    assert refused.returncode == 1
    assert refused.stderr == "error -31001: Authentication required\n"
    cleared = run_cli("call", notes_server.url, "clear_notes", "--token", "admin-secret")
    assert cleared.returncode == 0, cleared.stderr
    assert json.loads(cleared.stdout) == {"cleared": 1, "by": "admin"}
    assert notes_server.interrupt() == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_call_it_from_python_and_from_the_official_mcp_client(notes_server: Server) -> None:
    assert run_script("client.py", notes_server.url) == [
        "{'number': 1}",
        "{'notes': ['buy milk']}",
        "anonymous clear_notes: -31001 Authentication required",
        "{'cleared': 1, 'by': 'admin'}",
    ]
    assert run_script("mcp_client.py", notes_server.url) == [
        "['add_note', 'list_notes']",
        "{'number': 1}",
        "{'notes': ['from MCP']}",
    ]


def test_the_tutorials_tests_pass_as_the_page_runs_them() -> None:
    """Step 4: ``pytest test_notes.py`` in the tutorial's folder, TestClient on both loops."""
    done = subprocess.run(
        [*PYTEST_AS_A_READER, "test_notes.py"],
        cwd=TUTORIAL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    passed = {line.split()[0] for line in done.stdout.splitlines() if " PASSED" in line}
    assert passed == {
        f"test_notes.py::{name}[{backend}]"
        for name in ("test_anyone_may_add_and_list", "test_only_an_admin_may_clear")
        for backend in ("asyncio", "trio")
    }
