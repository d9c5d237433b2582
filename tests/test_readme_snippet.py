"""The core snippet of README.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_tool_and_core_snippets_run(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = _python_blocks()
    namespace: dict[str, object] = {}
    exec(blocks[0], namespace)  # the tools block defines `app`
    exec(blocks[1], namespace)  # the core block drives it by hand
    out = capsys.readouterr().out
    assert "ResponseReceived(id=1, result={'echoed': 'hi'})" in out
