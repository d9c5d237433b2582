"""The chat example's rooms, live messages, durable history and security.

The app's own behaviour is tested through ``securemcp.testing.TestClient`` (in memory, as its
users test theirs); the example as a user runs it (separate processes, a real socket) after that.
"""

from __future__ import annotations

import importlib.util
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

from securemcp import RPCError, SecureMCPError
from securemcp.store import MemoryMessageStore, SQLiteMessageStore
from securemcp.testing import TestClient
from securemcp.transport import WebSocketClient, WebSocketTransport

from .chat_server import CHAT, running_script
from .test_chat_example import start_chat_server

WAIT = 10.0
ADMIN = "admin-secret-token"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chat_example_server", CHAT / "server.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


chat = _load_example()


def chat_server(
    *, rate: float = 1000.0, burst: float = 1000.0, admin_token: str | None = ADMIN
) -> WebSocketTransport:
    """The example's app and policy, as its ``main()`` serves them (clients: ``TestClient``)."""
    app = chat.create_app(MemoryMessageStore())
    policy = chat.security_policy(admin_token, rate, burst)
    return WebSocketTransport(app, security=policy, shutdown_grace=1, close_timeout=2)


async def next_note(client: WebSocketClient) -> tuple[str, Any]:
    with anyio.fail_after(WAIT):
        async for method, params in client.notifications():
            return method, params
    raise AssertionError("the connection ended before a notification came")


async def rpc_error(client: WebSocketClient, tool: str, params: dict[str, Any]) -> RPCError:
    with pytest.raises(RPCError) as caught:
        await client.invoke_tool(tool, params)
    return caught.value


@pytest.mark.anyio
async def test_messages_reach_every_member_of_their_room_and_nobody_else() -> None:
    server = chat_server()
    async with TestClient(server) as ann, TestClient(server) as bob, TestClient(server) as cyd:
        assert await ann.invoke_tool("join_room", {"room": "general"}) == {
            "status": "joined",
            "room": "general",
            "members": 1,
        }
        assert (await bob.invoke_tool("join_room", {"room": "general"}))["members"] == 2
        assert (await cyd.invoke_tool("join_room", {"room": "dev"}))["members"] == 1

        # The seed call, unchanged: no room means "general".
        sent = await ann.invoke_tool("send_message", {"username": "Ann", "message": "hi all"})
        assert sent["status"] == "sent"
        message = sent["message"]
        assert message["room"] == "general"
        assert isinstance(message["id"], int)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", message["timestamp"])
        assert await next_note(ann) == ("chat.message", message)
        assert await next_note(bob) == ("chat.message", message)

        to_dev = await bob.invoke_tool(
            "send_message", {"username": "Bob", "message": "dev only", "room": "dev"}
        )
        # cyd's first notification is the dev message: the general one never came.
        assert await next_note(cyd) == ("chat.message", to_dev["message"])

        rooms = await cyd.invoke_tool("list_rooms")
        assert rooms == {
            "rooms": [
                {"name": "dev", "members": 1, "messages": 1},
                {"name": "general", "members": 2, "messages": 1},
            ]
        }
        assert await bob.invoke_tool("leave_room", {"room": "general"}) == {
            "status": "left",
            "room": "general",
            "members": 1,
        }
        later = await cyd.invoke_tool(
            "send_message", {"username": "Cyd", "message": "after", "room": "general"}
        )
        assert await next_note(ann) == ("chat.message", later["message"])
        stats = await ann.invoke_tool("get_stats")
        assert stats == {"total_messages": 3, "unique_users": 3, "users": ["Ann", "Bob", "Cyd"]}


@pytest.mark.anyio
async def test_get_messages_paginates_per_room() -> None:
    async with TestClient(chat_server()) as client:
        for index in range(12):
            await client.invoke_tool(
                "send_message", {"username": "Ann", "message": f"m{index}", "room": "r1"}
            )
        await client.invoke_tool("send_message", {"username": "Ann", "message": "general one"})
        latest = await client.invoke_tool("get_messages", {"room": "r1", "limit": 5})
        assert latest["total"] == 12
        assert latest["room"] == "r1"
        assert [m["message"] for m in latest["messages"]] == [f"m{i}" for i in range(7, 12)]
        older = await client.invoke_tool(
            "get_messages", {"room": "r1", "limit": 5, "before": latest["messages"][0]["id"]}
        )
        assert [m["message"] for m in older["messages"]] == [f"m{i}" for i in range(2, 7)]
        seed = await client.invoke_tool("get_messages", {"limit": 10})
        assert [m["message"] for m in seed["messages"]] == ["general one"]
        assert seed["total"] == 1


@pytest.mark.anyio
async def test_clearing_the_history_needs_the_admin_token() -> None:
    server = chat_server()
    async with TestClient(server) as anonymous:
        await anonymous.invoke_tool("join_room", {"room": "general"})
        await anonymous.invoke_tool("send_message", {"username": "Ann", "message": "keep?"})
        await next_note(anonymous)
        refused = await rpc_error(anonymous, "clear_history", {})
        assert refused.code == -31001
        async with TestClient(server, token=ADMIN) as admin:
            tools = [tool["name"] for tool in await admin.list_tools()]
            assert "clear_history" in tools
            assert await admin.invoke_tool("clear_history", {"room": "general"}) == {
                "status": "cleared",
                "messages_deleted": 1,
            }
            assert await next_note(anonymous) == ("chat.cleared", {"room": "general"})
            await admin.invoke_tool("send_message", {"username": "Adm", "message": "x"})
            assert (await admin.invoke_tool("clear_history"))["messages_deleted"] == 1
        assert (await anonymous.invoke_tool("get_stats"))["total_messages"] == 0


@pytest.mark.anyio
async def test_without_an_admin_token_nobody_can_clear() -> None:
    async with TestClient(chat_server(admin_token=None)) as client:
        assert (await rpc_error(client, "clear_history", {})).code == -31001


@pytest.mark.anyio
async def test_sending_is_rate_limited_per_connection() -> None:
    server = chat_server(rate=0.5, burst=2)
    async with TestClient(server) as eager, TestClient(server) as other:
        message = {"username": "Ann", "message": "spam"}
        await eager.invoke_tool("send_message", message)
        await eager.invoke_tool("send_message", message)
        limited = await rpc_error(eager, "send_message", message)
        assert limited.code == -31029
        assert limited.data["retry_after"] > 0
        # Reading is not sending, and another connection has its own bucket.
        await eager.invoke_tool("get_messages", {})
        await other.invoke_tool("send_message", message)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("tool", "params"),
    [
        ("send_message", {"username": "Ann\n", "message": "hi"}),
        ("send_message", {"username": "A" * 65, "message": "hi"}),
        ("send_message", {"username": "Ann", "message": "bell\x07"}),
        ("send_message", {"username": "Ann", "message": "del\x7f"}),
        ("send_message", {"username": "Ann", "message": ""}),
        ("send_message", {"username": "Ann", "message": "hi", "room": "no spaces"}),
        ("join_room", {"room": "r" * 65}),
        ("join_room", {"room": ""}),
        ("get_messages", {"room": "ok", "before": 0}),
        ("get_messages", {"limit": 1001}),
    ],
)
async def test_invalid_input_is_refused_with_32602(tool: str, params: dict[str, Any]) -> None:
    async with TestClient(chat_server()) as client:
        assert (await rpc_error(client, tool, params)).code == -32602


@pytest.mark.anyio
async def test_a_connection_joins_a_bounded_number_of_rooms() -> None:
    async with TestClient(chat_server()) as client:
        for index in range(chat.MAX_ROOMS_PER_CONNECTION):
            await client.invoke_tool("join_room", {"room": f"r{index}"})
        await client.invoke_tool("join_room", {"room": "r0"})  # already in: fine
        assert (await rpc_error(client, "join_room", {"room": "one-too-many"})).code == -32602


# As a user runs it: separate processes


@contextmanager
def following(url: str, room: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """``client.py --follow`` running, its output collected line by line."""
    args = ("client.py", "--url", url, "--follow", "--room", room)
    with running_script(*args, ready=lambda line: True) as run:
        assert run.started.wait(20), "the follower printed nothing"
        assert run.lines[0].startswith(f"Following #{room}"), run.lines
        yield run.process, run.lines


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_follow_prints_messages_as_they_are_sent(backend: str) -> None:
    with (
        start_chat_server(backend, "--db", ":memory:") as server,
        following(server.url, "lobby") as (process, lines),
    ):

        async def send() -> None:
            async with WebSocketClient(server.url) as client:
                for text in ("first live", "second live"):
                    await client.invoke_tool(
                        "send_message", {"username": "Bob", "message": text, "room": "lobby"}
                    )
                await client.invoke_tool("send_message", {"username": "Bob", "message": "other"})

        anyio.run(send, backend=backend)
        deadline = threading.Event()
        for _ in range(200):
            if sum("live" in line for line in lines) == 2:
                break
            deadline.wait(0.05)
        printed = "".join(lines)
        assert "Bob: first live" in printed
        assert "Bob: second live" in printed
        assert "other" not in printed
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0


def test_an_admin_token_from_the_environment(tmp_path: Path) -> None:
    env = {chat.ADMIN_TOKEN_ENV: ADMIN}
    with start_chat_server("asyncio", "--db", str(tmp_path / "c.db"), env=env) as server:
        assert "Admin token: set" in server.output()
        demo = subprocess.run(
            [sys.executable, "client.py", "--url", server.url, "--token", ADMIN],
            cwd=CHAT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert demo.returncode == 0, demo.stderr
        assert "- clear_history:" in demo.stdout


SENDERS = 4
WARM_UP = 100
"""Acknowledged sends each sender has had when the server is killed, at least."""


async def _send_until_killed(
    url: str, name: str, acked: list[dict[str, Any]], warmed_up: Callable[[], None]
) -> None:
    """Send numbered messages, recording each acknowledged one, until the server dies."""
    try:
        async with WebSocketClient(url, timeout=WAIT) as client:
            for index in range(100_000):
                answer = await client.invoke_tool(
                    "send_message", {"username": name, "message": f"{name} #{index}"}
                )
                acked.append(answer["message"])
                if len(acked) == WARM_UP:
                    warmed_up()
    except (OSError, SecureMCPError):
        return  # The kill ends every sender, one way or another.


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_every_acknowledged_message_survives_sigkill(tmp_path: Path, backend: str) -> None:
    db = str(tmp_path / "chat.db")
    options = ("--db", db, "--rate", "100000", "--burst", "100000")
    acked: dict[str, list[dict[str, Any]]] = {f"s{i}": [] for i in range(SENDERS)}
    with start_chat_server(backend, *options) as server:

        async def load() -> None:
            ready = anyio.Event()
            warm = 0

            def warmed_up() -> None:
                nonlocal warm
                warm += 1
                if warm == SENDERS:
                    ready.set()

            async with anyio.create_task_group() as tg:
                for name, mine in acked.items():
                    tg.start_soon(_send_until_killed, server.url, name, mine, warmed_up)
                # Kill mid-stream, once every sender has had answers.
                with anyio.fail_after(60):
                    await ready.wait()
                server.process.send_signal(signal.SIGKILL)

        anyio.run(load, backend=backend)
        assert server.process.wait(timeout=10) == -signal.SIGKILL

    total = sum(len(mine) for mine in acked.values())
    assert total >= SENDERS * WARM_UP

    async def stored() -> list[dict[str, Any]]:
        # Read the database itself, as a restarted server would.
        store = SQLiteMessageStore(db)
        try:
            return [m.as_dict() for m in await store.list("general", limit=10 * total + 100)]
        finally:
            await store.aclose()

    kept = anyio.run(stored)
    by_sender: dict[str, list[dict[str, Any]]] = {name: [] for name in acked}
    for message in kept:
        by_sender[message["username"]].append(message)
    for name, mine in acked.items():
        # Every acknowledged message is there, in the order it was sent; at most
        # one more (committed, its answer lost to the kill) follows.
        assert by_sender[name][: len(mine)] == mine
        assert len(by_sender[name]) - len(mine) <= 1

    # And a restarted server serves them.
    with start_chat_server(backend, *options) as again:

        async def first_page() -> dict[str, Any]:
            async with WebSocketClient(again.url) as client:
                result: dict[str, Any] = await client.invoke_tool("get_messages", {"limit": 5})
                return result

        page = anyio.run(first_page, backend=backend)
        assert page["total"] == len(kept)
        assert page["messages"] == kept[-5:]
