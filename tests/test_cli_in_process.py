"""The ``securemcp`` command line in process: its helpers and ``main`` called directly.

For the cases a subprocess cannot reach cheaply, and so that coverage sees the
module: values typed by the schema, arguments merged, the tools table, token
scopes, ``main`` against a server in a thread, usage errors, ``python -m``,
an interrupted client.
"""

from __future__ import annotations

import json
import runpy
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal

from securemcp import SecureMCP
from securemcp.cli import (
    CLIError,
    build_arguments,
    convert_value,
    main,
    schema_types,
    security_policy,
    tools_table,
)
from securemcp.transport import WebSocketTransport

from .cli_helpers import TIMEOUT

# In process: the helpers and main() itself


def test_values_are_typed_by_the_schema() -> None:
    maybe_int = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert schema_types(maybe_int, {}) == {"integer", "null"}
    assert schema_types({"$ref": "#/$defs/M"}, {"M": {"type": "object"}}) == {"object"}
    assert schema_types({"enum": ["a", 1]}, {}) == {"string", "integer"}
    assert schema_types({"type": ["string", "null"]}, {}) == {"string", "null"}
    assert schema_types({}, {}) is None
    assert schema_types({"anyOf": [{}, {"type": "null"}]}, {}) is None
    assert convert_value("null", {"integer", "null"}) is None
    assert convert_value("7", {"integer", "null"}) == 7
    assert convert_value("7.0", {"integer"}) == 7
    assert convert_value("1e3", {"number"}) == 1000.0
    assert convert_value("FALSE", {"boolean"}) is False
    assert convert_value("null", {"string"}) == "null"
    assert convert_value("12", {"string", "integer"}) == 12
    assert convert_value('{"a": 1}', {"object"}) == {"a": 1}
    assert convert_value("[1]", None) == [1]
    assert convert_value("hello", None) == "hello"
    for raw, types in [("1.5", {"integer"}), ("NaN", {"number"}), ("[1]", {"object"})]:
        with pytest.raises(ValueError, match="expected"):
            convert_value(raw, types)


def test_arguments_merge_json_and_pairs() -> None:
    tool = {"inputSchema": {"properties": {"n": {"type": "integer"}}}}
    assert build_arguments(["n=2", "other=x"], '{"n": 1, "m": true}', tool) == {
        "n": 2,
        "m": True,
        "other": "x",
    }
    for pairs, text, message in [
        (["n"], None, "not key=value"),
        (["n=1", "n=2"], None, "given twice"),
        ([], "{", "not valid JSON"),
        ([], "[1]", "JSON object"),
    ]:
        with pytest.raises(CLIError, match=message) as raised:
            build_arguments(pairs, text, tool)
        assert raised.value.status == 2


def test_the_table_without_tools_or_parameters() -> None:
    assert tools_table([]) == "(no tools)"
    table = tools_table([{"name": "x", "description": None, "inputSchema": {}}])
    assert table.splitlines()[1].split() == ["x", "-"]


def test_token_scopes_default_to_every_scope_the_app_uses() -> None:
    app = SecureMCP("scopes")
    app.add_tool(lambda: 1, name="a", scopes={"read"})
    app.add_tool(lambda: 2, name="b", scopes={"write"})
    assert security_policy([], app) is None
    policy = security_policy(["full", "reader:read"], app)
    assert policy is not None
    assert policy.authenticator is not None
    assert policy.authenticator.authenticate("full", now=0).scopes == {"read", "write"}
    assert policy.authenticator.authenticate("reader", now=0).scopes == {"read"}
    with pytest.raises(CLIError, match="invalid --token"):
        security_policy(["bad token"], app)


@pytest.fixture
def live_url() -> Iterator[str]:
    """A server in a thread of this process, for main() called in process."""
    app = SecureMCP("in-process")

    @app.tool()
    def double(n: int) -> int:
        return 2 * n

    @app.tool()
    def fail() -> None:
        raise ValueError("broken")

    transport = WebSocketTransport(
        app, shutdown_grace=1, close_timeout=1, security=security_policy(["tok"], app)
    )
    with start_blocking_portal() as portal:
        future, port = portal.start_task(transport.serve, "127.0.0.1", 0)
        try:
            yield f"ws://127.0.0.1:{port}"
        finally:
            portal.call(transport.shutdown)
            future.result(TIMEOUT)


def test_main_in_process(
    live_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["ping", live_url]) == 1
    assert capsys.readouterr().err.endswith("HTTP 401 (a token is needed: --token)\n")
    monkeypatch.setenv("SECUREMCP_TOKEN", "tok")
    assert main(["call", live_url, "double", "n=21"]) == 0
    assert json.loads(capsys.readouterr().out) == 42
    assert main(["tools", live_url, "--timeout", "0"]) == 0
    assert "n: integer (required)" in capsys.readouterr().out
    assert main(["ping", live_url]) == 0
    assert capsys.readouterr().out.startswith(f"pong from {live_url} in ")
    assert main(["call", live_url, "double", "n=x"]) == 2
    assert capsys.readouterr().err == "error: n='x': expected integer\n"
    assert main(["call", live_url, "double", "--json", '{"n": "x"}']) == 1
    assert capsys.readouterr().err.startswith("error -32602: ")
    assert main(["call", live_url, "fail", "--dialect", "mcp"]) == 1
    assert capsys.readouterr().err == "error: Tool execution error: broken\n"
    assert main(["call", live_url, "double", "n=4", "--dialect", "mcp"]) == 0
    assert json.loads(capsys.readouterr().out) == 8


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["ping", "ws://127.0.0.1:1", "--count", "0"], 2, "--count must be at least 1"),
        (["ping", "ftp://127.0.0.1:1"], 2, "unsupported URL scheme"),
        (["ping", "ws://127.0.0.1:1", "--cafile", "nope.pem"], 2, "cannot load CA file"),
        (["serve", "x:app", "--tls-key", "k.pem"], 2, "--tls-key needs --tls-cert"),
        (["serve", "x:app", "--uvloop", "--backend", "trio"], 2, "asyncio backend only"),
    ],
)
def test_usage_errors_in_process(
    argv: list[str], status: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == status
    assert message in capsys.readouterr().err


def test_an_unreachable_server_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        assert main(["tools", f"ws://127.0.0.1:{port}"]) == 1
    assert capsys.readouterr().err == (
        f"error: cannot connect to ws://127.0.0.1:{port}: Connection refused\n"
    )


def test_python_dash_m_runs_main(monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest 9.2 marks the whole package of an editable install's plugin for assertion
    # rewriting, and its import hook cannot give runpy a module's code (no get_code):
    # python -m never meets that hook, so the module is found here without it.
    finders = [f for f in sys.meta_path if type(f).__name__ != "AssertionRewritingHook"]
    monkeypatch.setattr(sys, "meta_path", finders)
    monkeypatch.delitem(sys.modules, "securemcp.__main__", raising=False)
    monkeypatch.setattr(sys, "argv", ["securemcp", "--version"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("securemcp", run_name="__main__")
    assert exited.value.code == 0


def test_interrupted_client_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    import securemcp._client_commands

    def interrupted(*_: Any, **__: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(securemcp._client_commands, "_run_client", interrupted)
    assert main(["ping", "ws://127.0.0.1:1"]) == 130
