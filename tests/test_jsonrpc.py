"""JSON text handling and the JSON-RPC envelope rules, as a raw client sees them."""

from __future__ import annotations

import json
import math
from typing import Any

import pydantic_core
import pytest

from securemcp import ParseError, SecureMCP
from securemcp.protocol import Limits
from securemcp.protocol.jsonrpc import dumps, is_request_id, loads

from .helpers import ConnectionPair, demo_app


def nested(depth: int) -> str:
    """A JSON text whose arrays nest exactly ``depth`` levels deep."""
    return "[" * depth + "]" * depth


# loads / dumps / is_request_id


def test_loads_parses_strict_json() -> None:
    assert loads('{"a": [1, 2.5, "x", null, true]}', 64) == {"a": [1, 2.5, "x", None, True]}
    assert loads("12345678901234567890123", 64) == 12345678901234567890123


@pytest.mark.parametrize(
    "text",
    ["", "{", "NaN", "[Infinity]", '{"a": -Infinity}', "{'a': 1}", '"\\ud800"', "[1,]", "1 2"],
)
def test_loads_refuses_what_is_not_strict_json(text: str) -> None:
    with pytest.raises(ParseError, match=r"^Parse error: ") as caught:
        loads(text, 64)
    assert caught.value.code == -32700


def test_loads_depth_limit_is_inclusive() -> None:
    assert loads(nested(5), 5) == [[[[[]]]]]
    assert loads('{"a": {"b": [1]}}', 3) == {"a": {"b": [1]}}
    with pytest.raises(ParseError, match="nested deeper than 5 levels"):
        loads(nested(6), 5)
    with pytest.raises(ParseError, match="nested deeper than 2 levels"):
        loads('{"a": {"b": [1]}}', 2)


def test_loads_brackets_inside_strings_do_not_count_as_depth() -> None:
    assert loads('["[[[[[[{{{{{{"]', 2) == ["[[[[[[{{{{{{"]


def test_loads_depth_of_wide_documents() -> None:
    wide = json.dumps([[1], [[2]], {"a": [[[3]]]}, [], {}])
    assert loads(wide, 5) == json.loads(wide)
    with pytest.raises(ParseError):
        loads(wide, 4)


@pytest.mark.parametrize("as_bytes", [False, True])
def test_loads_depth_of_large_documents(as_bytes: bool) -> None:
    # Past a few kilobytes the check walks a few containers before counting
    # brackets: every shape must still get the same verdict.
    padding = "x" * 10_000

    def load(text: str, depth: int) -> Any:
        return loads(text.encode() if as_bytes else text, depth)

    # A large string in a few containers, deep and shallow.
    deep = "[" * 6 + json.dumps(padding) + "]" * 6
    assert load(deep, 6) == json.loads(deep)
    with pytest.raises(ParseError, match="nested deeper than 5 levels"):
        load(deep, 5)
    # Many containers (more than the walk's budget), shallow: accepted.
    wide = json.dumps([[n] for n in range(2_000)])
    assert load(wide, 2) == json.loads(wide)
    # Many containers, and one deep branch at the very end.
    wide_then_deep = json.dumps([*([n] for n in range(2_000)), [[[[["end"]]]]]])
    assert load(wide_then_deep, 6) == json.loads(wide_then_deep)
    with pytest.raises(ParseError, match="nested deeper than 5 levels"):
        load(wide_then_deep, 5)
    # Many brackets inside a string do not count.
    assert load(json.dumps(["[" * 10_000]), 1) == ["[" * 10_000]


def test_loads_beyond_the_parser_ceiling_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        loads(nested(250), 200)


def test_dumps_is_compact_and_handles_models() -> None:
    assert dumps({"a": [1, "é", None]}) == '{"a":[1,"é",null]}'
    assert dumps({"text": "NaN and Infinity"}) == '{"text":"NaN and Infinity"}'


@pytest.mark.parametrize("value", [math.nan, [math.inf], {"x": -math.inf}, object()])
def test_dumps_refuses_what_json_cannot_hold(value: Any) -> None:
    with pytest.raises(pydantic_core.PydanticSerializationError):
        dumps(value)


def test_dumps_checks_nan_deep_in_documents_jiter_could_not_reparse() -> None:
    deep: Any = "NaN"
    for _ in range(250):
        deep = [deep]
    assert dumps(deep) == "[" * 250 + '"NaN"' + "]" * 250


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a", True),
        ("", True),
        (0, True),
        (-3, True),
        (2**70, True),
        (True, False),
        (None, False),
        (1.0, False),
        ([1], False),
        ({}, False),
    ],
)
def test_is_request_id(value: Any, expected: bool) -> None:
    assert is_request_id(value) is expected


# The envelope, message by message


@pytest.fixture
def pair() -> ConnectionPair:
    pair = ConnectionPair(demo_app(), limits=Limits(max_json_depth=8))
    pair.open()
    return pair


def only_error(answers: list[dict[str, Any]]) -> tuple[Any, int, str]:
    [answer] = answers
    return answer["id"], answer["error"]["code"], answer["error"]["message"]


@pytest.mark.parametrize(
    "text",
    ["not json", '{"id": 1, "method": "ping"', "NaN", '{"id": 1, "x": Infinity}', '"\\udc00"'],
)
def test_parse_error(pair: ConnectionPair, text: str) -> None:
    request_id, code, message = only_error(pair.send_raw(text))
    assert (request_id, code) == (None, -32700)
    assert message.startswith("Parse error: ")


def test_nesting_over_the_limit_is_a_parse_error(pair: ConnectionPair) -> None:
    too_deep = '{"id": 1, "method": "ping", "params": ' + nested(8) + "}"
    assert only_error(pair.send_raw(too_deep)) == (
        None,
        -32700,
        "Parse error: JSON nested deeper than 8 levels",
    )


def test_nesting_exactly_at_the_limit_is_accepted(pair: ConnectionPair) -> None:
    at_limit = '{"id": 1, "method": "ping", "params": ' + nested(7) + "}"
    assert pair.send_raw(at_limit) == [{"id": 1, "result": {"pong": True}}]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ([{"id": 1, "method": "ping"}], "batch requests are not supported"),
        ([], "batch requests are not supported"),
        ("1", "expected a JSON object"),
        ('"ping"', "expected a JSON object"),
        ("null", "expected a JSON object"),
    ],
)
def test_not_an_object(pair: ConnectionPair, message: Any, reason: str) -> None:
    assert only_error(pair.send_raw(message)) == (None, -32600, f"Invalid Request: {reason}")


@pytest.mark.parametrize("bad_id", [True, False, None, 1.5, 1.0, [1], {"a": 1}])
def test_bad_id_types(pair: ConnectionPair, bad_id: Any) -> None:
    answer = only_error(pair.send_raw({"id": bad_id, "method": "ping"}))
    assert answer == (None, -32600, "Invalid Request: 'id' must be a string or an integer")


def test_bad_id_answer_echoes_jsonrpc(pair: ConnectionPair) -> None:
    [answer] = pair.send_raw({"jsonrpc": "2.0", "id": None, "method": "ping"})
    assert answer["jsonrpc"] == "2.0"
    assert answer["error"]["code"] == -32600


@pytest.mark.parametrize("method", [None, 5, ["ping"], {"name": "ping"}])
def test_method_must_be_a_string(pair: ConnectionPair, method: Any) -> None:
    message: dict[str, Any] = {"id": "m"}
    if method is not None:
        message["method"] = method
    answer = only_error(pair.send_raw(message))
    assert answer == ("m", -32600, "Invalid Request: 'method' must be a string")


@pytest.mark.parametrize("version", ["1.0", 2.0, None, "2"])
def test_jsonrpc_other_than_2_0(pair: ConnectionPair, version: Any) -> None:
    [answer] = pair.send_raw({"jsonrpc": version, "id": 3, "method": "ping"})
    assert answer == {
        "id": 3,
        "error": {"code": -32600, "message": "Invalid Request: 'jsonrpc' must be \"2.0\""},
    }


def test_ids_of_both_types_are_echoed_exactly(pair: ConnectionPair) -> None:
    for request_id in ("abc", "", 0, -7, 2**64):
        assert pair.send_raw({"id": request_id, "method": "ping"}) == [
            {"id": request_id, "result": {"pong": True}}
        ]


def test_unknown_members_are_ignored(pair: ConnectionPair) -> None:
    assert pair.send_raw({"id": 1, "method": "ping", "params": [1], "extra": True}) == [
        {"id": 1, "result": {"pong": True}}
    ]


def test_non_ascii_text_is_answered(pair: ConnectionPair) -> None:
    assert pair.send_raw({"id": "ü€😀", "method": "ping"}) == [
        {"id": "ü€😀", "result": {"pong": True}}
    ]


def test_invalid_notification_is_answered_with_null_id(pair: ConnectionPair) -> None:
    # Without a usable method there is no telling it was meant as a notification.
    assert only_error(pair.send_raw({"method": 7})) == (
        None,
        -32600,
        "Invalid Request: 'method' must be a string",
    )


def test_valid_notifications_get_nothing(pair: ConnectionPair) -> None:
    assert pair.send_raw({"method": "ping"}) == []
    assert pair.send_raw({"jsonrpc": "2.0", "method": "notifications/initialized"}) == []


def test_app_with_no_tools_still_serves_builtins() -> None:
    pair = ConnectionPair(SecureMCP("empty"))
    pair.open()
    assert pair.send_raw({"id": 1, "method": "list_tools"}) == [{"id": 1, "result": {"tools": []}}]
