"""Tool: validating arguments, input and output schemas and metadata, built once at registration.

Signatures and async detection are in ``test_tools.py``.
"""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from securemcp import InvalidParams, SecureMCP, Tool

from .helpers import Point
from .tool_helpers import validation_errors


class Stats(TypedDict):
    total: int


class Opaque:
    """A type pydantic has no schema for."""


# Validation


def test_none_counts_as_no_arguments() -> None:
    tool = Tool.from_function(lambda a=1: a, name="t")
    assert tool.validate(None) == {"a": 1}
    assert tool.validate({}) == {"a": 1}


@pytest.mark.parametrize("arguments", [[1], "a", 3, True])
def test_arguments_must_be_an_object(arguments: Any) -> None:
    tool = Tool.from_function(lambda a=1: a, name="t")
    with pytest.raises(InvalidParams, match="arguments must be an object") as caught:
        tool.validate(arguments)
    assert caught.value.data == [
        {"loc": [], "msg": "Input should be an object", "type": "dict_type"}
    ]


def test_error_message_names_the_first_problem() -> None:
    def f(a: int, b: int) -> None:
        pass

    tool = Tool.from_function(f)
    with pytest.raises(InvalidParams) as caught:
        tool.validate({"b": "x"})
    assert str(caught.value) == "Invalid params for tool 'f': a: Field required"
    assert len(caught.value.data) == 2


def test_model_level_error_is_located_at_arguments() -> None:
    tool = Tool.from_function(lambda: None, name="t")
    with pytest.raises(InvalidParams) as caught:
        tool.validate({"x": 1})
    assert str(caught.value) == "Invalid params for tool 't': x: Extra inputs are not permitted"


def test_error_data_leaves_out_input_and_urls() -> None:
    def f(secret: int) -> None:
        pass

    [error] = validation_errors(Tool.from_function(f), {"secret": "hunter2"})
    assert set(error) == {"loc", "msg", "type"}
    assert "hunter2" not in str(error)


# Schemas


def test_input_schema_is_always_an_object() -> None:
    tool = Tool.from_function(lambda: None, name="t")
    assert tool.input_schema == {"type": "object", "properties": {}, "additionalProperties": False}
    assert "title" not in Tool.from_function(lambda a: a, name="u").input_schema


@pytest.mark.parametrize(
    ("annotation", "schema_type"),
    [
        (dict, "object"),
        (dict[str, int], "object"),
        (Point, "object"),
        (Stats, "object"),
        (int, None),
        (list[int], None),
        (str | None, None),
        (None, None),
        (Any, None),
        (object, None),
    ],
)
def test_output_schema_only_for_objects(annotation: Any, schema_type: str | None) -> None:
    def f() -> None:
        pass

    f.__annotations__["return"] = annotation
    tool = Tool.from_function(f)
    if schema_type is None:
        assert tool.output_schema is None
        assert "outputSchema" not in tool.metadata()
    else:
        assert tool.output_schema is not None
        assert tool.output_schema["type"] == schema_type
        assert tool.metadata()["outputSchema"] == tool.output_schema


def test_output_schema_of_unsupported_annotation_is_none() -> None:
    def f() -> Opaque:
        return Opaque()

    assert Tool.from_function(f).output_schema is None


def test_no_return_annotation_has_no_output_schema() -> None:
    def f():  # type: ignore[no-untyped-def]
        return {}

    assert Tool.from_function(f).output_schema is None


def test_unsupported_parameter_type_is_refused_at_registration() -> None:
    def f(x: Opaque) -> None:
        pass

    with pytest.raises(pydantic.PydanticSchemaGenerationError):
        Tool.from_function(f)


def test_unresolvable_parameter_type_is_refused_at_registration() -> None:
    def f(x: LocalOnly) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    # Under postponed annotations the name cannot be resolved from the module.
    with pytest.raises(pydantic.PydanticUserError, match="not fully defined"):
        Tool.from_function(f)


def test_metadata() -> None:
    async def echo(message: str) -> dict[str, str]:
        """Echo a message back.

        More detail.
        """
        return {"echoed": message}

    assert Tool.from_function(echo).metadata() == {
        "name": "echo",
        "description": "Echo a message back.\n\nMore detail.",
        "inputSchema": {
            "type": "object",
            "properties": {"message": {"title": "Message", "type": "string"}},
            "required": ["message"],
            "additionalProperties": False,
        },
        "is_async": True,
        "outputSchema": {"type": "object", "additionalProperties": {"type": "string"}},
    }


def test_metadata_carries_the_annotations_given() -> None:
    """The seed dialect's list_tools shows them too: a reconnecting client reads idempotentHint."""

    def store(key: str) -> None: ...

    tool = Tool.from_function(store, annotations={"idempotentHint": True})
    assert tool.metadata()["annotations"] == {"idempotentHint": True}
    assert "annotations" not in Tool.from_function(store).metadata()


# Built once


def test_validator_and_schemas_are_built_once_at_registration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[str] = []
    real_create_model = pydantic.create_model

    def counting_create_model(name: str, /, **kwargs: Any) -> type[BaseModel]:
        built.append(name)
        return real_create_model(name, **kwargs)

    monkeypatch.setattr(pydantic, "create_model", counting_create_model)
    app = SecureMCP("t")

    @app.tool()
    def add(a: int, b: int) -> int:
        return a + b

    assert built == ["add_arguments"]
    tool = app.tools["add"]
    model, schema = tool._model, tool.input_schema
    for n in range(5):
        assert tool.validate({"a": n, "b": 1}) == {"a": n, "b": 1}
    validation_errors(tool, {"a": "x"})
    app.list_tools()
    assert built == ["add_arguments"]
    assert tool._model is model
    assert app.list_tools()[0]["inputSchema"] is schema


def test_tool_is_immutable() -> None:
    tool = Tool.from_function(lambda: None, name="t")
    with pytest.raises(AttributeError):
        tool.name = "other"  # type: ignore[misc]
    assert "t" in repr(tool)
    assert "_model" not in repr(tool)
