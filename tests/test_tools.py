"""Tool: signature inspection (defaults, constraints, nested models, names) and async detection.

Validation errors, schemas, metadata and building once are in ``test_tools_schemas.py``.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Optional

import pytest
from pydantic import BaseModel, Field

from securemcp import Tool

from .helpers import Point
from .tool_helpers import validation_errors


class Address(BaseModel):
    street: str
    tags: list[str] = []


class Person(BaseModel):
    name: str
    address: Address


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
