"""What the Tool tests share: the validation errors a call's arguments get."""

from __future__ import annotations

from typing import Any

import pytest

from securemcp import InvalidParams, Tool


def validation_errors(tool: Tool, arguments: Any) -> list[dict[str, Any]]:
    with pytest.raises(InvalidParams) as caught:
        tool.validate(arguments)
    assert caught.value.code == -32602
    data: list[dict[str, Any]] = caught.value.data
    return data
