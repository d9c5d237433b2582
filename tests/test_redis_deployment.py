"""The chat example spread over processes on one real Redis, as a user deploys it.

Every server here is ``examples/websocket_chat/server.py`` in a process of its
own (``--redis URL``, and ``--workers N`` where it says so), on a port the OS
picks, with a private ``redis-server`` (AOF, ``appendfsync always``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest

from securemcp import ConnectionClosed, RateLimited, Unavailable
from securemcp.transport import WebSocketClient

from .chat_server import CHAT, running_script
from .redis_server import RedisServer
from .test_chat_example import BACKENDS, STARTED, RunningServer, start_chat_server

WAIT = 20.0
"""Upper bound of every wait in these multi-process tests."""
ADMIN = "admin-secret"


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail after ``WAIT`` seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


async def next_message(client: WebSocketClient) -> dict[str, Any]:
    """The next ``chat.message`` notification's message."""
    with anyio.fail_after(WAIT):
        async for method, params in client.notifications():
            if method == "chat.message":
                return dict(params)
    raise AssertionError("the notifications ended")


async def history(url: str, room: str = "general") -> list[dict[str, Any]]:
    """Every message of ``room``, oldest first, paged back with ``before``."""
    found: list[dict[str, Any]] = []
    before: int | None = None
    async with WebSocketClient(url, timeout=WAIT) as client:
        while True:
            arguments: dict[str, Any] = {"room": room, "limit": 1000}
            if before is not None:
                arguments["before"] = before
            page = (await client.invoke_tool("get_messages", arguments))["messages"]
            if not page:
                return found
            found[:0] = page
            before = page[0]["id"]


def worker_pids(server: RunningServer) -> list[int]:
    """The pids of the workers the supervisor has started so far, in order."""
    return [int(pid) for pid in re.findall(r"\[WS\] Worker (\d+) started", server.output())]


def connections_held(pid: int, port: int) -> int:
    """How many established TCP connections to ``port`` process ``pid`` holds (Linux /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed since the listing
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    held = 0
    with open(f"/proc/{pid}/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rpartition(":")[2], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                held += 1
    return held


def subscriber_processes(redis: RedisServer, room: str = "general") -> int:
    """How many server processes follow ``room`` (one subscriber connection each)."""
    answer = redis.command("PUBSUB", "NUMSUB", f"securemcp:topic:room:{room}").split()
    return int(answer[-1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_servers_share_rooms_history_and_the_rate_limit(
    redis_server: RedisServer, backend: str
) -> None:
    options = ("--redis", redis_server.url, "--admin-token", ADMIN, "--rate", "0.001")
    with (
        start_chat_server(backend, *options, "--burst", "4") as a,
        start_chat_server(backend, *options, "--burst", "4") as b,
    ):

        async def scenario() -> None:
            async with (
                WebSocketClient(a.url, timeout=WAIT) as ann,
                WebSocketClient(b.url, timeout=WAIT) as bob,
            ):
                for client in (ann, bob):
                    joined = await client.invoke_tool("join_room", {"room": "lobby"})
                    assert joined["status"] == "joined"
                # Live, both ways, across the two processes.
                said = {"username": "Bob", "message": "hello from B", "room": "lobby"}
                sent = (await bob.invoke_tool("send_message", said))["message"]
                assert await next_message(ann) == sent
                assert await next_message(bob) == sent
                said = {"username": "Ann", "message": "hello from A", "room": "lobby"}
                sent = (await ann.invoke_tool("send_message", said))["message"]
                assert await next_message(bob) == sent
            # One history, whichever server is asked.
            on_a, on_b = await history(a.url, "lobby"), await history(b.url, "lobby")
            assert on_a == on_b
            assert [m["message"] for m in on_a] == ["hello from B", "hello from A"]

            # The admin's sending bucket (burst 4) is one, across both servers.
            async with (
                WebSocketClient(a.url, token=ADMIN, timeout=WAIT) as admin_a,
                WebSocketClient(b.url, token=ADMIN, timeout=WAIT) as admin_b,
            ):
                message = {"username": "admin", "message": "hi", "room": "staff"}
                for n in range(4):
                    await (admin_a if n % 2 else admin_b).invoke_tool("send_message", message)
                for client in (admin_a, admin_b):
                    with pytest.raises(RateLimited) as refused:
                        await client.invoke_tool("send_message", message)
                    assert refused.value.code == -31029
                    assert refused.value.data["retry_after"] > 0

        anyio.run(scenario, backend=backend)


def all_hear_each_other(url: str, clients: int, redis: RedisServer, backend: str) -> None:
    """``clients`` connections join one room, each says one thing, and each hears all of it.

    Also checks that the connections landed on more than one server process.
    """

    async def scenario() -> dict[int, list[str]]:
        heard: dict[int, list[str]] = {n: [] for n in range(clients)}
        async with anyio.create_task_group() as tg:
            joined = anyio.Semaphore(0)
            everyone_in = anyio.Event()

            async def member(n: int) -> None:
                async with WebSocketClient(url, timeout=WAIT) as client:
                    await client.invoke_tool("join_room", {"room": "general"})
                    joined.release()
                    await everyone_in.wait()
                    await client.invoke_tool(
                        "send_message", {"username": f"user{n}", "message": f"from {n}"}
                    )
                    with anyio.fail_after(WAIT):
                        async for method, params in client.notifications():
                            assert method == "chat.message"
                            heard[n].append(params["message"])
                            if len(heard[n]) == clients:
                                return

            for n in range(clients):
                tg.start_soon(member, n)
                with anyio.fail_after(WAIT):
                    await joined.acquire()
            processes = await anyio.to_thread.run_sync(subscriber_processes, redis)
            assert processes >= 2, f"all {clients} connections landed on one worker"
            everyone_in.set()
        return heard

    heard = anyio.run(scenario, backend=backend)
    everything = sorted(f"from {n}" for n in range(clients))
    for n in range(clients):
        assert sorted(heard[n]) == everything, n


@pytest.mark.parametrize("backend", BACKENDS)
def test_thirty_clients_over_three_workers_all_hear_each_other(
    redis_server: RedisServer, backend: str
) -> None:
    with start_chat_server(backend, "--redis", redis_server.url, "--workers", "3") as server:
        all_hear_each_other(server.url, 30, redis_server, backend)
        assert len(worker_pids(server)) == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_readme_serve_command_with_workers_and_redis(
    redis_server: RedisServer, backend: str
) -> None:
    # README: cd examples/websocket_chat && securemcp serve server:app --workers 4 --redis URL
    command = (
        "-m", "securemcp", "serve", "server:app", "--port", "0",
        "--workers", "4", "--redis", redis_server.url, "--backend", backend,
    )  # fmt: skip
    with serving_command(*command) as (url, output):
        all_hear_each_other(url, 12, redis_server, backend)
        assert "with 4 workers" in output()
    # The history is in Redis, not in a chat.db next to the module.
    assert not (CHAT / "chat.db").exists()
    assert int(redis_server.command("XLEN", "{securemcp}:messages:history:general")) == 12


@contextmanager
def serving_command(*args: str) -> Iterator[tuple[str, Callable[[], str]]]:
    """Run ``python <args>`` (a serve command) in the chat's folder; yields URL and output."""
    with running_script(*args, ready=lambda line: STARTED in line) as run:
        assert run.started.wait(WAIT), run.output()
        match = re.search(r"ws://127\.0\.0\.1:(\d+)", run.output())
        assert match, run.output()
        yield f"ws://127.0.0.1:{match.group(1)}", run.output
        run.process.send_signal(signal.SIGTERM)
        assert run.process.wait(timeout=WAIT) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_worker_loses_no_acknowledged_message(
    redis_server: RedisServer, backend: str
) -> None:
    senders, messages = 9, 60
    options = ("--redis", redis_server.url, "--workers", "3", "--rate", "1000", "--burst", "1000")
    with start_chat_server(backend, *options) as server:
        acked: dict[str, list[dict[str, Any]]] = {f"s{n}": [] for n in range(senders)}
        failed: dict[str, BaseException] = {}

        async def scenario() -> None:
            started = anyio.Semaphore(0)
            go_on = anyio.Event()

            async def send(name: str) -> None:
                try:
                    async with WebSocketClient(server.url, timeout=WAIT) as client:
                        for index in range(messages):
                            if index == 10:
                                started.release()
                                await go_on.wait()
                            answer = await client.invoke_tool(
                                "send_message", {"username": name, "message": f"{name} #{index}"}
                            )
                            acked[name].append(answer["message"])
                except (ConnectionClosed, OSError) as lost:
                    failed[name] = lost

            async with anyio.create_task_group() as tg:
                for name in acked:
                    tg.start_soon(send, name)
                    with anyio.fail_after(WAIT):
                        await started.acquire()
                # Every sender is 10 messages in: kill a worker that serves some
                # of them, then let them all go on.
                victim = max(
                    worker_pids(server), key=lambda pid: connections_held(pid, server.port)
                )
                assert connections_held(victim, server.port) > 0
                os.kill(victim, signal.SIGKILL)
                await anyio.to_thread.run_sync(
                    wait_for,
                    lambda: f"Worker {victim} was killed by SIGKILL" in server.output(),
                    "the supervisor noticing",
                )
                go_on.set()

        anyio.run(scenario, backend=backend)
        # Those on other workers finished undisturbed; those on the victim lost
        # their connection (and nothing else).
        assert 0 < len(failed) < senders, "the killed worker served all senders or none"
        for name, messages_acked in acked.items():
            if name not in failed:
                assert len(messages_acked) == messages
        wait_for(lambda: len(worker_pids(server)) == 4, "a new worker")

        async def check() -> None:
            stored = await history(server.url)
            ids = [m["id"] for m in stored]
            assert ids == sorted(ids)
            for name, mine in acked.items():
                in_history = [m for m in stored if m["username"] == name]
                # Every acknowledged message is there, in the order sent (an
                # unacknowledged last one may be too: it was stored, its answer lost).
                assert in_history[: len(mine)] == mine
                assert len(in_history) - len(mine) <= (1 if name in failed else 0)

        anyio.run(check, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_redis_killed_and_restarted_during_traffic(redis_server: RedisServer, backend: str) -> None:
    options = ("--redis", redis_server.url, "--rate", "1000", "--burst", "1000")
    with start_chat_server(backend, *options) as a, start_chat_server(backend, *options) as b:

        async def scenario() -> None:
            acked: list[dict[str, Any]] = []
            async with (
                WebSocketClient(a.url, timeout=WAIT) as sender,
                WebSocketClient(b.url, timeout=WAIT) as listener,
            ):
                await listener.invoke_tool("join_room", {"room": "general"})

                async def say(text: str) -> dict[str, Any]:
                    answer = await sender.invoke_tool(
                        "send_message", {"username": "ann", "message": text}
                    )
                    acked.append(answer["message"])
                    return dict(answer["message"])

                sent = await say("before")
                assert await next_message(listener) == sent
                await anyio.to_thread.run_sync(redis_server.kill)
                # In the outage: the defined error, within the store's 2 s bound.
                for _ in range(3):
                    began = time.monotonic()
                    with pytest.raises(Unavailable) as refused:
                        await say("during")
                    assert refused.value.code == -31503
                    assert time.monotonic() - began < 3.5
                await anyio.to_thread.run_sync(redis_server.start)
                # Back: sending works again, and the listener hears new messages on
                # the same connection once its server resubscribed by itself (what is
                # published before that is not delivered there: pub/sub keeps nothing).
                heard: dict[str, Any] = {}
                with anyio.fail_after(WAIT):
                    async with anyio.create_task_group() as tg:

                        async def keep_saying() -> None:
                            for n in range(10_000):
                                with contextlib.suppress(Unavailable):
                                    await say(f"after {n}")
                                await anyio.sleep(0.1)

                        tg.start_soon(keep_saying)
                        while not (heard := await next_message(listener))["message"].startswith(
                            "after"
                        ):
                            assert heard["message"] == "before"
                        tg.cancel_scope.cancel()
                assert heard in acked
            stored = await history(a.url)
            assert [m["id"] for m in stored] == [m["id"] for m in acked]
            assert stored == acked

        anyio.run(scenario, backend=backend)


def test_more_workers_without_redis_are_refused_with_one_line() -> None:
    refused = subprocess.run(
        [sys.executable, "server.py", "--port", "0", "--workers", "2"],
        cwd=CHAT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]
    assert "--workers above 1 needs --redis URL" in last
    assert "[WS]" not in refused.stdout


def test_the_redis_password_never_reaches_the_banner(redis_server: RedisServer) -> None:
    url = f"redis://:hunter2@127.0.0.1:{redis_server.port}/0"
    redis_server.command("CONFIG", "SET", "requirepass", "hunter2")
    with start_chat_server("asyncio", "--redis", url) as server:
        assert "History: Redis at 127.0.0.1:" in server.output()
        assert "hunter2" not in server.output()
