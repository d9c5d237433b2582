"""What a tool may learn about the call it serves.

A tool that declares a parameter annotated ``Context`` receives one; that
parameter is not part of the tool's input schema and a caller cannot set it.

>>> from securemcp import Context, SecureMCP
>>> app = SecureMCP("demo")
>>> @app.tool()
... def whoami(ctx: Context) -> str:
...     return ctx.principal.subject if ctx.principal else "anonymous"
"""

from __future__ import annotations

from dataclasses import dataclass

from .auth import Principal

__all__ = ["Context"]


@dataclass(frozen=True, slots=True)
class Context:
    """The call's circumstances, handed to tools that ask for them."""

    principal: Principal | None
    """Who is calling (``None`` for an anonymous connection)."""
    request_id: str | int
    """The caller's id for this call."""
    tool_name: str
    """The name the tool was called by."""
