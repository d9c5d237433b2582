"""The command line's expected failure, shared by its modules."""

from __future__ import annotations

__all__ = ["CLIError"]


class CLIError(Exception):
    """An expected failure: printed as one ``error: ...`` line, then exit with ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status
