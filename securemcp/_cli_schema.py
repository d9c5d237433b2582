"""How ``securemcp call`` and ``securemcp tools`` read a tool's JSON Schema.

``call`` types each ``key=value`` argument by the tool's ``inputSchema``
(:func:`build_arguments`); ``tools`` prints every parameter's type in a table
(:func:`tools_table`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from ._cli_error import CLIError

__all__ = [
    "build_arguments",
    "convert_value",
    "parameter_lines",
    "schema_types",
    "tools_table",
    "type_label",
]


def schema_types(schema: Any, defs: dict[str, Any]) -> set[str] | None:
    """The JSON types a parameter schema allows; ``None`` when it allows anything."""
    if not isinstance(schema, dict):
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return schema_types(defs.get(ref.rsplit("/", 1)[-1]), defs)
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {str(k) for k in kind}
    if "enum" in schema or "const" in schema:
        values = schema["enum"] if "enum" in schema else [schema["const"]]
        return {_json_type(v) for v in values}
    options = schema.get("anyOf") or schema.get("oneOf")
    if not isinstance(options, list):
        return None
    union: set[str] = set()
    for option in options:
        types = schema_types(option, defs)
        if types is None:
            return None
        union |= types
    return union or None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "string"


def _strict_json(raw: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(raw, parse_constant=refuse)


def convert_value(raw: str, types: set[str] | None) -> Any:
    """``raw`` as the first of ``types`` it fits (string last); ``ValueError`` if none."""
    if types is None:
        try:
            return _strict_json(raw)
        except ValueError:
            return raw
    for kind in ("null", "boolean", "integer", "number", "array", "object"):
        if kind not in types:
            continue
        if kind == "null" and raw == "null":
            return None
        if kind == "boolean" and raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        try:
            value = _strict_json(raw)
        except ValueError:
            continue
        if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind == "integer" and isinstance(value, float) and value.is_integer():
            return int(value)
        if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
            return value if math.isfinite(value) else raw
        if kind in ("array", "object") and _json_type(value) == kind:
            return value
    if "string" in types:
        return raw
    raise ValueError(f"expected {' or '.join(sorted(types))}")


def build_arguments(
    pairs: Sequence[str], json_text: str | None, tool: dict[str, Any] | None
) -> dict[str, Any]:
    """The call's arguments: ``--json`` merged with ``key=value`` pairs typed by ``tool``."""
    arguments: dict[str, Any] = {}
    if json_text is not None:
        try:
            arguments = _strict_json(json_text)
        except ValueError as exc:
            raise CLIError(f"--json is not valid JSON: {exc}", 2) from None
        if not isinstance(arguments, dict):
            raise CLIError("--json must be a JSON object of arguments", 2)
    schema = (tool or {}).get("inputSchema") or {}
    properties = schema.get("properties") or {}
    defs = schema.get("$defs") or {}
    seen: set[str] = set()
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"argument {pair!r} is not key=value", 2)
        if key in seen:
            raise CLIError(f"parameter {key!r} is given twice", 2)
        seen.add(key)
        # An unknown name is sent as given: the server's answer names the problem.
        types = schema_types(properties[key], defs) if key in properties else None
        try:
            arguments[key] = convert_value(raw, types)
        except ValueError as exc:
            raise CLIError(f"{key}={raw!r}: {exc}", 2) from None
    return arguments


def type_label(schema: Any, defs: dict[str, Any]) -> str:
    """A short human name for a parameter's type: ``integer``, ``string | null``, ``array[...]``."""
    if not isinstance(schema, dict):
        return "any"
    if isinstance(schema.get("$ref"), str):
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "enum" in schema:
        return " | ".join(json.dumps(value) for value in schema["enum"])
    options = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(options, list):
        return " | ".join(type_label(option, defs) for option in options)
    kind = schema.get("type")
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"array[{type_label(schema['items'], defs)}]"
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    return str(kind) if kind else "any"


def parameter_lines(tool: dict[str, Any]) -> list[str]:
    """One line per parameter: ``limit: integer = 10``, ``username: string (required)``."""
    schema = tool.get("inputSchema") or {}
    required = set(schema.get("required") or [])
    defs = schema.get("$defs") or {}
    lines = []
    for name, spec in (schema.get("properties") or {}).items():
        line = f"{name}: {type_label(spec, defs)}"
        if name in required:
            line += " (required)"
        elif isinstance(spec, dict) and "default" in spec:
            line += f" = {json.dumps(spec['default'], ensure_ascii=False)}"
        lines.append(line)
    return lines


def tools_table(tools: Sequence[dict[str, Any]]) -> str:
    """The tools as an aligned text table: name, parameters (one per line), description."""
    rows: list[tuple[str, list[str], str]] = []
    for tool in tools:
        description = (tool.get("description") or "").strip().splitlines()
        rows.append(
            (
                str(tool.get("name")),
                parameter_lines(tool) or ["-"],
                description[0] if description else "",
            )
        )
    if not rows:
        return "(no tools)"
    name_width = max(len("NAME"), *(len(name) for name, _, _ in rows))
    param_width = max(len("PARAMETERS"), *(len(p) for _, params, _ in rows for p in params))
    lines = [f"{'NAME':<{name_width}}  {'PARAMETERS':<{param_width}}  DESCRIPTION"]
    for name, params, description in rows:
        for index, param in enumerate(params):
            first = index == 0
            left = name if first else ""
            line = f"{left:<{name_width}}  {param:<{param_width}}  {description if first else ''}"
            lines.append(line.rstrip())
    return "\n".join(lines)
