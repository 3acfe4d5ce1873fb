"""Clock and RunWindow: the window as tables (DST included), ManualClock driven by hand."""

from __future__ import annotations

import asyncio
import itertools
import math
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import anyio.lowlevel
import pytest

from node.clock import (
    ManualClock,
    RealClock,
    RunWindow,
    format_days,
    load_zone,
    parse_clock_time,
    parse_days,
    parse_end_time,
)

pytestmark = pytest.mark.anyio

TZ = ZoneInfo("America/Toronto")
WEEKDAYS = frozenset(range(5))
# A guard against a hang turning into a stuck run; no test asserts anything about real time.
HANG_GUARD = 5


def local(text: str) -> datetime:
    """Toronto wall-clock time; fold=0, so an ambiguous time is its first occurrence."""
    return datetime.fromisoformat(text).replace(tzinfo=TZ)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def window(days: str, start: str, end: str, zone: ZoneInfo = TZ) -> RunWindow:
    return RunWindow(parse_days(days), parse_clock_time(start), parse_end_time(end), zone)


def same_instant(a: datetime | None, b: datetime | None) -> bool:
    # Aware datetimes sharing a tzinfo compare as wall-clock times, ignoring fold; compare in UTC.
    if a is None or b is None:
        return a is b
    return a.astimezone(UTC) == b.astimezone(UTC)


# --- RunWindow: is_open / next_change tables ------------------------------------------------
# Week of Monday 2026-01-12 (EST, no DST change): 12 Mon ... 16 Fri, 17 Sat, 18 Sun, 19 Mon.

DEFAULT = window("Mon,Tue,Wed,Thu,Fri", "04:00", "20:00")


@pytest.mark.parametrize(
    ("now", "is_open", "change"),
    [
        (local("2026-01-11 12:00"), False, local("2026-01-12 04:00")),  # Sunday
        (local("2026-01-12 00:00"), False, local("2026-01-12 04:00")),
        (local("2026-01-12 03:59:59"), False, local("2026-01-12 04:00")),
        (local("2026-01-12 04:00"), True, local("2026-01-12 20:00")),  # opening is inclusive
        (local("2026-01-12 12:00"), True, local("2026-01-12 20:00")),
        (local("2026-01-12 19:59:59.999999"), True, local("2026-01-12 20:00")),
        (local("2026-01-12 20:00"), False, local("2026-01-13 04:00")),  # closing is exclusive
        (local("2026-01-12 23:30"), False, local("2026-01-13 04:00")),
        (local("2026-01-14 10:00"), True, local("2026-01-14 20:00")),
        (local("2026-01-16 19:00"), True, local("2026-01-16 20:00")),
        (local("2026-01-16 20:00"), False, local("2026-01-19 04:00")),  # Friday evening
        (local("2026-01-16 23:59"), False, local("2026-01-19 04:00")),
        (local("2026-01-17 12:00"), False, local("2026-01-19 04:00")),  # weekend
        (local("2026-01-18 23:59:59"), False, local("2026-01-19 04:00")),
        (utc("2026-01-12 09:00"), True, local("2026-01-12 20:00")),  # `now` in another zone
        (utc("2026-01-12 08:59"), False, utc("2026-01-12 09:00")),
    ],
)
def test_default_window(now: datetime, is_open: bool, change: datetime) -> None:
    assert DEFAULT.is_open(now) is is_open
    result = DEFAULT.next_change(now)
    assert same_instant(result, change)
    assert result is not None
    assert result.tzinfo is TZ


@pytest.mark.parametrize(
    ("win", "now", "is_open", "change"),
    [
        # Fri 22:00-02:00 runs Friday 22:00 to Saturday 02:00.
        (
            window("Fri", "22:00", "02:00"),
            local("2026-01-16 21:59"),
            False,
            local("2026-01-16 22:00"),
        ),
        (
            window("Fri", "22:00", "02:00"),
            local("2026-01-16 22:00"),
            True,
            local("2026-01-17 02:00"),
        ),
        (
            window("Fri", "22:00", "02:00"),
            local("2026-01-17 00:00"),
            True,
            local("2026-01-17 02:00"),
        ),
        (
            window("Fri", "22:00", "02:00"),
            local("2026-01-17 01:00"),
            True,
            local("2026-01-17 02:00"),
        ),
        (
            window("Fri", "22:00", "02:00"),
            local("2026-01-17 02:00"),
            False,
            local("2026-01-23 22:00"),
        ),
        # It belongs to Friday: Friday 01:00 is Thursday night's window, and Thursday is not one.
        (
            window("Fri", "22:00", "02:00"),
            local("2026-01-16 01:00"),
            False,
            local("2026-01-16 22:00"),
        ),
        (
            window("Thu,Fri", "22:00", "02:00"),
            local("2026-01-16 01:00"),
            True,
            local("2026-01-16 02:00"),
        ),
        (
            window("Mon-Fri", "22:00", "02:00"),
            local("2026-01-17 01:00"),
            True,
            local("2026-01-17 02:00"),
        ),
        (
            window("Mon-Fri", "22:00", "02:00"),
            local("2026-01-12 01:00"),
            False,
            local("2026-01-12 22:00"),
        ),
        (
            window("Mon-Fri", "22:00", "02:00"),
            local("2026-01-13 01:00"),
            True,
            local("2026-01-13 02:00"),
        ),
        (
            window("Mon-Fri", "22:00", "02:00"),
            local("2026-01-17 02:00"),
            False,
            local("2026-01-19 22:00"),
        ),
        # A Sunday-night window runs into Monday, across the week boundary.
        (
            window("Sun", "23:00", "01:00"),
            local("2026-01-19 00:30"),
            True,
            local("2026-01-19 01:00"),
        ),
        # An end of 00:00 is the next midnight, the same as 24:00.
        (
            window("Fri", "20:00", "00:00"),
            local("2026-01-16 23:59"),
            True,
            local("2026-01-17 00:00"),
        ),
        (
            window("Fri", "20:00", "00:00"),
            local("2026-01-17 00:00"),
            False,
            local("2026-01-23 20:00"),
        ),
        # 24:00 is the end of the day.
        (
            window("Mon-Fri", "20:00", "24:00"),
            local("2026-01-12 23:59"),
            True,
            local("2026-01-13 00:00"),
        ),
        (
            window("Mon-Fri", "20:00", "24:00"),
            local("2026-01-13 00:00"),
            False,
            local("2026-01-13 20:00"),
        ),
        (
            window("Mon-Fri", "20:00", "24:00"),
            local("2026-01-16 20:00"),
            True,
            local("2026-01-17 00:00"),
        ),
        (
            window("Mon-Fri", "20:00", "24:00"),
            local("2026-01-17 00:00"),
            False,
            local("2026-01-19 20:00"),
        ),
        # 00:00-24:00 on consecutive days is one stretch: no flip at the midnights inside it.
        (
            window("Mon-Fri", "00:00", "24:00"),
            local("2026-01-13 12:00"),
            True,
            local("2026-01-17 00:00"),
        ),
        (
            window("Mon-Fri", "00:00", "24:00"),
            local("2026-01-12 00:00"),
            True,
            local("2026-01-17 00:00"),
        ),
        (
            window("Mon-Fri", "00:00", "24:00"),
            local("2026-01-16 23:59"),
            True,
            local("2026-01-17 00:00"),
        ),
        (
            window("Mon-Fri", "00:00", "24:00"),
            local("2026-01-17 00:00"),
            False,
            local("2026-01-19 00:00"),
        ),
        (
            window("Mon-Fri", "00:00", "24:00"),
            local("2026-01-18 23:59:59"),
            False,
            local("2026-01-19 00:00"),
        ),
        (
            window("Sat,Sun", "00:00", "24:00"),
            local("2026-01-16 12:00"),
            False,
            local("2026-01-17 00:00"),
        ),
        (
            window("Sat,Sun", "00:00", "24:00"),
            local("2026-01-17 10:00"),
            True,
            local("2026-01-19 00:00"),
        ),
        (
            window("Sun,Mon", "00:00", "24:00"),
            local("2026-01-18 12:00"),
            True,
            local("2026-01-20 00:00"),
        ),
        # Six whole days: the longest stretch short of always open.
        (
            window("Mon-Sat", "00:00", "24:00"),
            local("2026-01-17 12:00"),
            True,
            local("2026-01-18 00:00"),
        ),
        (
            window("Mon-Sat", "00:00", "24:00"),
            local("2026-01-18 12:00"),
            False,
            local("2026-01-19 00:00"),
        ),
        (
            window("Mon-Sat", "00:00", "24:00"),
            local("2026-01-12 00:00"),
            True,
            local("2026-01-18 00:00"),
        ),
        # All week but not whole days still closes every night.
        (
            window("Mon-Sun", "00:00", "23:59"),
            local("2026-01-17 12:00"),
            True,
            local("2026-01-17 23:59"),
        ),
        (
            window("Mon-Sun", "04:00", "20:00"),
            local("2026-01-17 21:00"),
            False,
            local("2026-01-18 04:00"),
        ),
        # One day a week: the next opening is a full week out.
        (
            window("Mon", "04:00", "20:00"),
            local("2026-01-12 20:00"),
            False,
            local("2026-01-19 04:00"),
        ),
    ],
)
def test_windows(win: RunWindow, now: datetime, is_open: bool, change: datetime) -> None:
    assert win.is_open(now) is is_open
    assert same_instant(win.next_change(now), change)


@pytest.mark.parametrize(
    "now",
    [
        local("2026-01-12 00:00"),
        local("2026-03-08 02:30"),
        utc("2026-11-01 06:00"),
        utc("2030-01-01"),
    ],
)
def test_whole_week_is_always_open(now: datetime) -> None:
    win = window("Mon-Sun", "00:00", "24:00")
    assert win.always_open
    assert win.is_open(now)
    assert win.next_change(now) is None  # no nightly restart


def test_only_the_whole_week_is_always_open() -> None:
    assert not window("Mon-Sat", "00:00", "24:00").always_open
    assert not window("Mon-Sun", "00:00", "23:59").always_open
    assert not DEFAULT.always_open


# --- DST in America/Toronto, 2026 -------------------------------------------------------------
# Spring forward Sun Mar 8: 02:00 EST becomes 03:00 EDT at 07:00Z (02:00-03:00 does not exist).
# Fall back Sun Nov 1: 02:00 EDT becomes 01:00 EST at 06:00Z (01:00-02:00 happens twice).


@pytest.mark.parametrize(
    ("win", "now", "is_open", "change"),
    [
        # A 02:30 start on the spring-forward day opens at 03:00 EDT, the first instant after.
        (
            window("Sun", "02:30", "05:00"),
            local("2026-03-07 12:00"),
            False,
            utc("2026-03-08 07:00"),
        ),
        (
            window("Sun", "02:30", "05:00"),
            utc("2026-03-08 06:59:59"),
            False,
            utc("2026-03-08 07:00"),
        ),
        (window("Sun", "02:30", "05:00"), utc("2026-03-08 07:00"), True, utc("2026-03-08 09:00")),
        # ... and on the next Sunday at 02:30 EDT.
        (window("Sun", "02:30", "05:00"), utc("2026-03-08 09:00"), False, utc("2026-03-15 06:30")),
        # An end inside the gap closes at the end of the gap.
        (window("Sun", "01:00", "02:30"), utc("2026-03-08 06:59"), True, utc("2026-03-08 07:00")),
        # A window wholly inside the gap does not happen that day.
        (
            window("Sun", "02:10", "02:50"),
            local("2026-03-07 12:00"),
            False,
            utc("2026-03-15 06:10"),
        ),
        (window("Sun", "02:10", "02:50"), utc("2026-03-08 07:00"), False, utc("2026-03-15 06:10")),
        # Overnight across the change: Sat 22:00 EST to Sun 04:00 EDT, five real hours.
        (window("Sat", "22:00", "04:00"), utc("2026-03-08 03:00"), True, utc("2026-03-08 08:00")),
        # Sunday is 23 hours long.
        (window("Sun", "00:00", "24:00"), utc("2026-03-08 05:00"), True, utc("2026-03-09 04:00")),
        (
            window("Sat,Sun", "00:00", "24:00"),
            local("2026-03-07 12:00"),
            True,
            utc("2026-03-09 04:00"),
        ),
        # The default window across the weekend: Fri 20:00 EST, then Mon 04:00 EDT.
        (DEFAULT, local("2026-03-06 19:00"), True, utc("2026-03-07 01:00")),
        (DEFAULT, local("2026-03-06 20:00"), False, utc("2026-03-09 08:00")),
        (DEFAULT, utc("2026-03-08 07:00"), False, utc("2026-03-09 08:00")),
        # A 01:30 start on the fall-back day is the first 01:30 (EDT).
        (
            window("Sun", "01:30", "03:00"),
            local("2026-10-31 12:00"),
            False,
            utc("2026-11-01 05:30"),
        ),
        (
            window("Sun", "01:30", "03:00"),
            utc("2026-11-01 05:29:59"),
            False,
            utc("2026-11-01 05:30"),
        ),
        (window("Sun", "01:30", "03:00"), utc("2026-11-01 05:30"), True, utc("2026-11-01 08:00")),
        (window("Sun", "01:30", "03:00"), utc("2026-11-01 06:30"), True, utc("2026-11-01 08:00")),
        # Ambiguous start and end: only the first pass through 01:30-01:45 is open.
        (window("Sun", "01:30", "01:45"), utc("2026-11-01 05:40"), True, utc("2026-11-01 05:45")),
        (window("Sun", "01:30", "01:45"), utc("2026-11-01 06:35"), False, utc("2026-11-08 06:30")),
        # Sunday is 25 hours long.
        (window("Sun", "00:00", "24:00"), utc("2026-11-01 04:00"), True, utc("2026-11-02 05:00")),
        # The default window across the weekend: Fri 20:00 EDT, then Mon 04:00 EST.
        (DEFAULT, local("2026-10-30 19:00"), True, utc("2026-10-31 00:00")),
        (DEFAULT, local("2026-10-30 20:00"), False, utc("2026-11-02 09:00")),
        (DEFAULT, utc("2026-11-01 05:30"), False, utc("2026-11-02 09:00")),
    ],
)
def test_dst(win: RunWindow, now: datetime, is_open: bool, change: datetime) -> None:
    assert win.is_open(now) is is_open
    result = win.next_change(now)
    assert result is not None
    assert result.astimezone(UTC) == change
    assert result.tzinfo is TZ


def test_dst_results_read_as_local_times() -> None:
    spring = window("Sun", "02:30", "05:00").next_change(local("2026-03-07 12:00"))
    assert spring is not None
    assert (spring.hour, spring.minute, spring.utcoffset()) == (3, 0, timedelta(hours=-4))
    fall = window("Sun", "01:30", "03:00").next_change(local("2026-10-31 12:00"))
    assert fall is not None
    assert (fall.hour, fall.minute, fall.fold, fall.utcoffset()) == (1, 30, 0, timedelta(hours=-4))


@pytest.mark.parametrize(
    "win",
    [
        DEFAULT,
        window("Fri", "22:00", "02:00"),
        window("Mon-Fri", "00:00", "24:00"),
        window("Sat,Sun", "00:00", "24:00"),
        window("Sun", "02:30", "05:00"),
        window("Sun", "01:30", "01:45"),
        window("Sat-Mon", "23:00", "01:30"),
    ],
    ids=lambda win: win.describe(),
)
@pytest.mark.parametrize("start", ["2026-03-04", "2026-10-28"])
def test_next_change_agrees_with_is_open(win: RunWindow, start: str) -> None:
    # Walk both DST weeks in 30-minute steps: state holds until next_change, and flips there.
    steps = [utc(start) + timedelta(minutes=30 * i) for i in range(7 * 24 * 2)]
    for now, later in itertools.pairwise(steps):
        result = win.next_change(now)
        assert result is not None
        # Arithmetic on an aware datetime is wall-clock arithmetic in its zone; step in UTC.
        change = result.astimezone(UTC)
        assert change > now
        assert win.is_open(change - timedelta(microseconds=1)) is win.is_open(now)
        assert win.is_open(change) is not win.is_open(now)
        if later < change:
            assert win.is_open(later) is win.is_open(now)


# --- RunWindow: construction and describe ---------------------------------------------------


@pytest.mark.parametrize(("start", "end"), [(time(4), time(4)), (time(0), time(0))])
def test_start_equal_to_end_is_an_error(start: time, end: time) -> None:
    with pytest.raises(ValueError, match="set different times"):
        RunWindow(WEEKDAYS, start, end, TZ)


@pytest.mark.parametrize(
    ("days", "start", "end", "message"),
    [
        (frozenset[int](), time(4), time(20), "no days"),
        (frozenset({7}), time(4), time(20), "0 \\(Mon\\) to 6 \\(Sun\\)"),
        (WEEKDAYS, time(4, tzinfo=UTC), time(20), "wall-clock"),
    ],
)
def test_invalid_window(days: frozenset[int], start: time, end: time, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunWindow(days, start, end, TZ)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        DEFAULT.is_open(datetime(2026, 1, 12, 12))
    with pytest.raises(ValueError, match="no time zone"):
        DEFAULT.next_change(datetime(2026, 1, 12, 12))


@pytest.mark.parametrize(
    ("win", "text"),
    [
        (DEFAULT, "Mon-Fri 04:00-20:00 America/Toronto"),
        (window("Fri", "22:00", "02:00"), "Fri 22:00-02:00 America/Toronto"),
        (window("Sat,Sun", "00:00", "24:00", ZoneInfo("UTC")), "Sat,Sun 00:00-24:00 UTC"),
        (window("Mon,Wed,Fri", "09:30", "16:00"), "Mon,Wed,Fri 09:30-16:00 America/Toronto"),
        (window("Fri-Mon", "04:00", "20:00"), "Fri-Mon 04:00-20:00 America/Toronto"),
        (
            window("Mon-Sun", "00:00", "24:00"),
            "Mon-Sun 00:00-24:00 America/Toronto (always open)",
        ),
    ],
)
def test_describe(win: RunWindow, text: str) -> None:
    assert win.describe() == text


def test_format_days_reads_back_for_every_set_of_days() -> None:
    for size in range(1, 8):
        for combo in itertools.combinations(range(7), size):
            days = frozenset(combo)
            assert parse_days(format_days(days)) == days, format_days(days)


# --- Parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("Mon,Tue,Wed,Thu,Fri", {0, 1, 2, 3, 4}),
        ("Mon-Fri", {0, 1, 2, 3, 4}),
        ("mon-fri", {0, 1, 2, 3, 4}),
        (" MON - FRI ", {0, 1, 2, 3, 4}),
        ("Sat,Sun", {5, 6}),
        ("sun", {6}),
        (" Tue , Thu ", {1, 3}),
        ("Mon,Wed-Thu", {0, 2, 3}),
        ("Fri-Mon", {4, 5, 6, 0}),  # a range may wrap round the weekend
        ("Mon-Mon", {0}),
        ("Mon-Sun", {0, 1, 2, 3, 4, 5, 6}),
        ("Mon,Mon", {0}),
    ],
)
def test_parse_days(text: str, days: set[int]) -> None:
    assert parse_days(text) == frozenset(days)


@pytest.mark.parametrize(
    "text", ["", "  ", "Monday", "Mon,,Tue", "Mon,", "Mon-", "1,2", "Mon;Tue", "Mon-Fri-Sat", "Mo"]
)
def test_parse_days_errors(text: str) -> None:
    with pytest.raises(ValueError, match="three-letter day names"):
        parse_days(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("04:00", time(4)), ("4:05", time(4, 5)), ("00:00", time(0)), ("23:59", time(23, 59)),
     (" 20:00 ", time(20))],
)  # fmt: skip
def test_parse_clock_time(text: str, value: time) -> None:
    assert parse_clock_time(text) == value


@pytest.mark.parametrize(
    "text", ["", "25:00", "12:60", "4", "04:00:00", "noon", "4pm", "-1:00", "04.00", "004:00"]
)
def test_parse_clock_time_errors(text: str) -> None:
    with pytest.raises(ValueError, match="expected HH:MM"):
        parse_clock_time(text)


def test_24_00_is_only_an_end_time() -> None:
    with pytest.raises(ValueError, match="24:00 is accepted only as an end time"):
        parse_clock_time("24:00")
    assert parse_end_time("24:00") is None
    assert parse_end_time(" 24:00 ") is None
    assert parse_end_time("20:00") == time(20)
    assert parse_end_time("00:00") == time(0)


@pytest.mark.parametrize("text", ["", "24:01", "25:00", "late", "20"])
def test_parse_end_time_errors(text: str) -> None:
    with pytest.raises(ValueError, match="or 24:00 for the end of the day"):
        parse_end_time(text)


@pytest.mark.parametrize("name", ["America/Toronto", "Europe/London", "UTC"])
def test_load_zone(name: str) -> None:
    assert load_zone(name) == ZoneInfo(name)
    assert str(load_zone(name)) == name


@pytest.mark.parametrize(
    "name", ["", "Nope/Zone", "Toronto", "America", "/etc/passwd", "../etc/passwd", "EST+5"]
)
def test_load_zone_errors(name: str) -> None:
    with pytest.raises(ValueError, match=r"IANA zone name, e\.g\. America/Toronto"):
        load_zone(name)


# --- ManualClock -----------------------------------------------------------------------------

T0 = utc("2026-01-12 09:00")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_manual_clock_stands_still() -> None:
    clock = ManualClock(local("2026-01-12 04:00"))
    assert clock.now() == T0
    assert clock.now().tzinfo is UTC
    await anyio.lowlevel.checkpoint()
    assert clock.now() == T0
    assert clock.sleepers == 0
    assert clock.next_deadline is None


async def test_due_and_past_sleeps_return_at_once() -> None:
    clock = ManualClock(T0)
    with anyio.fail_after(HANG_GUARD):
        await clock.sleep(0)
        await clock.sleep(-5)
        await clock.sleep_until(T0)
        await clock.sleep_until(at(-3600))
    assert clock.now() == T0
    assert clock.sleepers == 0


async def test_sleepers_wake_in_deadline_order() -> None:
    clock = ManualClock(T0)
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            for name, seconds in [("third", 30), ("first", 10), ("second", 20), ("fourth", 40)]:
                tg.start_soon(sleeper, name, seconds)
            await clock.wait_for_sleepers(4)
            assert clock.next_deadline == at(10)
            clock.advance(60)
            assert clock.sleepers == 0
    assert woke == ["first", "second", "third", "fourth"]


async def test_advance_wakes_only_due_sleepers() -> None:
    clock = ManualClock(T0)
    woke: list[tuple[str, datetime]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper, "ten", 10)
            tg.start_soon(sleeper, "twenty", 20)
            await clock.wait_for_sleepers(2)

            clock.advance(9.999)
            await anyio.wait_all_tasks_blocked()
            assert woke == []
            assert clock.sleepers == 2

            clock.advance(0.001)  # a deadline equal to now is due
            await anyio.wait_all_tasks_blocked()
            assert woke == [("ten", at(10))]
            assert clock.sleepers == 1
            assert clock.next_deadline == at(20)

            clock.advance(15)
    assert woke == [("ten", at(10)), ("twenty", at(25))]


async def test_sleep_until_uses_the_instant_not_the_zone() -> None:
    clock = ManualClock(T0)
    done = anyio.Event()

    async def sleeper() -> None:
        await clock.sleep_until(local("2026-01-12 05:00"))  # 10:00Z
        done.set()

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper)
            await clock.wait_for_sleepers()
            assert clock.next_deadline == utc("2026-01-12 10:00")
            clock.advance(3599)
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set()
            clock.advance(1)
            await done.wait()


async def test_cancellation_removes_the_waiter() -> None:
    clock = ManualClock(T0)
    scope = anyio.CancelScope()
    cancelled = anyio.Event()
    woke: list[str] = []

    async def cancellable() -> None:
        with scope:
            await clock.sleep(10)
            woke.append("cancelled one")
        cancelled.set()

    async def other() -> None:
        await clock.sleep(20)
        woke.append("other")

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancellable)
            tg.start_soon(other)
            await clock.wait_for_sleepers(2)
            scope.cancel()
            await cancelled.wait()
            assert clock.sleepers == 1
            assert clock.next_deadline == at(20)
            clock.advance(30)
    assert woke == ["other"]
    assert clock.sleepers == 0
    assert clock.next_deadline is None


async def test_cancelling_every_sleeper_leaves_nothing_pending() -> None:
    clock = ManualClock(T0)
    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            for seconds in (5, 10, 15):
                tg.start_soon(clock.sleep, seconds)
            await clock.wait_for_sleepers(3)
            tg.cancel_scope.cancel()
    assert clock.sleepers == 0
    assert clock.next_deadline is None


async def test_wait_for_sleepers() -> None:
    clock = ManualClock(T0)
    ready = anyio.Event()

    async def watcher() -> None:
        await clock.wait_for_sleepers(2)
        ready.set()

    with anyio.fail_after(HANG_GUARD):
        await clock.wait_for_sleepers(0)  # already true: returns at once
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher)
            tg.start_soon(clock.sleep, 10)
            await anyio.wait_all_tasks_blocked()
            assert not ready.is_set()
            assert clock.sleepers == 1  # the watcher itself is not a sleeper
            tg.start_soon(clock.sleep, 20)
            await ready.wait()
            assert clock.sleepers == 2
            await clock.wait_for_sleepers(2)
            clock.advance(20)


async def test_wait_for_sleepers_counts_sleepers_now_not_ever() -> None:
    clock = ManualClock(T0)
    ready = anyio.Event()

    async def watcher() -> None:
        await clock.wait_for_sleepers(2)
        ready.set()

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher)
            tg.start_soon(clock.sleep, 1)
            await clock.wait_for_sleepers(1)
            clock.advance(1)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(clock.sleep, 1)
            await anyio.wait_all_tasks_blocked()
            # Two registrations so far, but only one sleeps now.
            assert not ready.is_set()
            tg.start_soon(clock.sleep, 2)
            await ready.wait()
            clock.advance(5)


async def test_sleep_forever_waits_for_cancellation() -> None:
    clock = ManualClock(T0)
    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.sleep, math.inf)
            await clock.wait_for_sleepers()
            clock.advance(10 * 365 * 24 * 3600)
            await anyio.wait_all_tasks_blocked()
            assert clock.sleepers == 1
            tg.cancel_scope.cancel()
    assert clock.sleepers == 0


async def test_set_backwards_wakes_nobody() -> None:
    clock = ManualClock(T0)
    done = anyio.Event()

    async def sleeper() -> None:
        await clock.sleep(10)
        done.set()

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper)
            await clock.wait_for_sleepers()
            clock.set(at(-3600))  # the wall clock jumped back an hour
            await anyio.wait_all_tasks_blocked()
            assert clock.now() == at(-3600)
            assert not done.is_set()
            assert clock.sleepers == 1
            clock.advance(3609)
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set()
            clock.set(at(10))  # forward to the deadline: due
            await done.wait()
    assert clock.sleepers == 0


async def test_advance_to_next() -> None:
    clock = ManualClock(T0)
    woke: list[tuple[str, datetime]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper, "late", 15)
            tg.start_soon(sleeper, "early", 5)
            tg.start_soon(sleeper, "also early", 5)
            await clock.wait_for_sleepers(3)
            assert clock.advance_to_next() == at(5)
            await anyio.wait_all_tasks_blocked()
            assert woke == [("early", at(5)), ("also early", at(5))]
            assert clock.sleepers == 1
            assert clock.advance_to_next() == at(15)
    assert woke[-1] == ("late", at(15))
    with pytest.raises(RuntimeError, match="no task is sleeping"):
        clock.advance_to_next()


async def test_manual_clock_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        ManualClock(datetime(2026, 1, 12))
    clock = ManualClock(T0)
    with pytest.raises(ValueError, match="use set\\(\\)"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="no time zone"):
        clock.set(datetime(2026, 1, 12))
    with pytest.raises(ValueError, match="no time zone"):
        await clock.sleep_until(datetime(2026, 1, 12))
    assert clock.now() == T0


def test_manual_clock_is_built_outside_an_event_loop() -> None:
    clock = ManualClock(T0)
    clock.advance(5)
    assert clock.now() == at(5)


# --- RealClock -------------------------------------------------------------------------------


async def test_real_clock() -> None:
    clock = RealClock()
    now = clock.now()
    assert now.tzinfo is UTC
    with anyio.fail_after(HANG_GUARD):
        await clock.sleep(0)
        await clock.sleep_until(now - timedelta(hours=1))


async def test_wait_returns_whether_the_event_came_before_the_deadline() -> None:
    clock = ManualClock(datetime(2026, 1, 14, 12, 0, tzinfo=UTC))
    event = anyio.Event()
    results: list[bool] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _record(clock.wait(event, 5), results))
        await clock.wait_for_sleepers()
        clock.advance(4.9)
        event.set()
    assert results == [True]

    late = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _record(clock.wait(late, 5), results))
        await clock.wait_for_sleepers()
        clock.advance(5)
    assert results == [True, False]
    assert clock.sleepers == 0


async def test_real_clock_wait() -> None:
    clock = RealClock()
    event = anyio.Event()
    event.set()
    assert await clock.wait(event, 60) is True
    assert await clock.wait(anyio.Event(), 0) is False


async def test_manual_clock_wait_without_time_and_forever() -> None:
    clock = ManualClock(datetime(2026, 1, 14, 12, 0, tzinfo=UTC))
    assert await clock.wait(anyio.Event(), 0) is False
    done = anyio.Event()
    done.set()
    assert await clock.wait(done, 0) is True
    forever = anyio.Event()
    results: list[bool] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _record(clock.wait(forever, math.inf), results))
        await clock.wait_for_sleepers()
        clock.advance(10**9)
        assert clock.sleepers == 1
        forever.set()
    assert results == [True]
    assert clock.sleepers == 0


@pytest.mark.parametrize("kind", ["real", "manual"])
async def test_a_waiter_wakes_in_the_turn_its_event_is_set_with_either_clock(kind: str) -> None:
    """The order path relies on it: a POST waiting for IB's report runs before a callback
    scheduled just after its event is set (the rest of IB's burst). ManualClock must wake it
    as RealClock does, or tests would exercise another order than the daemon."""
    clock = RealClock() if kind == "real" else ManualClock(utc("2026-01-14T12:00:00"))
    event = anyio.Event()
    happened: list[str] = []

    async def waiter() -> None:
        await clock.wait(event, 60)
        happened.append("waiter")

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            event.set()
            asyncio.get_running_loop().call_soon(happened.append, "scheduled after")
    assert happened == ["waiter", "scheduled after"]


async def _record(waiting: Any, results: list[bool]) -> None:
    results.append(await waiting)
