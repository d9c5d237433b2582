"""The connection driver without any I/O: a recording adapter, a hand-moved clock.

Every decision the server makes about a connection (admission, deadlines,
keepalive, calls, closing) lives in :class:`ConnectionDriver`; both I/O paths
only carry out what it asks. These tests drive it directly and read what it
asked for, so each rule is checked exactly, with no socket and no timing: the
handshake, calls, keepalive, closing and expiry. Rate limiters and connection
counters that decide in a task are in ``test_driver_gates.py``.
"""

from __future__ import annotations

import logging
import math
import time

import anyio
import pytest

from securemcp import Principal, SecurityPolicy, StaticTokenAuthenticator
from securemcp.backends._calls import guarded

from .driver_helpers import call, driven, frames, output, upgraded
from .helpers import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    UPGRADE_REQUEST,
    client_frame,
    close_payload,
    split_server_frames,
)

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


def test_a_drivers_task_that_fails_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    driver, _, _ = driven()

    async def failing() -> None:
        raise RuntimeError("bug")

    anyio.run(guarded, failing, driver)
    assert "unexpected error on the connection from ('127.0.0.1', 40000)" in caplog.text


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
