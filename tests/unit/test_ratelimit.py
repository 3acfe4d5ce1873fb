"""The token bucket and the sliding window, on a fake clock: no wall-clock sleeps anywhere."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from node.ratelimit import AnyioTime, SlidingWindowCounter, TokenBucket


class FakeTime:
    """Virtual time: a sleep moves the clock forward by exactly what was asked."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()


# ---------------------------------------------------------------- TokenBucket


def test_defaults_are_ibs_pace() -> None:
    bucket = TokenBucket(clock=FakeTime())
    assert (bucket.rate, bucket.burst) == (45.0, 45)


def test_starts_full_and_try_acquire_takes_what_is_there() -> None:
    clock = FakeTime()
    bucket = TokenBucket(clock=clock)
    assert all(bucket.try_acquire() for _ in range(45))
    assert not bucket.try_acquire()
    clock.now += 1 / 45
    assert bucket.try_acquire()
    assert not bucket.try_acquire()


def test_try_acquire_many() -> None:
    clock = FakeTime()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert bucket.try_acquire(5)
    clock.now += 0.3
    assert not bucket.try_acquire(4)  # three tokens, and a failed try takes nothing
    assert bucket.try_acquire(3)


def test_refill_stops_at_burst() -> None:
    clock = FakeTime()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    bucket.try_acquire(5)
    clock.now += 3600
    assert bucket.tokens == 5
    assert bucket.try_acquire(5)
    assert not bucket.try_acquire(1)


def test_a_clock_going_backwards_adds_nothing() -> None:
    clock = FakeTime()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    bucket.try_acquire(5)
    clock.now -= 10
    assert not bucket.try_acquire()
    clock.now += 10.1  # only time after the last reading counts
    assert bucket.try_acquire()


@pytest.mark.parametrize("n", [-1, 6])
def test_impossible_requests_raise_instead_of_hanging(n: int) -> None:
    bucket = TokenBucket(rate=10, burst=5, clock=FakeTime())
    with pytest.raises(ValueError, match="cannot take"):
        bucket.try_acquire(n)


@pytest.mark.parametrize(("rate", "burst"), [(0, 5), (-1, 5), (float("inf"), 5), (10, 0)])
def test_bad_parameters(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        TokenBucket(rate=rate, burst=burst, clock=FakeTime())


@pytest.mark.anyio
async def test_acquire_without_waiting_when_tokens_are_there() -> None:
    clock = FakeTime()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    await bucket.acquire(5)
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_acquire_sleeps_for_the_deficit() -> None:
    clock = FakeTime()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    await bucket.acquire(5)
    await bucket.acquire(2)
    assert sum(clock.sleeps) == pytest.approx(0.2)
    assert bucket.tokens == pytest.approx(0)


@pytest.mark.anyio
async def test_acquire_with_an_impossible_request_raises() -> None:
    bucket = TokenBucket(rate=10, burst=5, clock=FakeTime())
    with pytest.raises(ValueError, match="cannot take"):
        await bucket.acquire(6)


@pytest.mark.anyio
async def test_never_more_than_burst_plus_rate_in_any_second() -> None:
    clock = FakeTime()
    bucket = TokenBucket(clock=clock)
    times: list[float] = []
    for _ in range(500):
        await bucket.acquire()
        times.append(clock.now)
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < start + 1.0)
        assert in_window <= 45 + 45
    # and over the long run the pace is the rate
    assert (times[-1] - times[0]) == pytest.approx((500 - 45) / 45, rel=1e-6)


@pytest.mark.anyio
async def test_a_smooth_bucket_holds_a_hard_per_second_cap() -> None:
    clock = FakeTime()
    bucket = TokenBucket(rate=44, burst=1, clock=clock)
    times: list[float] = []
    for _ in range(300):
        await bucket.acquire()
        times.append(clock.now)
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t < start + 1.0) <= 45


@pytest.mark.anyio
async def test_waiters_are_served_in_arrival_order() -> None:
    clock = FakeTime()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    bucket.try_acquire(5)
    served: list[str] = []

    async def take(name: str, n: int) -> None:
        await bucket.acquire(n)
        served.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, "big", 5)
        await anyio.lowlevel.checkpoint()
        for i in range(3):
            tg.start_soon(take, f"small{i}", 1)
    assert served == ["big", "small0", "small1", "small2"]


@pytest.mark.anyio
async def test_try_acquire_does_not_jump_the_queue() -> None:
    waiting = anyio.Event()

    class HoldingTime(FakeTime):
        async def sleep(self, seconds: float) -> None:
            waiting.set()
            await super().sleep(seconds)

    held = HoldingTime()
    bucket = TokenBucket(rate=10, burst=5, clock=held)
    bucket.try_acquire(5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(bucket.acquire, 5)
        await waiting.wait()
        held.now += 100  # plenty of tokens now, but someone is first in line
        assert not bucket.try_acquire(1)
    assert bucket.try_acquire(1) is False  # the waiter took all five


@pytest.mark.anyio
async def test_cancelled_acquire_takes_nothing() -> None:
    class NeverWakes(FakeTime):
        async def sleep(self, seconds: float) -> None:
            await anyio.sleep_forever()

    stuck = NeverWakes()
    bucket = TokenBucket(rate=10, burst=5, clock=stuck)
    bucket.try_acquire(5)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await bucket.acquire(3)
    stuck.now += 0.3
    assert bucket.try_acquire(3)


@pytest.mark.anyio
async def test_default_time_source_is_the_event_loops() -> None:
    time = AnyioTime()
    before = time.monotonic()
    await time.sleep(0)
    assert time.monotonic() >= before
    bucket = TokenBucket()  # no running-loop work in the constructor
    assert bucket.try_acquire()


# ---------------------------------------------------------------- SlidingWindowCounter


def test_window_counts_and_expires() -> None:
    window = SlidingWindowCounter(window_s=60)
    assert window.count(0) == 0
    assert window.frees_in(0) is None
    for t in (0.0, 10.0, 20.0):
        window.record(t)
    assert window.count(20) == 3
    assert window.frees_in(20) == 40
    assert window.count(59.999) == 3
    assert window.count(60) == 2  # an event at t counts while now < t + 60
    assert window.frees_in(60) == 10
    assert window.count(80) == 0
    assert window.frees_in(80) is None


def test_default_window_is_a_minute() -> None:
    assert SlidingWindowCounter().window_s == 60


def test_window_tolerates_an_out_of_order_record() -> None:
    window = SlidingWindowCounter(window_s=60)
    window.record(30)
    window.record(10)
    assert window.frees_in(30) == 40
    assert window.count(71) == 1


def test_window_burst_at_one_instant() -> None:
    window = SlidingWindowCounter(window_s=60)
    for _ in range(5):
        window.record(100)
    assert window.count(100) == 5
    assert window.frees_in(130) == 30
    assert window.count(160) == 0


@pytest.mark.parametrize("window_s", [0, -1, float("nan")])
def test_bad_window(window_s: float) -> None:
    with pytest.raises(ValueError, match="window_s"):
        SlidingWindowCounter(window_s=window_s)


def test_window_drives_the_gate_inputs() -> None:
    # The order service asks count() and frees_in() at the same instant for GateContext.
    window = SlidingWindowCounter()
    limit = 3
    for t in (0.0, 1.0, 2.0):
        window.record(t)
    now = 30.0
    assert window.count(now) >= limit
    assert window.frees_in(now) == 30.0
    assert window.count(now + 30.0) < limit
