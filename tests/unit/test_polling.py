"""Polling hints, ETags and the per-user token bucket, without I/O."""

from __future__ import annotations

import pytest

from service.api.polling import RateLimiter, etag_for, etag_matches, retry_after_hint


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("status", "progress", "hint"),
    [
        ("pending", 0, 1),
        ("in_progress", 0, 1),
        ("in_progress", 9, 1),
        ("in_progress", 20, 2),
        ("in_progress", 50, 3),
        ("in_progress", 69, 3),
        ("in_progress", 75, 2),
        ("in_progress", 90, 1),
        ("in_progress", 99, 1),
        ("cancelling", 50, 1),
        ("completed", 100, None),
        ("failed", 40, None),
        ("rolled_back", 40, None),
        ("cancelled", 0, None),
    ],
)
def test_retry_after_is_short_at_the_edges_long_in_the_middle(
    status: str, progress: int, hint: int | None
) -> None:
    assert retry_after_hint(status, progress) == hint


def test_middle_hint_is_longer_than_edges() -> None:
    hints = [retry_after_hint("in_progress", p) for p in range(100)]
    assert hints[0] == hints[99] == min(h for h in hints if h is not None)
    assert hints[50] == max(h for h in hints if h is not None) > hints[0]


def test_etag_changes_with_the_body_and_matches_if_none_match() -> None:
    a, b = etag_for(b'{"progress":1}'), etag_for(b'{"progress":2}')
    assert a != b and a.startswith('"') and a.endswith('"')
    assert etag_matches(a, a)
    assert etag_matches(f'"other", {a}', a)
    assert etag_matches(f"W/{a}", a)
    assert etag_matches("*", a)
    assert not etag_matches(b, a)
    assert not etag_matches(None, a)
    assert not etag_matches("", a)


def test_bucket_allows_the_rate_then_refuses_with_a_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock)
    assert all(limiter.acquire("u") == 0 for _ in range(10))
    wait = limiter.acquire("u")
    assert wait == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.acquire("u") == 0
    assert limiter.acquire("u") > 0


def test_buckets_are_per_user() -> None:
    limiter = RateLimiter(2, clock=FakeClock())
    assert limiter.acquire("a") == 0 and limiter.acquire("a") == 0
    assert limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0


def test_refill_never_exceeds_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock)
    limiter.acquire("u")
    clock.now += 3600
    assert sum(limiter.acquire("u") == 0 for _ in range(20)) == 5


def test_slow_rate_waits_more_than_a_second() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0.5, clock=clock)
    assert limiter.acquire("u") == 0
    assert limiter.acquire("u") == pytest.approx(2.0)


def test_memory_is_bounded_by_pruning_idle_buckets() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, max_keys=100)
    for i in range(100):
        limiter.acquire(i)
    clock.now += 10  # every bucket refilled: nothing worth keeping
    limiter.acquire("new")
    assert len(limiter) == 1
    for i in range(500):  # all busy at once: still bounded
        limiter.acquire(("busy", i))
    assert len(limiter) <= 100
