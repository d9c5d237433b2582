"""A reconnecting client waits as long as a refusal's ``Retry-After`` asks (up to its maximum).

The schedule's arithmetic and the header's two forms (seconds, an HTTP date)
are checked without waiting; one test per backend then has a real server
refuse the reconnection with 429 and ``Retry-After: 1`` (over its per-address
cap) and measures the gap between two refused attempts, which a backoff of
milliseconds alone would make far shorter.
"""

from __future__ import annotations

import email.utils
import logging
import time

import anyio
import pytest

from securemcp import HandshakeRejected, SecureMCPError
from securemcp.backends._reconnect import retry_after
from securemcp.security import SecurityPolicy
from securemcp.transport import Backoff, WebSocketClient

from .reconnect_helpers import Stalls, client_log, cut_and_see, make_app, relayed_server, url

pytestmark = pytest.mark.timeout(30)

NOW = 1_800_000_000.0


def rejected(*headers: tuple[str, str]) -> HandshakeRejected:
    return HandshakeRejected(429, b"", headers)


def test_a_delay_is_no_shorter_than_asked_up_to_the_maximum() -> None:
    backoff = Backoff(initial=0.1, maximum=5.0, jitter=0.0)
    assert backoff.delay(0) == 0.1
    assert backoff.delay(0, at_least=2.0) == 2.0
    assert backoff.delay(0, at_least=3600.0) == 5.0  # a server cannot park a client for an hour
    assert backoff.delay(6, at_least=1.0) == 5.0  # the backoff's own delay is longer already


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ((("retry-after", "1"),), 1.0),
        ((("retry-after", " 120 "),), 120.0),
        ((("retry-after", email.utils.formatdate(NOW + 30, usegmt=True)),), 30.0),
        ((("retry-after", email.utils.formatdate(NOW - 30, usegmt=True)),), 0.0),
        ((("retry-after", "soon"),), 0.0),
        ((("retry-after", "-5"),), 0.0),
        ((), 0.0),
    ],
)
def test_retry_after_reads_seconds_or_a_date(
    headers: tuple[tuple[str, str], ...], seconds: float
) -> None:
    assert retry_after(rejected(*headers), NOW) == seconds


def test_a_failure_without_an_answer_asks_for_nothing() -> None:
    assert retry_after(OSError("connection refused"), NOW) == 0.0
    assert retry_after(SecureMCPError("timed out"), NOW) == 0.0


class Refused(logging.Handler):
    """Notes when the client logs a reconnection refused with 429; set once two were."""

    def __init__(self) -> None:
        super().__init__()
        self.at: list[float] = []
        self.twice = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "HTTP 429" in record.getMessage():
            self.at.append(time.monotonic())
            if len(self.at) == 2:
                self.twice.set()


@pytest.mark.anyio
async def test_a_refusal_with_retry_after_is_waited_out(anyio_backend: str) -> None:
    stalls = Stalls()
    refused = Refused()
    # Milliseconds of backoff: only the server's Retry-After can space the attempts by a second.
    quick = Backoff(initial=0.01, maximum=5.0, factor=1.0)
    capped = SecurityPolicy(max_connections_per_address=1)
    with client_log(refused):
        async with relayed_server(make_app(stalls), security=capped) as (server, relay):
            with anyio.fail_after(10):
                async with WebSocketClient(url(relay), reconnect=quick) as client:
                    await cut_and_see(client, relay, stalls)
                    # 127.0.0.1's one slot, taken before the client can come back.
                    async with WebSocketClient(url(server)) as occupant:
                        await relay.start()
                        await refused.twice.wait()
                        assert not client.closed
                        assert await occupant.invoke_tool("echo", {"message": "mine"}) == "mine"
                    await client.wait_reconnected()
                    assert await client.invoke_tool("echo", {"message": "x"}) == "x"
    first, second = refused.at[:2]
    assert second - first >= 1.0
