"""Token buckets, the rate limiter and connection caps, on an explicit clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securemcp.ratelimit import ConnectionCounter, RateLimiter, TokenBucket

# TokenBucket


def test_bucket_allows_a_burst_then_names_the_exact_wait() -> None:
    bucket = TokenBucket(rate=2, burst=3)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == 0.5
    assert bucket.take(0.25) == 0.25
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) == 0.5


def test_refused_takes_consume_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.take(10.0) == 0.0
    assert [bucket.take(10.5) for _ in range(5)] == [0.5] * 5
    assert bucket.take(11.0) == 0.0


def test_refill_is_capped_at_the_burst() -> None:
    bucket = TokenBucket(rate=10, burst=2)
    bucket.take(0.0)
    bucket.take(0.0)
    assert [bucket.take(3600.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.1)]


def test_costs() -> None:
    bucket = TokenBucket(rate=1, burst=5)
    assert bucket.take(0.0, cost=4) == 0.0
    assert bucket.retry_after(0.0, cost=3) == 2.0
    assert bucket.take(0.0, cost=1) == 0.0  # retry_after took nothing
    for cost in (0, -1, 5.5):
        with pytest.raises(ValueError, match="cost"):
            bucket.take(0.0, cost=cost)


def test_time_going_backwards_counts_as_no_time() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.take(100.0) == 0.0
    assert bucket.take(50.0) == 1.0  # no refill, and no negative wait
    # The bucket keeps the latest time seen, so jumping back and forth mints nothing.
    assert bucket.take(100.5) == 0.5
    assert bucket.take(40.0) == 0.5
    assert bucket.take(101.0) == 0.0


def test_huge_gaps_just_fill_the_bucket() -> None:
    bucket = TokenBucket(rate=1e300, burst=2)
    bucket.take(-1e300)
    bucket.take(-1e300)
    assert bucket.take(1e300) == 0.0  # elapsed * rate overflows to inf; capped
    assert bucket.take(1e300) == 0.0
    assert bucket.take(1e300) > 0.0


def test_is_full() -> None:
    bucket = TokenBucket(rate=1, burst=2)
    assert bucket.is_full(0.0)
    bucket.take(0.0)
    assert not bucket.is_full(0.5)
    assert not bucket.is_full(-5.0)
    assert bucket.is_full(1.0)


@pytest.mark.parametrize(
    ("rate", "burst"), [(0, 1), (-1, 1), (math.inf, 1), (math.nan, 1), (1, 0.5), (1, math.inf)]
)
def test_bucket_refuses_bad_settings(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="TokenBucket"):
        TokenBucket(rate, burst)


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_bucket_refuses_a_clock_that_is_not_a_number(now: float) -> None:
    bucket = TokenBucket(1, 1)
    with pytest.raises(ValueError, match="now"):
        bucket.take(now)
    with pytest.raises(ValueError, match="now"):
        bucket.is_full(now)


def _times(bound: float) -> st.SearchStrategy[list[float]]:
    return st.lists(st.floats(min_value=-bound, max_value=bound), min_size=1, max_size=80)


@given(
    rate=st.floats(min_value=0.01, max_value=1000),
    burst=st.integers(min_value=1, max_value=50),
    offsets=st.lists(st.floats(min_value=-5, max_value=10), min_size=1, max_size=80),
)
def test_bucket_never_allows_more_than_burst_plus_refill(
    rate: float, burst: int, offsets: list[float]
) -> None:
    # Times wander forwards and backwards; "elapsed" is how far the latest time moved.
    times = [0.0]
    for offset in offsets:
        times.append(times[-1] + offset)
    bucket = TokenBucket(rate, burst)
    allowed = [bucket.take(now) == 0.0 for now in times]
    latest = [max(times[: k + 1]) for k in range(len(times))]
    for i in range(len(times)):
        for j in range(i, len(times)):
            bound = burst + rate * (latest[j] - latest[i])
            assert sum(allowed[i : j + 1]) <= bound + 1e-6


@given(
    rate=st.floats(min_value=0.001, max_value=1000),
    burst=st.integers(min_value=1, max_value=20),
    times=_times(1e3),
)
def test_waiting_retry_after_is_enough(rate: float, burst: int, times: list[float]) -> None:
    # Exact up to float rounding of `now + wait`, which the 1e-9 token tolerance
    # absorbs at these magnitudes (RateLimiter rounds up and needs no such care).
    bucket = TokenBucket(rate, burst)
    latest = -math.inf
    for now in times:
        latest = max(latest, now)
        wait = bucket.take(now)
        if wait > 0.0:
            assert bucket.take(latest + wait) == 0.0
            latest += wait


# RateLimiter


@given(
    rate=st.floats(min_value=0.001, max_value=1e6),
    burst=st.integers(min_value=1, max_value=20),
    times=_times(1e9),
)
def test_limiter_retry_after_is_whole_milliseconds_and_enough(
    rate: float, burst: int, times: list[float]
) -> None:
    limiter = RateLimiter(rate, burst, per_tool={"t": (rate / 2, burst)})
    latest = -math.inf
    for now in times:
        latest = max(latest, now)
        wait = limiter.check("k", "t", now)
        if wait > 0.0:
            assert wait >= 0.001
            assert wait * 1000 == pytest.approx(round(wait * 1000))
            assert limiter.check("k", "t", latest + wait) == 0.0
            latest += wait


def test_limiter_counts_each_key_separately() -> None:
    limiter = RateLimiter(rate=1, burst=2)
    assert [limiter.check("alice", "echo", 0.0) for _ in range(3)] == [0.0, 0.0, 1.0]
    assert limiter.check("bob", "echo", 0.0) == 0.0
    assert limiter.check("alice", None, 1.0) == 0.0


def test_per_tool_limits_apply_on_top_of_the_key_limit() -> None:
    limiter = RateLimiter(rate=1, burst=2, per_tool={"slow": (0.5, 1)})
    assert limiter.check("k", "slow", 0.0) == 0.0
    assert limiter.check("k", "slow", 0.0) == 2.0  # the tool's bucket refuses...
    assert limiter.check("k", "fast", 0.0) == 0.0  # ...and took nothing from the key's
    assert limiter.check("k", "fast", 0.0) == 1.0
    assert limiter.check("k", "slow", 1.0) == 1.0  # the longer of the two waits
    assert limiter.check("other", "slow", 0.0) == 0.0


def test_a_key_refusal_takes_nothing_from_the_tool_bucket() -> None:
    limiter = RateLimiter(rate=1, burst=1, per_tool={"slow": (0.1, 1)})
    assert limiter.check("k", "fast", 0.0) == 0.0
    assert limiter.check("k", "slow", 0.0) == 1.0
    assert limiter.check("k", "slow", 1.0) == 0.0  # the tool bucket was still full


def test_limiter_evicts_the_least_recently_used_bucket() -> None:
    limiter = RateLimiter(rate=0.001, burst=1, max_keys=3)
    for key in ("a", "b", "c"):
        assert limiter.check(key, None, 0.0) == 0.0
    assert limiter.check("a", None, 1.0) > 0.0  # touches a: b is now the oldest
    assert limiter.check("d", None, 1.0) == 0.0
    assert len(limiter) == 3
    # b was evicted, so it starts again with a full bucket: one burst of extra allowance.
    assert limiter.check("b", None, 1.0) == 0.0
    assert limiter.check("a", None, 1.0) > 0.0  # a was kept, still drained


def test_limiter_memory_stays_bounded() -> None:
    limiter = RateLimiter(rate=0.001, burst=1, per_tool={"t": (0.001, 1)}, max_keys=10)
    for n in range(1000):
        limiter.check(n, "t", float(n))
        assert len(limiter) <= 10


def test_limiter_drops_idle_full_buckets() -> None:
    limiter = RateLimiter(rate=1, burst=1)
    limiter.check("a", None, 0.0)
    limiter.check("b", None, 0.5)
    assert len(limiter) == 2
    limiter.check("c", None, 1.2)  # a has refilled, b has not
    assert len(limiter) == 2
    limiter.check("c", None, 10.0)
    assert len(limiter) == 1


def test_limiter_forget() -> None:
    limiter = RateLimiter(rate=0.001, burst=1, per_tool={"t": (0.001, 1)})
    limiter.check(("connection", 1), "t", 0.0)
    limiter.check(("connection", 2), "t", 0.0)
    limiter.forget(("connection", 1))
    limiter.forget(("connection", 99))
    assert len(limiter) == 2
    assert limiter.check(("connection", 1), "t", 0.0) == 0.0


def test_limiter_with_time_going_backwards() -> None:
    limiter = RateLimiter(rate=1, burst=1)
    assert limiter.check("k", None, 100.0) == 0.0
    assert limiter.check("k", None, 0.0) == 1.0
    assert limiter.check("k", None, 101.0) == 0.0


def test_limiter_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="RateLimiter"):
        RateLimiter(0, 1)
    with pytest.raises(ValueError, match="per_tool"):
        RateLimiter(1, 1, per_tool={"t": (1, 0)})
    for max_keys in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="max_keys"):
            RateLimiter(1, 1, max_keys=max_keys)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="now"):
        RateLimiter(1, 1).check("k", None, math.nan)


# ConnectionCounter


def test_connection_counter_caps_and_releases() -> None:
    counter = ConnectionCounter(max_per_key=2)
    assert counter.acquire("10.0.0.1")
    assert counter.acquire("10.0.0.1")
    assert not counter.acquire("10.0.0.1")
    assert counter.acquire("10.0.0.2")
    assert counter.count("10.0.0.1") == 2
    counter.release("10.0.0.1")
    assert counter.acquire("10.0.0.1")
    for _ in range(2):
        counter.release("10.0.0.1")
    counter.release("10.0.0.2")
    assert len(counter) == 0  # keys at zero are forgotten


def test_connection_counter_never_goes_negative() -> None:
    counter = ConnectionCounter(max_per_key=1)
    counter.release("k")
    counter.release("k")
    assert counter.count("k") == 0
    assert counter.acquire("k")
    assert not counter.acquire("k")


def test_connection_counter_refuses_bad_settings() -> None:
    for value in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="max_per_key"):
            ConnectionCounter(value)  # type: ignore[arg-type]
