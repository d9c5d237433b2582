import pytest
from notes import app, notes

from securemcp import Principal, Unauthenticated
from securemcp.testing import TestClient

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def no_notes() -> None:
    notes.clear()


async def test_anyone_may_add_and_list() -> None:
    async with TestClient(app) as client:
        assert await client.invoke_tool("add_note", {"text": "buy milk"}) == {"number": 1}
        assert await client.invoke_tool("list_notes", {}) == {"notes": ["buy milk"]}


async def test_only_an_admin_may_clear() -> None:
    async with TestClient(app) as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.invoke_tool("clear_notes", {})
    async with TestClient(app, principal=Principal("ann", {"admin"})) as admin:
        assert await admin.invoke_tool("clear_notes", {}) == {"cleared": 0, "by": "ann"}
