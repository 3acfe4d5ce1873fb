"""Rate limits: a token bucket for messages to IB, a sliding window for MAX_ORDERS_PER_MINUTE.

IB's API allows 50 messages a second and disconnects a client that keeps exceeding it. ib_async
already holds its socket to 45 per sliding second (`Client.MaxRequests`), but by queueing without
limit and out of sight; the bucket makes the node's own bursts (a cancel-all over many orders)
wait where they can be bounded and cancelled. A bucket admits at most `burst + rate * T` in any
interval of T seconds, so a hard cap of C in every second needs `burst + rate <= C`.

Both take time from an injectable source so tests drive them with a fake clock and never sleep.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from typing import Protocol

import anyio

__all__ = ["AnyioTime", "SlidingWindowCounter", "TimeSource", "TokenBucket"]

# Float refills can land a hair short of a whole token; without this slack the bucket would
# go back to sleep for a few nanoseconds over and over.
_EPSILON = 1e-9


class TimeSource(Protocol):
    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class AnyioTime:
    """The event loop's clock, the one anyio's own timeouts use."""

    def monotonic(self) -> float:
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class TokenBucket:
    """At most `burst` at once, refilled at `rate` per second; waiters are served in order."""

    def __init__(
        self, rate: float = 45.0, burst: int = 45, clock: TimeSource | None = None
    ) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number, not {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst!r}")
        self.rate = rate
        self.burst = burst
        self._clock = clock if clock is not None else AnyioTime()
        self._tokens = float(burst)
        self._stamp: float | None = None  # read lazily: anyio's clock needs a running loop
        # One waiter at a time, in arrival order (anyio's Lock is fair), so a steady stream of
        # small requests cannot starve a larger one.
        self._lock = anyio.Lock()

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock.monotonic()
        if self._stamp is not None and now > self._stamp:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        if self._stamp is None or now > self._stamp:
            self._stamp = now

    def _check(self, n: int) -> None:
        if n < 0 or n > self.burst:
            # More than the burst could never be granted: waiting for it would hang forever.
            raise ValueError(f"cannot take {n} tokens from a bucket of {self.burst}")

    def _take(self, n: int) -> bool:
        self._refill()
        if self._tokens + _EPSILON < n:
            return False
        self._tokens = max(0.0, self._tokens - n)
        return True

    def try_acquire(self, n: int = 1) -> bool:
        """Take `n` tokens if they are there now; never jumps ahead of a waiting `acquire`."""
        self._check(n)
        if self._lock.locked():
            return False
        return self._take(n)

    async def acquire(self, n: int = 1) -> None:
        """Wait until `n` tokens are available, then take them."""
        self._check(n)
        async with self._lock:
            while not self._take(n):
                await self._clock.sleep((n - self._tokens) / self.rate)


class SlidingWindowCounter:
    """Events in the last `window_s` seconds, for a per-minute limit.

    Times are the caller's, from a monotonic clock: a wall-clock jump must not empty or freeze
    the window. An event at `t` counts while `now < t + window_s`.
    """

    def __init__(self, window_s: float = 60.0) -> None:
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be a positive number, not {window_s!r}")
        self.window_s = window_s
        self._times: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._times and self._times[0] + self.window_s <= now:
            self._times.popleft()

    def record(self, now: float) -> None:
        self._expire(now)
        if self._times and now < self._times[-1]:
            bisect.insort(self._times, now)  # keeps `_expire`'s oldest-first assumption
        else:
            self._times.append(now)

    def count(self, now: float) -> int:
        self._expire(now)
        return len(self._times)

    def frees_in(self, now: float) -> float | None:
        """Seconds until the oldest event leaves the window; None when the window is empty."""
        self._expire(now)
        if not self._times:
            return None
        return max(0.0, self._times[0] + self.window_s - now)
