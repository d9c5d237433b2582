"""The connection driver without any I/O: a recording adapter, a hand-moved clock.

Every decision the server makes about a connection (admission, deadlines,
keepalive, calls, closing) lives in :class:`ConnectionDriver`; both I/O paths
only carry out what it asks. These tests drive it directly and read what it
asked for, so each rule is checked exactly, with no socket and no timing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from securemcp import Principal, SecureMCP, SecurityPolicy, StaticTokenAuthenticator
from securemcp.backends._calls import Gate, guarded, run_call
from securemcp.backends._driver import ConnectionDriver
from securemcp.backends._pubsub import LoopThread
from securemcp.backends._security import ConnectionGuard
from securemcp.backends._settings import ServerSettings
from securemcp.protocol import ToolCall
from securemcp.ratelimit import ConnectionCounter, RateLimiter

from .helpers import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    UPGRADE_REQUEST,
    client_frame,
    close_payload,
    split_server_frames,
    text_frame,
)


def tool_app() -> SecureMCP:
    app = SecureMCP("driven")

    @app.tool()
    async def quick(message: str) -> str:
        return message

    @app.tool()
    async def slow(message: str) -> str:
        await _Never()
        return message

    return app


class _Never:
    def __await__(self) -> Any:
        yield


@dataclass
class Recorder:
    """The adapter: records what the driver asks for; the clock moves by hand."""

    clock: float = 100.0
    wakes: int = 0
    aborted: bool = False
    deadline: float = math.inf
    spawned: list[ToolCall] = field(default_factory=list)
    cancelled: list[ToolCall] = field(default_factory=list)
    gates: list[Gate | None] = field(default_factory=list)
    started: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    is_reading: bool = True

    def now(self) -> float:
        return self.clock

    def wake(self) -> None:
        self.wakes += 1

    def spawn(self, call: ToolCall, gate: Gate | None = None) -> Callable[[], object]:
        self.spawned.append(call)
        self.gates.append(gate)
        return lambda: self.cancelled.append(call)

    def start(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.started.append(work)

    def set_deadline(self, when: float) -> None:
        self.deadline = when

    def abort(self) -> None:
        self.aborted = True

    def buffered(self) -> int:
        return 0

    def reading(self) -> bool:
        return self.is_reading


@dataclass
class FakeServer:
    settings: ServerSettings
    draining: bool = False
    finished_calls: int = 0
    loop: LoopThread = field(
        default_factory=lambda: LoopThread(threading.get_ident(), None)  # type: ignore[arg-type]
    )

    def call_finished(self) -> None:
        self.finished_calls += 1


def driven(
    *, refuse: bool = False, security: SecurityPolicy | None = None, **options: Any
) -> tuple[ConnectionDriver, Recorder, FakeServer]:
    settings: dict[str, Any] = {
        "limits": None,
        "handshake_timeout": 10.0,
        "ping_interval": 20.0,
        "ping_timeout": 20.0,
        "close_timeout": 5.0,
        "ssl": None,
        **options,
    }
    guard = ConnectionGuard(security if security is not None else SecurityPolicy())
    server = FakeServer(ServerSettings(tool_app(), guard=guard, **settings))
    adapter = Recorder()
    driver = ConnectionDriver(server, adapter, ("127.0.0.1", 40000), refuse=refuse)
    driver.start()
    return driver, adapter, server


def upgraded(**options: Any) -> tuple[ConnectionDriver, Recorder, FakeServer]:
    driver, adapter, server = driven(**options)
    driver.data_received(UPGRADE_REQUEST)
    head = output(driver)
    assert head.startswith(b"HTTP/1.1 101 ")
    return driver, adapter, server


def output(driver: ConnectionDriver) -> bytes:
    """Everything the driver has to write now, joined."""
    return b"".join(driver.take_output())


def frames(driver: ConnectionDriver) -> list[tuple[int, bytes]]:
    return split_server_frames(output(driver))


def call(name: str, request_id: int = 1, message: str = "hi") -> bytes:
    return text_frame(
        {"id": request_id, "method": "invoke_tool",
         "params": {"tool_name": name, "params": {"message": message}}}
    )  # fmt: skip


# The handshake


def test_the_handshake_deadline_runs_from_the_start_and_aborts() -> None:
    driver, adapter, _ = driven()
    assert adapter.deadline == 110.0
    driver.data_received(UPGRADE_REQUEST[:20])
    adapter.clock = 110.0
    driver.on_deadline()
    assert adapter.aborted
    assert output(driver) == b""  # a timed-out handshake gets no answer


def test_an_accepted_upgrade_lifts_the_deadline_and_greets() -> None:
    driver, adapter, _ = driven()
    driver.data_received(UPGRADE_REQUEST)
    head, _, rest = output(driver).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert adapter.deadline == math.inf
    assert not adapter.aborted
    [(_, welcome)] = split_server_frames(rest)
    assert welcome.startswith(b'{"id":"welcome","result":{"message":"Connected to driven"')


@pytest.mark.parametrize(
    ("refuse", "draining", "reason"),
    [(True, False, "max_connections reached"), (False, True, "server shutting down")],
)
def test_a_full_or_draining_server_answers_503(
    refuse: bool, draining: bool, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    driver, _, server = driven(refuse=refuse)
    server.draining = draining
    caplog.set_level(logging.WARNING, logger="securemcp.security")
    driver.data_received(UPGRADE_REQUEST)
    assert output(driver).startswith(b"HTTP/1.1 503 ")
    assert driver.finished
    assert f"refused with 503: {reason}" in caplog.text


def test_a_refused_handshake_gets_the_policy_status() -> None:
    policy = SecurityPolicy(authenticator=StaticTokenAuthenticator({"t0ken": Principal("ann")}))
    driver, _, _ = driven(security=policy)
    driver.data_received(UPGRADE_REQUEST)
    assert output(driver).startswith(b"HTTP/1.1 401 ")
    assert driver.finished


# Calls


def test_a_call_that_cannot_suspend_is_answered_in_the_same_pass() -> None:
    driver, adapter, _ = upgraded()
    driver.data_received(call("quick"))
    [(_, payload)] = frames(driver)
    assert payload == b'{"id":1,"result":"hi"}'
    assert adapter.spawned == []


def test_a_call_that_suspends_gets_a_task_and_its_answer_when_done() -> None:
    driver, adapter, server = upgraded()
    driver.data_received(call("slow"))
    [spawned] = adapter.spawned
    assert driver.calls_in_flight == 1
    assert output(driver) == b""
    driver.call_done(spawned, "done")
    assert frames(driver) == [(0x1, b'{"id":1,"result":"done"}')]
    assert driver.calls_in_flight == 0
    assert server.finished_calls == 1
    # A second report for the same call (a race with a cancellation) is dropped.
    driver.call_done(spawned, "again")
    assert output(driver) == b""


def test_going_away_answers_running_calls_then_closes_with_1001() -> None:
    driver, adapter, _ = upgraded()
    driver.data_received(call("slow"))
    [spawned] = adapter.spawned
    driver.go_away()
    assert adapter.cancelled == [spawned]
    (_, answer), (opcode, payload) = frames(driver)
    assert answer.startswith(b'{"id":1,"error":{"code":-32800')
    assert (opcode, payload[:2]) == (OP_CLOSE, (1001).to_bytes(2, "big"))
    assert adapter.wakes >= 1
    # The close deadline now runs; the peer never answers: abort.
    assert adapter.deadline == adapter.clock + 5.0
    driver.on_deadline()
    assert adapter.aborted


def test_going_away_mid_handshake_just_aborts() -> None:
    driver, adapter, _ = driven()
    driver.go_away()
    assert adapter.aborted


def test_a_peer_that_vanishes_cancels_its_calls_and_frees_its_slots() -> None:
    driver, adapter, _ = upgraded()
    driver.data_received(call("slow"))
    driver.connection_lost()
    assert adapter.cancelled == adapter.spawned
    assert driver.finished
    assert adapter.deadline == math.inf


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


def run_started(adapter: Recorder) -> None:
    """Run the driver's own tasks (and those they start) to completion, in order."""

    async def run() -> None:
        while adapter.started:
            await adapter.started.pop(0)()

    anyio.run(run)


def test_a_shared_cap_decides_in_a_task_while_the_core_holds_what_follows() -> None:
    shared = SharedCounter(2)
    driver, adapter, _ = driven(security=SecurityPolicy(max_connections_per_address=shared))
    driver.data_received(UPGRADE_REQUEST + call("quick", 1))
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
    driver, adapter, _ = driven(security=SecurityPolicy(max_connections_per_address=shared))
    driver.data_received(UPGRADE_REQUEST)
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
    driver, adapter, _ = driven(security=SecurityPolicy(max_connections_per_address=shared))
    driver.data_received(UPGRADE_REQUEST)
    driver.connection_lost()
    run_started(adapter)
    assert shared.log == [("acquire", HERE)]
    assert shared.held(HERE) == 1


def test_a_decision_arriving_while_the_server_drains_gets_503() -> None:
    shared = SharedCounter(1)
    driver, adapter, server = driven(security=SecurityPolicy(max_connections_per_address=shared))
    driver.data_received(UPGRADE_REQUEST)
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

    driver, adapter, _ = driven(security=SecurityPolicy(max_connections_per_address=Broken(1)))
    driver.data_received(UPGRADE_REQUEST)
    run_started(adapter)
    assert output(driver).startswith(b"HTTP/1.1 500 ")
    assert "the connection counter raised RuntimeError" in caplog.text


def test_a_counter_failing_to_release_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Stuck(SharedCounter):
        async def release(self, key: Hashable) -> None:
            raise OSError("gone")

    driver, adapter, _ = driven(security=SecurityPolicy(max_connections_per_address=Stuck(1)))
    driver.data_received(UPGRADE_REQUEST)
    run_started(adapter)
    assert output(driver).startswith(b"HTTP/1.1 101 ")
    driver.connection_lost()
    run_started(adapter)
    assert "the connection counter raised OSError on release" in caplog.text


def test_a_drivers_task_that_fails_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    driver, _, _ = driven()

    async def failing() -> None:
        raise RuntimeError("bug")

    anyio.run(guarded, failing, driver)
    assert "unexpected error on the connection from ('127.0.0.1', 40000)" in caplog.text


def test_a_synchronous_rate_limiter_adds_no_gate() -> None:
    limiter = RateLimiter(rate=1.0, burst=5)
    driver, adapter, _ = upgraded(security=SecurityPolicy(rate_limiter=limiter))
    driver.data_received(call("slow", 1))
    assert adapter.gates == [None]


def test_calls_while_draining_are_answered_32800() -> None:
    driver, adapter, server = upgraded()
    server.draining = True
    driver.data_received(call("quick"))
    [(_, payload)] = frames(driver)
    assert b'"code":-32800' in payload
    assert adapter.spawned == []


# Keepalive


def test_keepalive_pings_when_due_and_closes_1011_without_a_pong() -> None:
    driver, adapter, _ = upgraded()
    driver.keepalive_tick(adapter.clock + 19.0)
    assert output(driver) == b""  # not due yet
    driver.keepalive_tick(adapter.clock + 20.0)
    [(opcode, payload)] = frames(driver)
    assert opcode == OP_PING
    assert len(payload) == 4
    driver.keepalive_tick(adapter.clock + 39.9)
    assert output(driver) == b""
    driver.keepalive_tick(adapter.clock + 40.0)
    [(opcode, payload)] = frames(driver)
    assert (opcode, payload[:2]) == (OP_CLOSE, (1011).to_bytes(2, "big"))


def test_the_right_pong_clears_the_deadline() -> None:
    driver, adapter, _ = upgraded()
    driver.keepalive_tick(adapter.clock + 20.0)
    [(_, payload)] = frames(driver)
    driver.data_received(client_frame(b"wrong", OP_PONG))
    driver.data_received(client_frame(payload, OP_PONG))
    driver.keepalive_tick(adapter.clock + 45.0)
    # Not closed: the next ping went out instead.
    [(opcode, _)] = frames(driver)
    assert opcode == OP_PING


def test_a_paused_connection_gets_a_fresh_pong_deadline() -> None:
    driver, adapter, _ = upgraded()
    driver.keepalive_tick(adapter.clock + 20.0)
    frames(driver)
    adapter.is_reading = False
    driver.keepalive_tick(adapter.clock + 50.0)
    assert output(driver) == b""  # its pong may sit unread: no verdict
    adapter.is_reading = True
    driver.keepalive_tick(adapter.clock + 69.0)
    assert output(driver) == b""
    driver.keepalive_tick(adapter.clock + 70.0)
    [(opcode, _)] = frames(driver)
    assert opcode == OP_CLOSE


# Closing and expiry


def test_a_close_from_the_peer_is_answered_and_ends_the_connection() -> None:
    driver, _, _ = upgraded()
    driver.data_received(client_frame(close_payload(1000, "bye"), OP_CLOSE))
    [(opcode, payload)] = frames(driver)
    assert (opcode, payload) == (OP_CLOSE, close_payload(1000, "bye"))
    assert driver.finished


def test_credentials_that_expire_close_the_connection_with_1008() -> None:
    expires = time.time() + 30.0
    authenticator = StaticTokenAuthenticator({"t0ken": Principal("ann", expires_at=expires)})
    driver, adapter, _ = driven(security=SecurityPolicy(authenticator=authenticator))
    driver.data_received(
        UPGRADE_REQUEST.replace(b"\r\n\r\n", b"\r\nAuthorization: Bearer t0ken\r\n\r\n")
    )
    assert output(driver).startswith(b"HTTP/1.1 101 ")
    # Armed on the loop's clock for what the wall clock says is left.
    assert adapter.clock + 29.0 < adapter.deadline <= adapter.clock + 30.0
    driver.on_deadline()  # early (the wall clock has not got there): armed again
    assert output(driver) == b""
    assert adapter.deadline > adapter.clock
    driver.conn.principal = Principal("ann", expires_at=time.time() - 1)
    driver._expires_at = time.time() - 1
    driver.on_deadline()
    [*_, (opcode, payload)] = frames(driver)
    assert (opcode, payload[:2]) == (OP_CLOSE, (1008).to_bytes(2, "big"))
    assert adapter.deadline == adapter.clock + 5.0  # now the close deadline
