"""Tool: signature inspection, validation and schemas, built once at registration."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Optional

import pydantic
import pytest
from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from securemcp import InvalidParams, SecureMCP, Tool

from .helpers import Point


class Address(BaseModel):
    street: str
    tags: list[str] = []


class Person(BaseModel):
    name: str
    address: Address


class Stats(TypedDict):
    total: int


class Opaque:
    """A type pydantic has no schema for."""


def validation_errors(tool: Tool, arguments: Any) -> list[dict[str, Any]]:
    with pytest.raises(InvalidParams) as caught:
        tool.validate(arguments)
    assert caught.value.code == -32602
    data: list[dict[str, Any]] = caught.value.data
    return data


# Signatures


def test_defaults_and_optional() -> None:
    def f(a: int, b: str = "x", c: Optional[int] = None, d: int | None = 3) -> None:  # noqa: UP045
        pass

    tool = Tool.from_function(f)
    assert tool.validate({"a": 1}) == {"a": 1, "b": "x", "c": None, "d": 3}
    assert tool.validate({"a": 1, "c": 5, "d": None}) == {"a": 1, "b": "x", "c": 5, "d": None}
    assert tool.input_schema["required"] == ["a"]
    assert tool.input_schema["properties"]["c"] == {
        "anyOf": [{"type": "integer"}, {"type": "null"}],
        "default": None,
        "title": "C",
    }


def test_annotated_field_constraints() -> None:
    def f(
        limit: Annotated[int, Field(ge=1, le=100, description="How many.")] = 10,
        name: Annotated[str, Field(min_length=2)] = "ab",
    ) -> None:
        pass

    tool = Tool.from_function(f)
    assert tool.validate({"limit": 100}) == {"limit": 100, "name": "ab"}
    [error] = validation_errors(tool, {"limit": 101})
    assert error == {
        "loc": ["limit"],
        "msg": "Input should be less than or equal to 100",
        "type": "less_than_equal",
    }
    [error] = validation_errors(tool, {"name": "a"})
    assert error["type"] == "string_too_short"
    assert tool.input_schema["properties"]["limit"] == {
        "default": 10,
        "description": "How many.",
        "maximum": 100,
        "minimum": 1,
        "title": "Limit",
        "type": "integer",
    }


def test_nested_models_and_lists() -> None:
    def f(people: list[Person], origin: Point, ids: list[int] | None = None) -> None:
        pass

    tool = Tool.from_function(f)
    arguments = tool.validate(
        {"people": [{"name": "a", "address": {"street": "s"}}], "origin": {"x": 1, "y": 2}}
    )
    assert arguments["people"] == [Person(name="a", address=Address(street="s"))]
    assert arguments["origin"] == Point(x=1, y=2)
    assert arguments["ids"] is None
    errors = validation_errors(
        tool, {"people": [{"name": "a", "address": {}}], "origin": {"x": 1, "y": 2}}
    )
    assert errors == [
        {"loc": ["people", 0, "address", "street"], "msg": "Field required", "type": "missing"}
    ]
    assert set(tool.input_schema["$defs"]) == {"Address", "Person", "Point"}


def test_parameters_named_like_pydantic_attributes() -> None:
    def f(json: str, schema: int, model_config: bool, _private: str = "p", p1: int = 0) -> None:
        pass

    tool = Tool.from_function(f)
    arguments = {"json": "j", "schema": 1, "model_config": True, "_private": "q", "p1": 7}
    assert tool.validate(arguments) == arguments
    assert list(tool.input_schema["properties"]) == list(arguments)
    assert tool.input_schema["properties"]["_private"]["title"] == "Private"
    # The internal field names are not a way in.
    errors = validation_errors(tool, {"p0": "j", "schema": 1, "model_config": True})
    assert {(tuple(e["loc"]), e["type"]) for e in errors} == {
        (("json",), "missing"),
        (("p0",), "extra_forbidden"),
    }


def test_unannotated_parameters_accept_anything() -> None:
    def f(a, b=2):  # type: ignore[no-untyped-def]
        return a

    tool = Tool.from_function(f)
    assert tool.validate({"a": [1, {"x": None}]}) == {"a": [1, {"x": None}], "b": 2}
    assert tool.input_schema["required"] == ["a"]


def test_unresolvable_hints_fall_back_to_raw_annotations() -> None:
    def f(a: int, b: NoSuchType = None) -> AlsoMissing:  # type: ignore[name-defined]  # noqa: F821
        return a

    # get_type_hints fails on the names; the raw annotations of a function
    # without postponed evaluation are still usable where they are real types.
    f.__annotations__["b"] = Optional[int]  # noqa: UP045
    f.__annotations__["return"] = dict
    tool = Tool.from_function(f)
    assert tool.validate({"a": "3"}) == {"a": 3, "b": None}


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda *args: None, r"\*args and \*\*kwargs"),
        (lambda **kwargs: None, r"\*args and \*\*kwargs"),
        (lambda a, /, b: None, "positional-only parameter 'a'"),
    ],
)
def test_unsupported_parameter_kinds(fn: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Tool.from_function(fn, name="t")


def test_keyword_only_parameters_are_fine() -> None:
    def f(*, a: int) -> int:
        return a

    assert Tool.from_function(f).validate({"a": 1}) == {"a": 1}


@pytest.mark.parametrize(
    "name", ["", "has space", "semi;colon", "x" * 129, "slash/name", "newline\n", "é"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(TypeError, match="invalid tool name"):
        Tool.from_function(lambda: None, name=name)


def test_lambda_needs_an_explicit_name() -> None:
    with pytest.raises(TypeError, match="invalid tool name '<lambda>'"):
        Tool.from_function(lambda: None)


@pytest.mark.parametrize("name", ["a", "get_messages", "tools.v2-beta", "x" * 128, "0"])
def test_valid_names(name: str) -> None:
    assert Tool.from_function(lambda: None, name=name).name == name


# Async detection


def test_async_detection() -> None:
    async def coro(a: int) -> int:
        return a

    class AsyncCallable:
        async def __call__(self, a: int) -> int:
            return a

    class SyncCallable:
        def __call__(self, a: int) -> int:
            return a

    assert Tool.from_function(coro).is_async
    assert Tool.from_function(functools.partial(functools.partial(coro)), name="p").is_async
    assert Tool.from_function(AsyncCallable(), name="ac").is_async
    assert not Tool.from_function(SyncCallable(), name="sc").is_async
    assert not Tool.from_function(functools.partial(lambda a: a, a=1), name="sp").is_async


def test_description_of_partials_and_callable_instances() -> None:
    def f(a: int, b: int) -> int:
        """Doc of f."""
        return a + b

    class Adder:
        """Doc of Adder."""

        def __call__(self, a: int) -> int:
            return a

    assert Tool.from_function(functools.partial(f, b=1), name="p").description == "Doc of f."
    assert Tool.from_function(Adder(), name="adder").description == "Doc of Adder."
    assert Tool.from_function(functools.partial(f, b=1), name="p").validate({"a": 1}) == {
        "a": 1,
        "b": 1,
    }


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
