"""``x-mcp-header``: tool arguments a 2026-07-28 ``tools/call`` repeats as ``Mcp-Param-*`` headers.

A tool's input schema may mark a property with ``"x-mcp-header": "Region"``.
Over Streamable HTTP at 2026-07-28 the client then sends that argument's value
again as the header ``Mcp-Param-Region``, so that a proxy can route on it
without reading the body, and the server refuses a request whose header and
body disagree (the revision's SEP-2243). Declare one with pydantic::

    @app.tool()
    async def forecast(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]):
        ...

The rules, kept by :func:`header_map`: the name is an HTTP token (RFC 9110
5.6.2), unique among the schema's names ignoring case; it marks a string,
integer or boolean property reached from the schema's root through
``properties`` alone (``$defs``, ``items`` or ``anyOf`` do not count). A
value is sent as text: ``true``/``false``, the integer in decimal, the string
itself, or ``=?base64?...?=`` for a string that is not plain printable ASCII.

Pure: used by the app (a tool whose schema breaks a rule is refused when it is
registered), by :class:`~securemcp.transport.HTTPClient` (which mirrors the
arguments, and leaves out of ``list_tools`` a server's tool that breaks one)
and by the server (which compares the headers with the body).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["ANNOTATION", "PREFIX", "decode", "encode", "header_map", "mismatch", "param_headers"]

ANNOTATION = "x-mcp-header"
"""The input-schema keyword that names a property's header."""
PREFIX = "mcp-param-"
"""What the annotated name is appended to, in lower case: ``Mcp-Param-Region``."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PLAIN = re.compile(r"[\x20-\x7e]*")
_WRAPPED = re.compile(r"=\?base64\?(?P<payload>.*)\?=")
_TYPES = ("string", "integer", "boolean")  # a float's text differs between languages
# The JSON Schema 2020-12 keywords whose values are schemas: one, a list, a map of them.
_ONE = (
    "additionalProperties", "contains", "contentSchema", "else", "if", "items", "not",
    "propertyNames", "then", "unevaluatedItems", "unevaluatedProperties",
)  # fmt: skip
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems")
_MAP = ("$defs", "definitions", "dependentSchemas", "patternProperties")

Path = tuple[str, ...]
"""The ``properties`` keys from the schema's root to a property: its place in the arguments."""


def header_map(schema: Any) -> dict[Path, str]:
    """Each annotated property's path and header name; :class:`ValueError` for a broken rule."""
    found: dict[Path, str] = {}
    seen: dict[str, str] = {}
    for path, node in _positions(schema):
        if ANNOTATION not in node:
            continue
        name = node[ANNOTATION]
        where = ".".join(path or ()) or "the schema's root"
        if not path:
            raise ValueError(f"{ANNOTATION} on {where}: only a property reached through "
                             "'properties' alone may carry one")  # fmt: skip
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"{ANNOTATION} on {where!r} must be an HTTP token, not {name!r:.60}")
        if node.get("type") not in _TYPES:
            raise ValueError(f"{ANNOTATION} on {where!r}: the property must be of type "
                             "string, integer or boolean")  # fmt: skip
        if name.lower() in seen:
            raise ValueError(f"{ANNOTATION} {name!r} on {where!r} repeats the one on "
                             f"{seen[name.lower()]!r} (names ignore case)")  # fmt: skip
        seen[name.lower()] = where
        found[path] = name
    return found


def _positions(schema: Any) -> Iterator[tuple[Path | None, dict[str, Any]]]:
    """Every subschema, with its ``properties`` path (``None`` once off that chain).

    Instance data (``default``, ``enum``, ``const``, ``examples``) is not entered
    and ``$ref`` is not followed; a stack, not recursion, bounds the walk.
    """
    stack: list[tuple[Path | None, Any]] = [((), schema)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield path, node
        properties = node.get("properties")
        if isinstance(properties, dict):
            for key, sub in properties.items():
                stack.append((None if path is None else (*path, str(key)), sub))
        for key in _ONE:
            if key in node:
                stack.append((None, node[key]))
        for key in _LIST:
            if isinstance(node.get(key), list):
                stack.extend((None, sub) for sub in node[key])
        for key in _MAP:
            if isinstance(node.get(key), dict):
                stack.extend((None, sub) for sub in node[key].values())


def _value(arguments: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(arguments, Mapping):
            return None
        arguments = arguments.get(key)
    return arguments


def _text(value: Any) -> str | None:
    """The header text of an argument's value; ``None`` when it has none (absent, not a scalar)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 14_000 else None  # int-to-str refuses more
    if isinstance(value, str):
        return value
    return None


def encode(text: str) -> str:
    """``text`` as a header value: as it is, or ``=?base64?...?=`` (UTF-8) when it must be."""
    if _PLAIN.fullmatch(text) and text == text.strip() and not _WRAPPED.fullmatch(text):
        return text
    return f"=?base64?{base64.b64encode(text.encode()).decode('ascii')}?="


def decode(value: str) -> str | None:
    """A header value as sent: as it is, or the text in ``=?base64?...?=``; ``None`` if broken."""
    wrapped = _WRAPPED.fullmatch(value) if value[:2] == "=?" else None
    if wrapped is None:
        return value
    try:
        return base64.b64decode(wrapped["payload"], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def param_headers(headers: Mapping[Path, str], arguments: Any) -> list[tuple[str, str]]:
    """The ``Mcp-Param-*`` headers a call with ``arguments`` sends (an absent value: none)."""
    found = []
    for path, name in headers.items():
        text = _text(_value(arguments, path))
        if text is not None:
            found.append((f"Mcp-Param-{name}", encode(text)))
    return found


def mismatch(
    headers: Mapping[Path, str], arguments: Any, sent: Mapping[str, list[str]]
) -> str | None:
    """Why the ``Mcp-Param-*`` headers ``sent`` (lower-case name: values) fail ``arguments``.

    Each annotated argument and its header come together or not at all, and
    agree; a header sent twice is refused (which copy a proxy reads is anyone's
    guess). ``None`` when they agree.
    """
    for path, name in headers.items():
        values = sent.get(PREFIX + name.lower(), [])
        text = _text(_value(arguments, path))
        header = f"Mcp-Param-{name}"
        if len(values) > 1:
            return f"{header} is sent more than once"
        if text is None:
            if values:
                return f"{header} is sent without the argument {'.'.join(path)!r}"
            continue
        if not values:
            return f"{header} is missing for the argument {'.'.join(path)!r}"
        if decode(values[0]) != text:
            return f"{header} does not match the argument {'.'.join(path)!r}"
    return None
