"""The ingest token bucket: counted in alerts, admits while it holds one alert's worth, charges with debt."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from teleops.domain.token_bucket import TokenBucket


def test_a_full_bucket_admits_its_burst_then_asks_to_wait_for_one_alert() -> None:
    bucket = TokenBucket.full(rate=1.0, capacity=3, now=0.0)
    for _ in range(3):
        assert bucket.wait(0.0) == 0.0
        bucket.charge(1, 0.0)
    assert bucket.wait(0.0) == pytest.approx(1.0)
    assert bucket.wait(0.5) == pytest.approx(0.5)
    assert bucket.wait(1.0) == 0.0


def test_a_batch_larger_than_the_burst_gets_through_once_and_is_paid_for_after() -> None:
    bucket = TokenBucket.full(rate=2.0, capacity=10, now=0.0)
    bucket.charge(25, 0.0)  # 15 alerts of debt
    assert bucket.wait(0.0) == pytest.approx(8.0)  # (1 - -15) / 2
    assert not bucket.is_full(12.0)
    assert bucket.is_full(12.5)


def test_a_clock_stepping_back_neither_refills_nor_breaks() -> None:
    bucket = TokenBucket.full(rate=1.0, capacity=2, now=100.0)
    bucket.charge(2, 100.0)
    assert bucket.wait(50.0) == pytest.approx(1.0)
    assert bucket.wait(101.0) == 0.0


def test_retry_after_is_whole_seconds_and_never_zero() -> None:
    assert TokenBucket.retry_after(0.01) == 1
    assert TokenBucket.retry_after(1.0) == 1
    assert TokenBucket.retry_after(1.2) == 2


def test_a_bucket_needs_a_rate_and_room_for_one_alert() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket.full(rate=0, capacity=5, now=0)
    with pytest.raises(ValueError, match="capacity >= 1"):
        TokenBucket.full(rate=1, capacity=0.5, now=0)


@example(rate=0.1, capacity=1, requests=[(0.0, 300), (20.0, 300), (20.0, 300)])  # big batches, tiny burst
@given(
    rate=st.floats(min_value=0.1, max_value=100),
    capacity=st.integers(min_value=1, max_value=500),
    requests=st.lists(st.tuples(st.floats(min_value=0, max_value=30), st.integers(1, 300)), max_size=200),
)
def test_over_any_run_no_more_than_the_burst_plus_the_rate_plus_one_batch_is_admitted(
    rate: float, capacity: int, requests: list[tuple[float, int]]
) -> None:
    bucket = TokenBucket.full(rate=rate, capacity=capacity, now=0.0)
    now, admitted = 0.0, 0
    for gap, alerts in requests:
        now += gap
        if bucket.wait(now) == 0.0:
            bucket.charge(alerts, now)
            admitted += alerts
    largest = max((alerts for _, alerts in requests), default=0)
    assert admitted <= capacity + rate * now + largest + 1e-6
