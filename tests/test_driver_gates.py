"""The connection driver's gates: rate limits and shared connection caps decided in tasks.

An asynchronous rate limiter decides in each call's task; a shared connection
counter decides in a task while the core holds what follows, refuses with 429,
gives slots back however the connection ends, and its failures are refused or
logged. Driven without I/O, as in ``test_driver.py``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable

import anyio
import pytest

from securemcp import Principal, SecurityPolicy, StaticTokenAuthenticator
from securemcp.backends._calls import run_call
from securemcp.backends._driver import ConnectionDriver
from securemcp.ratelimit import ConnectionCounter, RateLimiter

from .driver_helpers import FakeServer, Recorder, call, driven, frames, output, upgraded
from .helpers import UPGRADE_REQUEST, split_server_frames


def test_calls_over_the_rate_limit_get_31029() -> None:
    limiter = RateLimiter(rate=1.0, burst=1)
    driver, _, _ = upgraded(security=SecurityPolicy(rate_limiter=limiter))
    driver.data_received(call("quick", 1) + call("quick", 2))
    first, second = (payload for _, payload in frames(driver))
    assert first == b'{"id":1,"result":"hi"}'
    assert b'"code":-31029' in second


class AnsweringLimiter:
    """An asynchronous rate limiter that allows ``allowed`` calls, then asks for 0.25 s."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.asked: list[tuple[Hashable, str | None]] = []
        self.forgotten: list[Hashable] = []

    async def acheck(self, key: Hashable, tool: str | None) -> float:
        self.asked.append((key, tool))
        if self.allowed > 0:
            self.allowed -= 1
            return 0.0
        return 0.25

    def forget(self, key: Hashable) -> None:
        self.forgotten.append(key)


def test_an_asynchronous_rate_limiter_decides_in_each_calls_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="securemcp.security")
    limiter = AnsweringLimiter(allowed=1)
    driver, adapter, _ = upgraded(security=SecurityPolicy(rate_limiter=limiter))
    driver.data_received(call("quick", 1) + call("quick", 2))
    # Even a tool that could run inline waits for the decision in a task.
    assert output(driver) == b""
    assert len(adapter.spawned) == 2
    assert limiter.asked == []

    async def run_spawned() -> None:
        threads = anyio.CapacityLimiter(1)
        for spawned, gate in zip(adapter.spawned, adapter.gates, strict=True):
            assert gate is not None
            await run_call(driver, spawned, threads, gate)

    anyio.run(run_spawned)
    first, second = (payload for _, payload in frames(driver))
    assert first == b'{"id":1,"result":"hi"}'
    assert b'"code":-31029' in second
    assert b'"retry_after":0.25' in second
    assert "call to 'quick' by connection from" in caplog.text
    assert "rate limited (retry after 0.250 s)" in caplog.text
    assert limiter.asked == [(("connection", id(driver)), "quick")] * 2
    driver.connection_lost()
    assert limiter.forgotten == [("connection", id(driver))]


class SharedCounter:
    """An asynchronous connection counter (``AsyncConnectionCounter``) held in memory."""

    def __init__(self, max_per_key: int) -> None:
        self.max_per_key = max_per_key
        self.local = ConnectionCounter(max_per_key)
        self.log: list[tuple[str, Hashable]] = []

    async def acquire(self, key: Hashable) -> bool:
        self.log.append(("acquire", key))
        return self.local.acquire(key)

    async def release(self, key: Hashable) -> None:
        self.log.append(("release", key))
        self.local.release(key)

    def held(self, key: Hashable) -> int:
        return self.local.count(key)


HERE = ("address", "127.0.0.1")


def capped_upgrade(
    counter: SharedCounter, request: bytes = UPGRADE_REQUEST
) -> tuple[ConnectionDriver, Recorder, FakeServer]:
    """A driver whose address cap is ``counter``, fed ``request`` (an upgrade, at least)."""
    driver, adapter, server = driven(security=SecurityPolicy(max_connections_per_address=counter))
    driver.data_received(request)
    return driver, adapter, server


def run_started(adapter: Recorder) -> None:
    """Run the driver's own tasks (and those they start) to completion, in order."""

    async def run() -> None:
        while adapter.started:
            await adapter.started.pop(0)()

    anyio.run(run)


def test_a_shared_cap_decides_in_a_task_while_the_core_holds_what_follows() -> None:
    shared = SharedCounter(2)
    driver, adapter, _ = capped_upgrade(shared, UPGRADE_REQUEST + call("quick", 1))
    # Nothing yet: the upgrade awaits the counter; the call waits in the core.
    assert output(driver) == b""
    assert not driver.wants_read
    assert adapter.deadline == 110.0  # the handshake deadline still runs
    assert len(adapter.started) == 1
    wakes = adapter.wakes
    run_started(adapter)
    head, _, rest = output(driver).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    [_, (_, answer)] = split_server_frames(rest)
    assert answer == b'{"id":1,"result":"hi"}'
    assert adapter.wakes > wakes
    assert adapter.deadline == math.inf
    assert shared.held(HERE) == 1
    assert driver.settings.guard.open_for_address("127.0.0.1") == 1
    # The connection ends: its slot goes back in a task of its own.
    driver.connection_lost()
    assert shared.held(HERE) == 1
    run_started(adapter)
    assert shared.held(HERE) == 0
    assert shared.log == [("acquire", HERE), ("release", HERE)]


def test_a_shared_cap_refuses_with_429_and_a_local_cap_gives_its_slot_back() -> None:
    shared = SharedCounter(1)
    shared.local.acquire(("principal", "ann"))
    policy = SecurityPolicy(
        authenticator=StaticTokenAuthenticator({"t0ken": Principal("ann")}),
        max_connections_per_principal=shared,
        max_connections_per_address=1,
    )
    driver, adapter, _ = driven(security=policy)
    driver.data_received(
        UPGRADE_REQUEST.replace(b"\r\n\r\n", b"\r\nAuthorization: Bearer t0ken\r\n\r\n")
    )
    guard = driver.settings.guard
    assert guard.open_for_address("127.0.0.1") == 1  # the local cap is taken at once
    run_started(adapter)
    answer = output(driver)
    assert answer.startswith(b"HTTP/1.1 429 ")
    assert answer.endswith(b"too many connections for this principal\n")
    assert driver.finished
    assert guard.open_for_address("127.0.0.1") == 0
    assert guard.open_for_principal("ann") == 1  # the one held before, untouched


@pytest.mark.parametrize("ending", ["timeout", "go_away", "lost"])
def test_a_connection_ending_while_its_cap_is_decided_gives_the_slot_back(ending: str) -> None:
    shared = SharedCounter(1)
    driver, adapter, _ = capped_upgrade(shared)
    if ending == "timeout":
        adapter.clock = 110.0
        driver.on_deadline()
        assert adapter.aborted
    elif ending == "go_away":
        driver.go_away()
        assert adapter.aborted
    driver.connection_lost()
    # The decision comes for nobody: the task gives the slot back itself.
    run_started(adapter)
    assert shared.log == [("acquire", HERE), ("release", HERE)]
    assert shared.held(HERE) == 0
    assert output(driver) == b""


def test_a_refusal_arriving_after_the_connection_ended_takes_nothing() -> None:
    shared = SharedCounter(1)
    shared.local.acquire(HERE)
    driver, adapter, _ = capped_upgrade(shared)
    driver.connection_lost()
    run_started(adapter)
    assert shared.log == [("acquire", HERE)]
    assert shared.held(HERE) == 1


def test_a_decision_arriving_while_the_server_drains_gets_503() -> None:
    shared = SharedCounter(1)
    driver, adapter, server = capped_upgrade(shared)
    server.draining = True
    run_started(adapter)
    assert output(driver).startswith(b"HTTP/1.1 503 ")
    assert shared.held(HERE) == 0
    driver.connection_lost()
    assert adapter.started == []  # nothing more to give back


def test_a_counter_that_raises_refuses_with_500(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(SharedCounter):
        async def acquire(self, key: Hashable) -> bool:
            raise RuntimeError("oops")

    driver, adapter, _ = capped_upgrade(Broken(1))
    run_started(adapter)
    assert output(driver).startswith(b"HTTP/1.1 500 ")
    assert "the connection counter raised RuntimeError" in caplog.text


def test_a_counter_failing_to_release_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Stuck(SharedCounter):
        async def release(self, key: Hashable) -> None:
            raise OSError("gone")

    driver, adapter, _ = capped_upgrade(Stuck(1))
    run_started(adapter)
    assert output(driver).startswith(b"HTTP/1.1 101 ")
    driver.connection_lost()
    run_started(adapter)
    assert "the connection counter raised OSError on release" in caplog.text


def test_a_synchronous_rate_limiter_adds_no_gate() -> None:
    limiter = RateLimiter(rate=1.0, burst=5)
    driver, adapter, _ = upgraded(security=SecurityPolicy(rate_limiter=limiter))
    driver.data_received(call("slow", 1))
    assert adapter.gates == [None]
