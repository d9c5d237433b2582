"""``x-mcp-header`` (2026-07-28, SEP-2243): the schema's rules, the headers sent, the check."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from securemcp import Principal, SecureMCP
from securemcp.backends._http_view import header_mismatch
from securemcp.param_headers import decode, encode, header_map, mismatch, param_headers
from securemcp.protocol import HTTPRequestReceived


def prop(kind: str, name: Any = "Region") -> dict[str, Any]:
    return {"type": kind, "x-mcp-header": name}


def test_annotated_properties_are_found_at_any_depth_of_properties() -> None:
    schema = {
        "type": "object",
        "properties": {
            "region": prop("string"),
            "days": {"type": "integer"},
            "where": {"type": "object", "properties": {"zone": prop("integer", "Zone")}},
        },
    }
    assert header_map(schema) == {("region",): "Region", ("where", "zone"): "Zone"}
    assert header_map({"type": "object", "properties": {}}) == {}
    assert header_map(None) == {}


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"properties": {"a": prop("string", "")}}, "must be an HTTP token"),
        ({"properties": {"a": prop("string", "Two Words")}}, "must be an HTTP token"),
        ({"properties": {"a": prop("string", "X:Y")}}, "must be an HTTP token"),
        ({"properties": {"a": prop("string", 7)}}, "must be an HTTP token"),
        ({"properties": {"a": prop("number")}}, "string, integer or boolean"),
        ({"properties": {"a": prop("object")}}, "string, integer or boolean"),
        ({"properties": {"a": {"x-mcp-header": "A"}}}, "string, integer or boolean"),
        ({"properties": {"a": prop("string", "R"), "b": prop("string", "r")}}, "names ignore case"),
        ({"x-mcp-header": "Root", "type": "string"}, "schema's root"),
        ({"properties": {"a": {"type": "array", "items": prop("string")}}}, "'properties' alone"),
        ({"properties": {"a": {"anyOf": [prop("string")]}}}, "'properties' alone"),
        ({"$defs": {"M": {"properties": {"a": prop("string")}}}}, "'properties' alone"),
    ],
)
def test_an_annotation_that_breaks_a_rule_is_refused(schema: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        header_map(schema)


def test_instance_data_is_not_taken_for_a_schema() -> None:
    schema = {"properties": {"a": {"type": "object", "default": {"x-mcp-header": "No"}}}}
    assert header_map(schema) == {}


def test_arguments_are_sent_as_text_and_absent_ones_not_at_all() -> None:
    headers = {("region",): "Region", ("n",): "N", ("ok",): "Ok", ("deep", "z"): "Z"}
    assert param_headers(headers, {"region": "eu-west", "n": -3, "ok": True}) == [
        ("Mcp-Param-Region", "eu-west"),
        ("Mcp-Param-N", "-3"),
        ("Mcp-Param-Ok", "true"),
    ]
    assert param_headers(headers, {"region": "Zürich", "deep": {"z": False}}) == [
        ("Mcp-Param-Region", "=?base64?WsO8cmljaA==?="),
        ("Mcp-Param-Z", "false"),
    ]
    assert param_headers(headers, {"region": None, "n": 1.5, "deep": "flat"}) == []
    assert param_headers(headers, None) == []


@pytest.mark.parametrize(
    "text", ["plain", " padded", "tab\there", "ünï", "=?base64?x?=", "", "a\r\nb"]
)
def test_encoded_values_decode_to_the_text(text: str) -> None:
    value = encode(text)
    assert all(0x20 <= ord(char) <= 0x7E for char in value)
    assert value == value.strip()
    assert decode(value) == text


def test_values_that_are_not_plain_printable_ascii_go_in_base64() -> None:
    assert encode("add") == "add"
    assert encode("ünï") == "=?base64?w7xuw68=?="
    assert encode(" padded") == "=?base64?IHBhZGRlZA==?="
    assert encode("=?base64?abc?=").startswith("=?base64?PT9i")  # not taken for a wrapped one


def test_a_broken_base64_value_decodes_to_none() -> None:
    assert decode("=?base64?not base64!?=") is None
    assert decode("=?base64?/w==?=") is None  # not UTF-8


HEADERS: dict[tuple[str, ...], str] = {("region",): "Region"}


class Where(BaseModel):
    zone: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Zone"})]


@pytest.mark.parametrize(
    ("arguments", "sent", "reason"),
    [
        ({"region": "eu"}, {"mcp-param-region": ["eu"]}, None),
        ({"region": "Zürich"}, {"mcp-param-region": ["=?base64?WsO8cmljaA==?="]}, None),
        ({}, {}, None),
        ({"region": "eu"}, {}, "Mcp-Param-Region is missing"),
        ({}, {"mcp-param-region": ["eu"]}, "sent without the argument"),
        ({"region": "eu"}, {"mcp-param-region": ["us"]}, "does not match"),
        ({"region": "eu"}, {"mcp-param-region": ["EU"]}, "does not match"),
        ({"region": "eu"}, {"mcp-param-region": ["eu", "eu"]}, "more than once"),
        ({"region": "eu"}, {"mcp-param-region": ["=?base64?***?="]}, "does not match"),
        ({"region": ["eu"]}, {"mcp-param-region": ["['eu']"]}, "sent without the argument"),
    ],
)
def test_headers_and_arguments_must_agree(
    arguments: dict[str, Any], sent: dict[str, list[str]], reason: str | None
) -> None:
    found = mismatch(HEADERS, arguments, sent)
    if reason is None:
        assert found is None
    else:
        assert found is not None
        assert reason in found


def test_a_tool_declares_its_headers_with_pydantic_and_a_broken_one_is_refused() -> None:
    app = SecureMCP("t")

    @app.tool()
    async def forecast(
        region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})],
        days: Annotated[int, Field(json_schema_extra={"x-mcp-header": "Days"})] = 1,
    ) -> str:
        return f"{region} {days}"

    assert app.tools["forecast"].param_headers == {("region",): "Region", ("days",): "Days"}
    assert app.tools["forecast"].input_schema["properties"]["region"]["x-mcp-header"] == "Region"

    with pytest.raises(ValueError, match=r"tool 'nested': .*'properties' alone"):

        @app.tool()
        async def nested(where: Where) -> str:  # the model lands in $defs
            return where.zone

    with pytest.raises(ValueError, match=r"tool 'ratio': .*string, integer or boolean"):

        @app.tool()
        async def ratio(
            x: Annotated[float, Field(json_schema_extra={"x-mcp-header": "X"})],
        ) -> float:
            return x


def test_a_tool_the_caller_cannot_see_is_not_checked() -> None:
    """Its answer must not differ from an unknown tool's by what its schema says."""
    app = SecureMCP("t")

    @app.tool(scopes={"admin"})
    async def secret(
        region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})],
    ) -> str:
        return region

    version = "2026-07-28"
    meta = {"io.modelcontextprotocol/protocolVersion": version}
    params = {"name": "secret", "arguments": {"region": "eu"}, "_meta": meta}
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    headers = (
        ("mcp-protocol-version", version),
        ("mcp-method", "tools/call"),
        ("mcp-name", "secret"),
    )
    request = HTTPRequestReceived("POST", "/mcp", headers, b"")
    assert header_mismatch(request, message, app.get_tool, None) is None
    admin = Principal("ann", frozenset({"admin"}))
    refusal = header_mismatch(request, message, app.get_tool, admin)
    assert refusal is not None
    assert "Mcp-Param-Region is missing" in refusal
