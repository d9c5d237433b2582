"""The ``securemcp`` command line, run as a user runs it: a subprocess against a live server.

The tests check what a user sees (exit status, stdout, one-line errors): the
client commands against ``securemcp serve`` on both backends, startup errors
before any server, tokens and TLS; and serve's errors with ``main`` called in
process, from the same app folder. The helpers and the other commands called
in process are in ``test_cli_in_process.py``.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from securemcp.cli import main

from .cli_helpers import BACKENDS, Server, assert_one_line_error, run_cli

APP_MODULE = '''
from typing import Annotated

from pydantic import Field

from securemcp import SecureMCP

app = SecureMCP("cli-test")
not_an_app = 42


@app.tool()
def add(a: int, b: float = 1.5) -> float:
    """Add two numbers.

    The second line is not shown in the table.
    """
    return a + b


@app.tool()
async def tag(ids: list[int], note: str | None = None, flag: bool = False) -> dict:
    """Echo the arguments."""
    return {"ids": ids, "note": note, "flag": flag}


@app.tool()
def limited(limit: Annotated[int, Field(ge=1, le=10)] = 5) -> int:
    return limit


@app.tool(scopes={"admin"})
def secret() -> str:
    """Only for admins."""
    return "42"
'''


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A directory holding the test app as module ``cli_app``."""
    (tmp_path / "cli_app.py").write_text(APP_MODULE)
    return tmp_path


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest, app_dir: Path) -> Iterator[Server]:
    """A live ``securemcp serve`` on each backend."""
    running = Server(app_dir, "--backend", str(request.param))
    try:
        yield running
    finally:
        running.close()


# Against a live server, on both backends


def test_tools_prints_a_table_of_parameters(server: Server) -> None:
    result = run_cli("tools", server.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "PARAMETERS", "DESCRIPTION"]
    add = next(line for line in lines if line.startswith("add "))
    assert "a: integer (required)" in add
    assert add.endswith("Add two numbers.")
    assert any(line.split() == ["b:", "number", "=", "1.5"] for line in lines)
    assert any("ids: array[integer] (required)" in line for line in lines)
    assert any("note: string | null = null" in line for line in lines)
    assert any("limit: integer = 5" in line for line in lines)
    assert "second line" not in result.stdout
    assert "secret" not in result.stdout  # scoped: hidden from an anonymous caller


def test_call_types_the_values_by_the_schema(server: Server) -> None:
    result = run_cli("call", server.url, "add", "a=2", "b=0.25")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == 2.25

    result = run_cli(
        "call", server.url, "tag", "ids=[1, 2]", "flag=true", "--json", '{"note": "x", "flag": 0}'
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"ids": [1, 2], "note": "x", "flag": True}
    assert result.stdout.startswith("{\n  ")  # indented for reading


def test_call_unknown_tool_prints_the_error_code(server: Server) -> None:
    assert_one_line_error(
        run_cli("call", server.url, "nope", "x=1"), 1, "error -32601: Tool not found: nope"
    )


def test_call_invalid_params_prints_code_message_and_data(server: Server) -> None:
    result = run_cli("call", server.url, "limited", "limit=50")
    assert result.returncode == 1
    first, data = result.stderr.splitlines()
    assert first.startswith("error -32602: Invalid params for tool 'limited'")
    assert json.loads(data.removeprefix("data: "))[0]["loc"] == ["limit"]


def test_a_value_that_does_not_fit_is_refused_before_calling(server: Server) -> None:
    assert_one_line_error(
        run_cli("call", server.url, "add", "a=two"), 2, "error: a='two': expected integer"
    )


def test_ping_prints_the_round_trip(server: Server) -> None:
    result = run_cli("ping", server.url, "--count", "2")
    assert result.returncode == 0, result.stderr
    pongs = result.stdout.splitlines()
    for line in pongs[:2]:
        assert re.fullmatch(rf"pong from {server.url} in \d+\.\d\d ms", line), line
    assert pongs[2].startswith("2 pings: min ")


def test_the_client_commands_take_a_streamable_http_url(server: Server) -> None:
    url = server.url.replace("ws://", "http://") + "/mcp"
    tools = run_cli("tools", url)
    assert tools.returncode == 0, tools.stderr
    assert any(line.startswith("add ") for line in tools.stdout.splitlines())
    added = run_cli("call", url, "add", "a=2", "b=0.25")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout) == 2.25
    # MCP reports a tool's bad arguments as a failed result: one line, status 1.
    refused = run_cli("call", url, "limited", "limit=50")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: ")
    pinged = run_cli("ping", url)
    assert pinged.returncode == 0, pinged.stderr
    assert re.fullmatch(rf"pong from {url} in \d+\.\d\d ms", pinged.stdout.strip())


def test_the_installed_script_works(server: Server) -> None:
    result = run_cli("call", server.url, "add", "a=1", script=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == 2.5


def test_ctrl_c_stops_the_server_with_status_0(server: Server) -> None:
    assert server.interrupt() == 0
    server.close()
    log = "".join(server.stderr)
    assert "[WS] Server started successfully" in log
    assert "Traceback" not in log


def test_mcp_dialect(server: Server) -> None:
    listed = run_cli("tools", server.url, "--dialect", "mcp")
    assert listed.returncode == 0, listed.stderr
    assert any("a: integer (required)" in line for line in listed.stdout.splitlines())
    called = run_cli("call", server.url, "tag", "ids=[3]", "--dialect", "mcp")
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"ids": [3], "note": None, "flag": False}
    # MCP: bad arguments are a tool result with isError; an unknown tool is -32602.
    invalid = run_cli("call", server.url, "limited", "limit=50", "--dialect", "mcp")
    assert_one_line_error(invalid, 1, "error: Invalid params for tool 'limited'")
    unknown = run_cli("call", server.url, "nope", "--dialect", "mcp")
    assert_one_line_error(unknown, 1, "error -32602: ")
    pinged = run_cli("ping", server.url, "--dialect", "mcp")
    assert pinged.stdout.startswith(f"pong from {server.url} in ")


@pytest.mark.parametrize("backend", BACKENDS)
def test_port_in_use_is_one_line(app_dir: Path, backend: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(
            "serve", "cli_app:app", "--port", str(port), "--backend", backend, cwd=app_dir
        )
    assert_one_line_error(result, 1, f"error: cannot listen on 127.0.0.1:{port}: ")


# Startup errors, before any server


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module:app", "error: cannot import module 'no_such_module'"),
        ("cli_app:missing", "error: module 'cli_app' has no attribute 'missing'"),
        ("cli_app:not_an_app", "error: cli_app:not_an_app is not a SecureMCP app"),
        ("cli_app:", "error: invalid app 'cli_app:'"),
        (":app", "error: invalid app ':app'"),
    ],
)
def test_bad_import_path_is_one_line(app_dir: Path, spec: str, message: str) -> None:
    result = run_cli("serve", spec, cwd=app_dir)
    assert result.returncode != 0
    assert_one_line_error(result, result.returncode, message)


def test_a_missing_certificate_is_one_line(app_dir: Path) -> None:
    result = run_cli("serve", "cli_app:app", "--tls-cert", "nope.pem", cwd=app_dir)
    assert_one_line_error(result, 2, "error: cannot load TLS certificate nope.pem: ")


def test_an_unreachable_server_is_one_line() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        result = run_cli("tools", f"127.0.0.1:{port}")
    assert_one_line_error(result, 1, f"error: cannot connect to ws://127.0.0.1:{port}: ")


def test_help_texts_show_examples() -> None:
    for command in ("serve", "tools", "call", "ping"):
        result = run_cli(command, "--help")
        assert result.returncode == 0
        assert f"securemcp {command} " in result.stdout.split("examples:")[1]


# Tokens and TLS


def test_token_on_both_sides(app_dir: Path) -> None:
    # A bare token grants every scope the app's tools use; "TOKEN:" grants none.
    running = Server(app_dir, "--token", "all-access", "--token", "no-scopes:")
    try:
        refused = run_cli("tools", running.url)
        assert_one_line_error(refused, 1, "HTTP 401 (a token is needed: --token)")
        plain = run_cli("call", running.url, "secret", "--token", "no-scopes")
        assert plain.returncode == 1
        assert plain.stderr.splitlines() == [
            "error -31003: Insufficient scope",
            'data: {"required_scopes": ["admin"]}',
        ]
        admin = run_cli("call", running.url, "secret", env={"SECUREMCP_TOKEN": "all-access"})
        assert admin.returncode == 0, admin.stderr
        assert json.loads(admin.stdout) == "42"
    finally:
        running.close()


def test_a_trusted_proxy_names_its_client_in_the_security_log(app_dir: Path) -> None:
    running = Server(app_dir, "--token", "s3cret", "--trusted-proxy", "127.0.0.0/8")
    try:
        port = int(running.url.rsplit(":", 1)[1])
        request = (
            b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Forwarded-For: 203.0.113.7\r\nContent-Length: 2\r\n\r\n{}"
        )
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(request)
            assert client.recv(65536).startswith(b"HTTP/1.1 401 ")
        line = running.lines.get(timeout=10)
        while "refused" not in line:
            line = running.lines.get(timeout=10)
        assert "HTTP request from 203.0.113.7 via ('127.0.0.1'" in line, line
    finally:
        running.close()


def test_tls_with_a_private_ca(app_dir: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(app_dir / "ca.pem"))
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(app_dir / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(app_dir / "cert.pem"))
    running = Server(app_dir, "--tls-cert", "cert.pem", "--tls-key", "key.pem")
    try:
        assert running.url.startswith("wss://")
        untrusted = run_cli("ping", running.url)
        assert_one_line_error(untrusted, 1, "error: cannot connect to wss://")
        trusted = run_cli("ping", running.url, "--cafile", str(app_dir / "ca.pem"))
        assert trusted.returncode == 0, trusted.stderr
    finally:
        running.close()


# serve's startup errors again, with main() in process


@pytest.fixture
def in_app_dir(app_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run in ``app_dir`` with ``sys.path`` and ``sys.modules`` restored afterwards."""
    monkeypatch.chdir(app_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        yield app_dir
    finally:
        sys.modules.pop("cli_app", None)


def test_serve_errors_in_process(in_app_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for spec, message in [
        ("no_such_module", "cannot import module 'no_such_module'"),
        ("cli_app:missing", "has no attribute 'missing'"),
        ("cli_app:not_an_app", "is not a SecureMCP app (it is a 'int')"),
        ("cli_app:a b", "invalid app"),
    ]:
        assert main(["serve", spec]) != 0
        assert message in capsys.readouterr().err
    (in_app_dir / "broken_dep.py").write_text("import no_such_dependency\n")
    assert main(["serve", "broken_dep"]) == 1
    assert "importing 'broken_dep' failed" in capsys.readouterr().err
    sys.modules.pop("broken_dep", None)
    assert main(["serve", "cli_app:app", "--trusted-proxy", "proxy.example"]) == 2
    assert "invalid --trusted-proxy: trusted proxy 'proxy.example'" in capsys.readouterr().err
    (in_app_dir / "bad.pem").write_text("not a certificate\n")
    assert main(["serve", "cli_app:app", "--tls-cert", "bad.pem"]) == 2
    assert "cannot load TLS certificate bad.pem" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        assert main(["serve", "cli_app:app", "--port", port, "--log-level", "error"]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
