"""The application object: a named registry of tools."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from types import MappingProxyType
from typing import Any, TypeVar, overload

from .tools import Tool

__all__ = ["SecureMCP"]

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R", bound=AbstractAsyncContextManager[Any])


class SecureMCP:
    """A SecureMCP application: the tools a server exposes.

    >>> app = SecureMCP("demo")
    >>> @app.tool()
    ... def add(a: int, b: int) -> int:
    ...     "Add two integers."
    ...     return a + b
    >>> [tool["name"] for tool in app.list_tools()]
    ['add']

    ``stateless=True`` declares that the tools keep nothing between calls that
    another process would need (no rooms, history or subscriptions held in
    memory): the app may then be served by several worker processes
    (``securemcp serve --workers N``) without a shared broker. Left ``False``,
    serving it from more than one process needs a shared broker (Redis), since
    rooms and broadcast would otherwise split silently between the processes.
    """

    def __init__(
        self,
        name: str,
        description: str | None = None,
        *,
        version: str = "0.1.0",
        stateless: bool = False,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError("the app needs a non-empty name")
        self.name = name
        self.description = description
        self.version = version
        self.stateless = stateless
        """Whether the tools keep nothing between calls that another process would need."""
        self._tools: dict[str, Tool] = {}
        self._resources: list[AbstractAsyncContextManager[Any]] = []

    @overload
    def tool(self, fn: F, /) -> F: ...

    @overload
    def tool(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        scopes: Iterable[str] = (),
        title: str | None = None,
        annotations: Mapping[str, Any] | None = None,
    ) -> Callable[[F], F]: ...

    def tool(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        scopes: Iterable[str] = (),
        title: str | None = None,
        annotations: Mapping[str, Any] | None = None,
    ) -> Any:
        """Register a sync or async function as a tool; usable as ``@app.tool()`` or ``@app.tool``.

        ``scopes``: every scope a caller's principal must hold to see and call the tool.
        ``title`` and ``annotations`` (e.g. ``{"readOnlyHint": True}``) are shown to
        MCP clients as given. The function is returned unchanged, so it stays
        callable from Python.
        """

        def register(func: F) -> F:
            self.add_tool(
                func,
                name=name,
                description=description,
                scopes=scopes,
                title=title,
                annotations=annotations,
            )
            return func

        return register if fn is None else register(fn)

    def add_tool(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        scopes: Iterable[str] = (),
        title: str | None = None,
        annotations: Mapping[str, Any] | None = None,
    ) -> Tool:
        """Register ``fn`` and return its :class:`Tool`; a taken name raises ``ValueError``."""
        tool = Tool.from_function(
            fn,
            name=name,
            description=description,
            scopes=scopes,
            title=title,
            annotations=annotations,
        )
        if tool.name in self._tools:
            raise ValueError(
                f"a tool named {tool.name!r} is already registered on app {self.name!r}"
            )
        self._tools[tool.name] = tool
        return tool

    @property
    def tools(self) -> Mapping[str, Tool]:
        """The registered tools by name, in registration order (read-only)."""
        return MappingProxyType(self._tools)

    def get_tool(self, name: str) -> Tool | None:
        """The tool called ``name``, or ``None``."""
        return self._tools.get(name)

    def get_tools(self) -> dict[str, Callable[..., Any]]:
        """The registered functions by name (the original system's accessor)."""
        return {name: tool.fn for name, tool in self._tools.items()}

    def uses(self, resource: R) -> R:
        """Open ``resource`` (an async context manager) while a server serves this app.

        For what the tools share and must open first: a Redis message store,
        say (``store = app.uses(RedisMessageStore(url))``). A transport enters
        the resources in order before it accepts a connection and leaves them
        in reverse order after its last connection closed. Returns ``resource``.
        """
        if not (hasattr(resource, "__aenter__") and hasattr(resource, "__aexit__")):
            raise TypeError("a resource must be an async context manager")
        self._resources.append(resource)
        return resource

    @property
    def resources(self) -> tuple[AbstractAsyncContextManager[Any], ...]:
        """What :meth:`uses` registered, in order."""
        return tuple(self._resources)

    def list_tools(self) -> list[dict[str, Any]]:
        """Every tool's metadata, as ``list_tools`` sends it."""
        return [tool.metadata() for tool in self._tools.values()]

    def __repr__(self) -> str:
        return f"SecureMCP({self.name!r}, tools={list(self._tools)})"
