"""The application object (the tool registry) and the exception tree."""

from __future__ import annotations

from typing import Any

import pytest

import securemcp
from securemcp import (
    Cancelled,
    ConnectionClosed,
    ErrorCode,
    Forbidden,
    HandshakeRejected,
    InternalError,
    InvalidParams,
    InvalidRequest,
    LocalProtocolError,
    MethodNotFound,
    Overloaded,
    ParseError,
    RateLimited,
    RequestTimeout,
    RPCError,
    SecureMCP,
    SecureMCPError,
    Tool,
    ToolError,
    ToolNotFound,
    Unauthenticated,
)
from securemcp.errors import error_for_code


def test_app_name_and_description() -> None:
    app = SecureMCP("chat", "A chat server.")
    assert (app.name, app.description, app.version) == ("chat", "A chat server.", "0.1.0")
    assert SecureMCP("x", version="2.0").version == "2.0"
    assert SecureMCP("x").description is None
    assert repr(app) == "SecureMCP('chat', tools=[])"


@pytest.mark.parametrize("name", ["", None, 5])
def test_app_needs_a_name(name: Any) -> None:
    with pytest.raises(TypeError, match="non-empty name"):
        SecureMCP(name)


def test_decorator_with_parentheses_returns_the_function() -> None:
    app = SecureMCP("t")

    def greet(who: str) -> str:
        """Say hello."""
        return f"hello {who}"

    assert app.tool()(greet) is greet
    assert greet("bob") == "hello bob"
    assert app.tools["greet"].fn is greet
    assert app.tools["greet"].description == "Say hello."


def test_bare_decorator_on_async_function() -> None:
    app = SecureMCP("t")

    @app.tool
    async def fetch(url: str) -> str:
        return url

    assert app.get_tool("fetch") is not None
    assert app.tools["fetch"].is_async
    assert app.tools["fetch"].fn is fetch


def test_decorator_with_name_and_description() -> None:
    app = SecureMCP("t")

    @app.tool(name="get_messages", description="Recent chat messages.")
    def recent(limit: int = 10) -> dict[str, Any]:
        """Not this docstring."""
        return {"limit": limit}

    assert list(app.tools) == ["get_messages"]
    assert app.tools["get_messages"].description == "Recent chat messages."
    assert recent(3) == {"limit": 3}
    assert app.get_tool("recent") is None


def test_duplicate_names_are_refused() -> None:
    app = SecureMCP("chat")

    @app.tool()
    def echo(message: str) -> str:
        return message

    with pytest.raises(ValueError, match="a tool named 'echo' is already registered on app 'chat'"):

        @app.tool(name="echo")
        async def other(message: str) -> str:
            return message

    assert app.tools["echo"].fn is echo


def test_add_tool_returns_the_tool() -> None:
    app = SecureMCP("t")
    tool = app.add_tool(lambda a: a, name="identity", description="Return a.")
    assert isinstance(tool, Tool)
    assert app.tools["identity"] is tool
    assert tool.description == "Return a."


def test_tools_mapping_is_read_only() -> None:
    app = SecureMCP("t")
    app.add_tool(lambda: None, name="noop")
    with pytest.raises(TypeError):
        app.tools["x"] = app.tools["noop"]  # type: ignore[index]


def test_get_tools_and_list_tools_keep_registration_order() -> None:
    app = SecureMCP("t")

    @app.tool()
    def b() -> None: ...

    @app.tool()
    async def a() -> dict[str, int]:
        """Async one."""
        return {}

    assert app.get_tools() == {"b": b, "a": a}
    assert app.list_tools() == [
        {
            "name": "b",
            "description": None,
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
            "is_async": False,
        },
        {
            "name": "a",
            "description": "Async one.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
            "is_async": True,
            "outputSchema": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    ]
    assert repr(app) == "SecureMCP('t', tools=['b', 'a'])"


def test_registering_a_non_callable_is_a_type_error() -> None:
    app = SecureMCP("t")
    with pytest.raises(TypeError, match="must be callable, not str"):
        app.tool("name")  # type: ignore[call-overload]


# Errors


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (ParseError, -32700),
        (InvalidRequest, -32600),
        (MethodNotFound, -32601),
        (ToolNotFound, -32601),
        (InvalidParams, -32602),
        (InternalError, -32603),
        (ToolError, -32000),
        (Unauthenticated, -31001),
        (Forbidden, -31003),
        (Overloaded, -31013),
        (RateLimited, -31029),
        (Cancelled, -32800),
        (RPCError, -32603),
    ],
)
def test_error_default_codes(cls: type[RPCError], code: int) -> None:
    exc = cls("m", data={"k": 1})
    assert (exc.code, exc.message, exc.data, str(exc)) == (code, "m", {"k": 1}, "m")
    assert isinstance(exc, SecureMCPError)
    assert repr(exc) == f"{cls.__name__}(code={code}, message='m')"


def test_error_code_can_be_chosen() -> None:
    assert ToolError("x", code=-31500).code == -31500
    assert int(ErrorCode.TOOL_ERROR) == -32000


def test_error_for_code_maps_back_to_classes() -> None:
    assert type(error_for_code(-32602, "bad", [1])) is InvalidParams
    assert error_for_code(-32602, "bad", [1]).data == [1]
    assert type(error_for_code(-32601, "no")) is MethodNotFound
    assert type(error_for_code(-32601, "no", tool_call=True)) is ToolNotFound
    assert type(error_for_code(-32000, "t", tool_call=True)) is ToolError
    unknown = error_for_code(-1, "odd")
    assert type(unknown) is RPCError
    assert unknown.code == -1


def test_transport_errors() -> None:
    closed = ConnectionClosed(1001, "going away")
    assert (closed.close_code, closed.reason, closed.code) == (1001, "going away", None)
    assert str(closed) == "connection closed with code 1001 (going away)"
    assert str(ConnectionClosed()) == "connection closed with code None"
    rejected = HandshakeRejected(401, b"no")
    assert (rejected.status_code, rejected.body) == (401, b"no")
    assert str(rejected) == "WebSocket handshake rejected with HTTP 401"
    assert isinstance(RequestTimeout(), TimeoutError)
    assert issubclass(LocalProtocolError, SecureMCPError)


def test_public_names() -> None:
    assert set(securemcp.__all__) <= set(dir(securemcp))
    assert securemcp.__version__ == "0.1.0"
