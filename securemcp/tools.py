"""A tool: a Python function plus everything needed to call it safely.

The pydantic validator and the JSON Schemas are built once, when the tool is
registered, so a call costs one validation and nothing else.
"""

from __future__ import annotations

import dis
import functools
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, get_type_hints

import pydantic
from pydantic import ConfigDict, Field, TypeAdapter

from .context import Context
from .errors import InvalidParams
from .param_headers import header_map
from .progress import Progress

__all__ = ["Tool"]

# fullmatch, not match: "$" would also accept a name ending in a newline.
_TOOL_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


def _title(name: str) -> str:
    # The same title pydantic would derive from the field name; our model uses
    # positional field names, so the real name's title is set explicitly.
    return name.replace("_", " ").strip().title() or name


def _unwrap_partial(fn: Callable[..., Any]) -> Callable[..., Any]:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def _is_async_callable(fn: Callable[..., Any]) -> bool:
    fn = _unwrap_partial(fn)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable instances count too
    )


# Instructions with which a coroutine can give control back to its event loop.
_SUSPENDING_OPS = frozenset(
    {
        "GET_AWAITABLE",
        "SEND",
        "YIELD_VALUE",
        "BEFORE_ASYNC_WITH",
        "GET_AITER",
        "GET_ANEXT",
        "END_ASYNC_FOR",
    }
)


def _never_suspends(fn: Callable[..., Any]) -> bool:
    # A coroutine function with no await, async with or async for in its own
    # code runs to completion on its first step; nested functions have code of
    # their own and do not count. Anything but a plain function is assumed to
    # suspend.
    if not (inspect.isfunction(fn) and inspect.iscoroutinefunction(fn)):
        return False
    return not any(ins.opname in _SUSPENDING_OPS for ins in dis.get_instructions(fn.__code__))


def _errors_for_wire(exc: pydantic.ValidationError) -> list[dict[str, Any]]:
    # Only what helps the caller: where, what, which rule. The raw input is left
    # out because it can be large and is already known to the caller.
    return [
        {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def _output_schema(annotation: Any) -> dict[str, Any] | None:
    if annotation in (inspect.Signature.empty, Any, None, type(None)):
        return None
    try:
        schema = TypeAdapter(annotation).json_schema(mode="serialization")
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError):
        return None
    # MCP's outputSchema must describe an object; other results have no schema.
    return schema if schema.get("type") == "object" else None


@dataclass(frozen=True, slots=True, eq=False)
class Tool:
    """A registered tool. Build one with :meth:`Tool.from_function`."""

    name: str
    """The name callers use."""
    description: str | None
    """Human-readable description (from the docstring unless given)."""
    fn: Callable[..., Any]
    """The function itself, called with the validated arguments as keywords."""
    is_async: bool
    """``True`` when ``fn`` returns an awaitable that the backend must await."""
    input_schema: dict[str, Any]
    """JSON Schema of the arguments: always ``{"type": "object", ...}``."""
    output_schema: dict[str, Any] | None
    """JSON Schema of the result, where the return annotation describes an object."""
    _model: type[pydantic.BaseModel] = field(repr=False)
    _param_names: tuple[tuple[str, str], ...] = field(repr=False)
    scopes: frozenset[str] = frozenset()
    """Scopes a caller's principal must all hold to call (and see) the tool."""
    context_param: str | None = None
    """The parameter that receives the call's :class:`~securemcp.Context`, if any."""
    progress_param: str | None = None
    """The parameter that receives the call's :class:`~securemcp.Progress`, if any."""
    title: str | None = None
    """A human-friendly display name (MCP ``title``)."""
    annotations: Mapping[str, Any] | None = None
    """MCP tool annotations (``readOnlyHint``, ``destructiveHint``, ...), as given."""
    runs_inline: bool = False
    """An async tool whose code never awaits: its coroutine finishes on its first
    step, so a backend may run it in place instead of paying for a task."""
    param_headers: Mapping[tuple[str, ...], str] = field(default_factory=dict)
    """The arguments a 2026-07-28 HTTP call repeats as ``Mcp-Param-*`` headers: each
    one's path in the arguments and its header name (``x-mcp-header`` in the
    input schema, see :mod:`securemcp.param_headers`)."""

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        scopes: Iterable[str] = (),
        title: str | None = None,
        annotations: Mapping[str, Any] | None = None,
    ) -> Tool:
        """Inspect ``fn`` and build its validator and schemas.

        Raises ``TypeError`` for a function that cannot be a tool (variadic
        parameters, positional-only parameters, an invalid name), ``ValueError``
        for an ``x-mcp-header`` that breaks its rules (:mod:`securemcp.param_headers`).
        """
        if isinstance(scopes, str):
            raise TypeError("scopes must be a collection of scope names, not one string")
        if not callable(fn):
            raise TypeError(f"a tool must be callable, not {type(fn).__name__}")
        tool_name = name if name is not None else getattr(fn, "__name__", None)
        if not isinstance(tool_name, str) or not _TOOL_NAME.fullmatch(tool_name):
            raise TypeError(
                f"invalid tool name {tool_name!r}: use 1 to 128 letters, digits, '_', '-' or '.'"
            )
        if description is None:
            # A partial's own docstring describes functools.partial, not the tool.
            doc = inspect.getdoc(_unwrap_partial(fn))
            description = doc.strip() if doc else None

        signature = inspect.signature(fn)
        try:
            hints = get_type_hints(fn, include_extras=True)
        except Exception:  # noqa: BLE001 - unresolvable hints fall back to the raw annotations
            hints = {}

        fields: dict[str, Any] = {}
        param_names: list[tuple[str, str]] = []
        context_param: str | None = None
        progress_param: str | None = None
        for index, param in enumerate(signature.parameters.values()):
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"tool {tool_name!r}: *args and **kwargs cannot be tool parameters")
            if param.kind is param.POSITIONAL_ONLY:
                raise TypeError(
                    f"tool {tool_name!r}: positional-only parameter {param.name!r} cannot be "
                    "passed by name"
                )
            annotation = hints.get(param.name, param.annotation)
            if annotation is Context:
                # Filled in by the server for each call; never from the caller.
                if context_param is not None:
                    raise TypeError(f"tool {tool_name!r}: only one parameter may take the Context")
                context_param = param.name
                continue
            if annotation is Progress:
                if progress_param is not None:
                    raise TypeError(f"tool {tool_name!r}: only one parameter may take the Progress")
                progress_param = param.name
                continue
            if annotation is inspect.Parameter.empty:
                annotation = Any
            default = ... if param.default is inspect.Parameter.empty else param.default
            # Internal field names keep parameters such as "json", "schema" or
            # "_private" from clashing with pydantic's own attributes; the alias
            # is the name on the wire.
            internal = f"p{index}"
            alias_info = Field(alias=param.name, title=_title(param.name))
            fields[internal] = (Annotated[annotation, alias_info], default)
            param_names.append((internal, param.name))

        model = pydantic.create_model(
            f"{tool_name}_arguments",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
            **fields,
        )
        input_schema = model.model_json_schema(by_alias=True)
        input_schema.pop("title", None)
        input_schema.setdefault("properties", {})
        try:
            param_headers = header_map(input_schema)
        except ValueError as exc:
            raise ValueError(f"tool {tool_name!r}: {exc}") from None

        return cls(
            name=tool_name,
            description=description,
            fn=fn,
            is_async=_is_async_callable(fn),
            runs_inline=_never_suspends(fn),
            input_schema=input_schema,
            output_schema=_output_schema(hints.get("return", signature.return_annotation)),
            scopes=frozenset(scopes),
            context_param=context_param,
            progress_param=progress_param,
            title=title,
            annotations=dict(annotations) if annotations is not None else None,
            _model=model,
            _param_names=tuple(param_names),
            param_headers=param_headers,
        )

    def validate(self, arguments: Any) -> dict[str, Any]:
        """Validate the caller's arguments and return the keyword arguments for ``fn``.

        ``None`` counts as no arguments. Raises :class:`InvalidParams` with
        pydantic's errors in ``data``.
        """
        if arguments is None:
            arguments = {}
        elif type(arguments) is not dict and not isinstance(arguments, Mapping):
            raise InvalidParams(
                f"Invalid params for tool '{self.name}': arguments must be an object",
                data=[{"loc": [], "msg": "Input should be an object", "type": "dict_type"}],
            )
        try:
            values = self._model.__pydantic_validator__.validate_python(arguments).__dict__
        except pydantic.ValidationError as exc:
            errors = _errors_for_wire(exc)
            first = errors[0]
            where = ".".join(str(part) for part in first["loc"]) or "arguments"
            raise InvalidParams(
                f"Invalid params for tool '{self.name}': {where}: {first['msg']}", data=errors
            ) from None
        return {public: values[internal] for internal, public in self._param_names}

    def metadata(self) -> dict[str, Any]:
        """The tool as ``list_tools`` describes it."""
        info: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_schema,
            "is_async": self.is_async,
        }
        if self.output_schema is not None:
            info["outputSchema"] = self.output_schema
        if self.annotations:
            # Hints such as idempotentHint, which a reconnecting client reads too.
            info["annotations"] = dict(self.annotations)
        return info
