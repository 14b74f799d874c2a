"""Status polling made cheap: ETags, a Retry-After hint that follows progress, a per-user limit.

The rate limiter is a token bucket per user in this process's memory: with N API processes
behind a load balancer a user may reach up to N times the limit. That is the intended trade:
no shared store on the hottest endpoint, and the limit still stops a runaway poll loop.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from fastapi import Request

from service.errors import RateLimited

__all__ = ["RateLimiter", "etag_for", "etag_matches", "limiter_for", "retry_after_hint"]

# Seed 001: poll fast at the start and near the end, slower in the middle of the work.
HINT_EDGE_SECONDS = 1
HINT_SHOULDER_SECONDS = 2
HINT_MIDDLE_SECONDS = 3


def retry_after_hint(status: str, progress: int) -> int | None:
    """Seconds until the next poll is worth it; None once nothing will change any more."""
    if status in ("completed", "failed", "rolled_back", "cancelled"):
        return None
    if status in ("pending", "cancelling"):
        return HINT_EDGE_SECONDS  # about to start, or about to stop: worth watching closely
    if progress < 10 or progress >= 90:
        return HINT_EDGE_SECONDS
    if progress < 30 or progress >= 70:
        return HINT_SHOULDER_SECONDS
    return HINT_MIDDLE_SECONDS


def etag_for(body: bytes) -> str:
    """A strong validator of the exact representation."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match semantics (weak comparison, RFC 9110 13.1.2)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in if_none_match.split(","))


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets per key: `rate` tokens a second, up to `burst` saved up."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[Any, _Bucket] = {}

    def acquire(self, key: Any) -> float:
        """Take one token: 0.0 if allowed, else the seconds until a token is available."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        # A bucket that has refilled completely says nothing a fresh one would not.
        full_after = self.burst / self.rate
        for key in [k for k, b in self._buckets.items() if now - b.stamp >= full_after]:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:  # all busy: forget the oldest half
            oldest = sorted(self._buckets, key=lambda k: self._buckets[k].stamp)
            for key in oldest[: len(oldest) // 2]:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


def limiter_for(request: Request) -> RateLimiter:
    """The app's status limiter, made on first use from EXPORTER_STATUS_RATE_LIMIT."""
    state = request.app.state
    limiter: RateLimiter | None = getattr(state, "status_limiter", None)
    if limiter is None:
        limiter = state.status_limiter = RateLimiter(state.settings.status_rate_limit)
    return limiter


def check_rate(request: Request, user_id: UUID) -> None:
    """Raise RateLimited (429 with Retry-After) when the user polls faster than allowed."""
    wait = limiter_for(request).acquire(user_id)
    if wait > 0:
        limit = request.app.state.settings.status_rate_limit
        raise RateLimited(f"too many status requests (limit {limit:g}/s per user)", retry_after=wait)
