"""The core snippet of README.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from securemcp import SecureMCP

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_tool_and_core_snippets_run(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = _python_blocks()
    tools_block = next(b for b in blocks if '@app.tool(name="get_messages"' in b)
    core_block = next(b for b in blocks if "ServerConnection(app)" in b)
    namespace: dict[str, object] = {}
    exec(tools_block, namespace)  # defines `app`
    exec(core_block, namespace)  # drives it by hand
    out = capsys.readouterr().out
    assert "ResponseReceived(id=1, result={'echoed': 'hi'})" in out


@pytest.mark.anyio
async def test_readme_server_and_client_snippets_work_together() -> None:
    import anyio

    blocks = _python_blocks()
    server_block = next(b for b in blocks if "WebSocketTransport(app)" in b)
    client_block = next(b for b in blocks if "async with WebSocketClient(" in b)
    run_line = 'transport.run(host="0.0.0.0", port=8765)'
    assert run_line in server_block
    server_ns: dict[str, Any] = {}
    # Everything but the blocking run(): the test serves the same transport on a free port.
    exec(server_block.replace(run_line, ""), server_ns)
    transport = server_ns["transport"]
    async with anyio.create_task_group() as tg:
        port = await tg.start(transport.serve, "127.0.0.1", 0)
        client_ns: dict[str, Any] = {}
        source = client_block.replace("ws://localhost:8765", f"ws://127.0.0.1:{port}")
        # Run the snippet's main() and look at what it bound.
        source += "\n    return tools, result, rtt\n"
        exec(source, client_ns)
        with anyio.fail_after(10):
            tools, result, rtt = await client_ns["main"]()
        tg.cancel_scope.cancel()
    assert [tool["name"] for tool in tools] == ["my_tool"]
    assert result == {"result": "value"}
    assert rtt > 0


@pytest.mark.anyio
async def test_readme_testing_snippet_passes_against_the_readme_app() -> None:
    blocks = _python_blocks()
    server_block = next(b for b in blocks if "WebSocketTransport(app)" in b)
    test_block = next(b for b in blocks if "from securemcp.testing import TestClient" in b)
    namespace: dict[str, Any] = {}
    exec(server_block.replace('transport.run(host="0.0.0.0", port=8765)', ""), namespace)
    exec(test_block, namespace)  # the test, next to the app it tests
    test = namespace["test_my_tool"]
    assert [mark.name for mark in test.pytestmark] == ["anyio"]
    await test()
    # The snippet's assertion is a real one: a tool that answers otherwise fails it.
    other = namespace["app"] = SecureMCP("other")

    @other.tool(name="my_tool")
    async def shout(param: str) -> dict[str, str]:
        return {"result": param.upper()}

    with pytest.raises(AssertionError):
        await test()
