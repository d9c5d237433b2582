"""The tutorial's app: notes anyone may add and read, that only an admin may clear.

Serve it with ``python notes.py`` (``--backend trio``, ``--port N``), with the
admin's token in ``$NOTES_ADMIN_TOKEN``.
"""

from __future__ import annotations

import argparse
import os
from typing import Annotated

from pydantic import Field

from securemcp import Context, Principal, SecureMCP, SecurityPolicy, StaticTokenAuthenticator
from securemcp.transport import WebSocketTransport

app = SecureMCP("notes")
notes: list[str] = []


@app.tool()
def add_note(text: Annotated[str, Field(min_length=1, max_length=280)]) -> dict[str, int]:
    """Keep a note; returns its number."""
    notes.append(text)
    return {"number": len(notes)}


@app.tool()
def list_notes(limit: Annotated[int, Field(ge=1, le=100)] = 10) -> dict[str, list[str]]:
    """The latest notes, oldest first."""
    return {"notes": notes[-limit:]}


@app.tool(scopes={"admin"})
def clear_notes(ctx: Context) -> dict[str, object]:
    """Delete every note (needs the admin scope)."""
    cleared = len(notes)
    notes.clear()
    return {"cleared": cleared, "by": ctx.principal.subject if ctx.principal else None}


def security(admin_token: str) -> SecurityPolicy:
    """Anonymous callers may use the unscoped tools; the admin token may use them all."""
    return SecurityPolicy(
        authenticator=StaticTokenAuthenticator(
            {admin_token: Principal("admin", frozenset({"admin"}))}
        ),
        allow_anonymous=True,
    )


def main() -> None:
    """Serve the notes until Ctrl+C."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    transport = WebSocketTransport(app, security=security(os.environ["NOTES_ADMIN_TOKEN"]))
    transport.run(port=args.port, backend=args.backend)


if __name__ == "__main__":
    main()
