"""Time for the daemon: the Clock every deadline goes through, and the weekly run window.

Deadlines take a Clock rather than calling anyio.sleep, so tests drive them with a ManualClock
and never wait on the wall clock. RunWindow answers "is the gateway meant to run now, and when
does that change" in the operator's local time (DESIGN.md §8).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
import anyio.lowlevel

__all__ = [
    "DAY_NAMES",
    "Clock",
    "ManualClock",
    "RealClock",
    "RunWindow",
    "format_days",
    "load_zone",
    "parse_clock_time",
    "parse_days",
    "parse_end_time",
]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def sleep_until(self, when: datetime) -> None:
        """Return once `when` (aware) has come; at once if it already has."""
        ...

    async def wait(self, event: anyio.Event, seconds: float) -> bool:
        """Wait for `event` at most `seconds`; True when it was set."""
        ...


class RealClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    async def sleep_until(self, when: datetime) -> None:
        # The delay is fixed at the call: a wall-clock jump during the sleep is not followed.
        # The window task bounds its sleeps by CLOCK_TICK and detects jumps itself.
        await anyio.sleep(max(0.0, (_require_aware(when) - self.now()).total_seconds()))

    async def wait(self, event: anyio.Event, seconds: float) -> bool:
        # A cancel scope with a deadline: no task to start and to wind down per wait, which
        # matters on the order path (a POST waits for IB's first report this way).
        with anyio.move_on_after(seconds):
            await event.wait()
        return event.is_set()


@dataclass(eq=False)
class _Waiter:
    deadline: datetime
    order: int  # ties between equal deadlines wake in the order the tasks went to sleep
    wake: Callable[[], object]  # sets a sleeper's event, or cancels a wait's scope


class ManualClock:
    """A clock whose time moves only when the test says so."""

    def __init__(self, start: datetime) -> None:
        self._now = _require_aware(start).astimezone(UTC)
        self._waiters: list[_Waiter] = []
        self._counter = itertools.count()
        # Created lazily: anyio.Event needs a running event loop, the clock may be built without.
        self._registered: anyio.Event | None = None

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._deadline_after(seconds))

    async def sleep_until(self, when: datetime) -> None:
        deadline = _require_aware(when).astimezone(UTC)
        if deadline <= self._now:
            # Still a checkpoint, like anyio.sleep(0): a loop of due timers can be cancelled
            # and does not starve other tasks.
            await anyio.lowlevel.checkpoint()
            return
        due = anyio.Event()
        waiter = self._register(deadline, due.set)
        try:
            await due.wait()
        finally:
            self._unregister(waiter)

    def _deadline_after(self, seconds: float) -> datetime:
        try:
            return self._now + timedelta(seconds=seconds)
        except OverflowError:
            # math.inf means "until cancelled", as it does for anyio.sleep.
            return datetime.max.replace(tzinfo=UTC)

    def _register(self, deadline: datetime, wake: Callable[[], object]) -> _Waiter:
        waiter = _Waiter(deadline, next(self._counter), wake)
        if deadline <= self._now:
            wake()
            return waiter
        self._waiters.append(waiter)
        if self._registered is not None:
            self._registered.set()
            self._registered = None
        return waiter

    def _unregister(self, waiter: _Waiter) -> None:
        # Cancelled before its time: the deadline must no longer count as pending.
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    async def wait(self, event: anyio.Event, seconds: float) -> bool:
        # As RealClock.wait, a cancel scope that the deadline cancels and no task of its own:
        # the waiting task then wakes in the same turn of the event loop as under the real
        # clock, which the order path's ordering depends on (see OrderService._on_report).
        with anyio.CancelScope() as scope:
            waiter = self._register(self._deadline_after(seconds), scope.cancel)
            try:
                await event.wait()
            finally:
                self._unregister(waiter)
        return event.is_set()

    @property
    def sleepers(self) -> int:
        return len(self._waiters)

    @property
    def next_deadline(self) -> datetime | None:
        return min((w.deadline for w in self._waiters), default=None)

    async def wait_for_sleepers(self, count: int = 1) -> None:
        """Return once at least `count` tasks sleep on this clock, so a test advances no sooner."""
        while len(self._waiters) < count:
            if self._registered is None:
                self._registered = anyio.Event()
            await self._registered.wait()

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"advance({seconds}) would move time back; use set() for that")
        self._now += timedelta(seconds=seconds)
        self._wake_due()

    def set(self, when: datetime) -> None:
        """Jump to `when`; backwards is allowed (a wall-clock jump back) and wakes nobody."""
        self._now = _require_aware(when).astimezone(UTC)
        self._wake_due()

    def advance_to_next(self) -> datetime:
        """Move to the earliest pending deadline, wake its sleepers, return the new time."""
        deadline = self.next_deadline
        if deadline is None:
            raise RuntimeError("no task is sleeping on this clock; await wait_for_sleepers() first")
        self._now = max(self._now, deadline)
        self._wake_due()
        return self._now

    def _wake_due(self) -> None:
        due = sorted(
            (w for w in self._waiters if w.deadline <= self._now),
            key=lambda w: (w.deadline, w.order),
        )
        for waiter in due:
            self._waiters.remove(waiter)
            # On asyncio the woken tasks resume in the order they are woken here.
            waiter.wake()


if TYPE_CHECKING:

    def _both_are_clocks(real: RealClock, manual: ManualClock) -> tuple[Clock, Clock]:
        return real, manual


DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_ALL_DAYS = frozenset(range(7))
_MIDNIGHT = time(0, 0)
# Far enough back for a window that started up to six days ago (the longest merged run of
# 00:00-24:00 days short of the whole week), far enough ahead for the next opening a week out
# and its close the day after.
_DAYS_BACK = 8
_DAYS_AHEAD = 9


@dataclass(frozen=True)
class RunWindow:
    """The weekly run window: on `days` (0=Mon..6=Sun) from `start` to `end` local time in `zone`.

    `end` None means 24:00. An end at or before the start crosses midnight and belongs to the day
    it starts on. Every instant is computed from local wall-clock times: a start that does not
    exist (skipped by a DST change) means the first instant after the gap, an ambiguous one its
    first occurrence.
    """

    days: frozenset[int]
    start: time
    end: time | None
    zone: ZoneInfo

    def __post_init__(self) -> None:
        object.__setattr__(self, "days", frozenset(self.days))
        if not self.days:
            raise ValueError("the run window has no days; give at least one, e.g. Mon-Fri")
        if not self.days <= _ALL_DAYS:
            raise ValueError(f"run window days must be 0 (Mon) to 6 (Sun), got {sorted(self.days)}")
        for value in (self.start, self.end):
            if value is not None and value.tzinfo is not None:
                raise ValueError("run window times are local wall-clock times without a zone")
        if self.start == self.end:
            raise ValueError(
                f"the run window starts and ends at {_format_time(self.start)}; set different "
                "times (00:00-24:00 for whole days)"
            )

    @property
    def always_open(self) -> bool:
        return self.days == _ALL_DAYS and self.start == _MIDNIGHT and self.end is None

    def is_open(self, now: datetime) -> bool:
        if self.always_open:
            return True
        instant = _require_aware(now).astimezone(UTC)
        return any(opens <= instant < closes for opens, closes in self._intervals(instant))

    def next_change(self, now: datetime) -> datetime | None:
        """The next instant after `now` at which `is_open` flips; None if it never does."""
        if self.always_open:
            return None
        instant = _require_aware(now).astimezone(UTC)
        for opens, closes in self._intervals(instant):
            if instant < opens:
                return opens.astimezone(self.zone)
            if instant < closes:
                return closes.astimezone(self.zone)
        raise AssertionError("the horizon always holds the next opening")  # pragma: no cover

    def describe(self) -> str:
        end = "24:00" if self.end is None else _format_time(self.end)
        text = f"{format_days(self.days)} {_format_time(self.start)}-{end} {self.zone}"
        return f"{text} (always open)" if self.always_open else text

    def _intervals(self, instant: datetime) -> list[tuple[datetime, datetime]]:
        """Open intervals in UTC around `instant`, sorted, merged where they touch."""
        today = instant.astimezone(self.zone).date()
        spans: list[tuple[datetime, datetime]] = []
        for offset in range(-_DAYS_BACK, _DAYS_AHEAD + 1):
            day = today + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            opens = _local_instant(day, self.start, self.zone)
            if self.end is None:
                closes = _local_instant(day + timedelta(days=1), _MIDNIGHT, self.zone)
            elif self.end <= self.start:
                closes = _local_instant(day + timedelta(days=1), self.end, self.zone)
            else:
                closes = _local_instant(day, self.end, self.zone)
            # Empty when the whole window falls inside a DST gap: it does not open that day.
            if opens < closes:
                spans.append((opens, closes))
        spans.sort()
        merged: list[tuple[datetime, datetime]] = []
        for opens, closes in spans:
            # Touching intervals (Mon 24:00 = Tue 00:00) are one: is_open does not flip there.
            if merged and opens <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], closes))
            else:
                merged.append((opens, closes))
        return merged


def _local_instant(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a local wall-clock time; first occurrence, or the end of a DST gap."""
    naive = datetime.combine(day, wall)
    # fold=0 is the first occurrence of an ambiguous time; in a gap it uses the offset before
    # the change, which lands after the gap.
    early = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if early.astimezone(zone).replace(tzinfo=None) == naive:
        return early
    # The time does not exist. fold=1 reads it with the offset after the change, which lands
    # before the gap; the change itself lies between the two, found by bisection to the second.
    late = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    before, after = min(early, late), max(early, late)
    offset_after = after.astimezone(zone).utcoffset()
    while after - before > timedelta(seconds=1):
        middle = before + (after - before) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(zone).utcoffset() == offset_after:
            after = middle
        else:
            before = middle
    return after


def _require_aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value.isoformat()} has no time zone; pass an aware datetime")
    return value


def _format_time(value: time) -> str:
    return value.strftime("%H:%M:%S" if value.second or value.microsecond else "%H:%M")


def format_days(days: frozenset[int]) -> str:
    """Days as parse_days reads them: runs of three or more as ranges, e.g. "Mon-Fri", "Sat,Sun"."""
    if days == _ALL_DAYS:
        return "Mon-Sun"
    # Start right after a day off, so a run across the weekend reads "Sat-Mon".
    first = next(d for d in range(7) if d in days and (d - 1) % 7 not in days)
    runs: list[list[int]] = []
    for step in range(7):
        day = (first + step) % 7
        if day not in days:
            continue
        if runs and (runs[-1][-1] + 1) % 7 == day:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{DAY_NAMES[run[0]]}-{DAY_NAMES[run[-1]]}")
        else:
            parts.extend(DAY_NAMES[d] for d in run)
    return ",".join(parts)


_DAYS_ACCEPTED = (
    "expected three-letter day names separated by commas, or ranges, e.g. Mon,Tue,Wed,Thu,Fri "
    "or Mon-Fri or Sat,Sun"
)
_TIME = re.compile(r"(\d{1,2}):(\d{2})")


def parse_days(text: str) -> frozenset[int]:
    """ "Mon,Tue" / "mon-fri" / "Fri-Mon" (wrapping the weekend) -> {0=Mon..6=Sun}."""
    lookup = {name.lower(): index for index, name in enumerate(DAY_NAMES)}

    def day(name: str) -> int:
        index = lookup.get(name.strip().lower())
        if index is None:
            raise ValueError(
                f"invalid days {text!r}: {name.strip()!r} is not a day; {_DAYS_ACCEPTED}"
            )
        return index

    if not text.strip():
        raise ValueError(f"no days given; {_DAYS_ACCEPTED}")
    days: set[int] = set()
    for item in text.split(","):
        first, dash, last = item.partition("-")
        if not dash:
            days.add(day(item))
            continue
        current, final = day(first), day(last)
        days.add(current)
        while current != final:
            current = (current + 1) % 7
            days.add(current)
    return frozenset(days)


def parse_clock_time(text: str) -> time:
    """ "04:00" -> time(4, 0); 24-hour clock, 00:00 to 23:59."""
    match = _TIME.fullmatch(text.strip())
    if match is not None:
        hour, minute = int(match[1]), int(match[2])
        if hour < 24 and minute < 60:
            return time(hour, minute)
    hint = " (24:00 is accepted only as an end time)" if text.strip() == "24:00" else ""
    raise ValueError(
        f"invalid time {text!r}: expected HH:MM on a 24-hour clock, 00:00 to 23:59, "
        f"e.g. 04:00{hint}"
    )


def parse_end_time(text: str) -> time | None:
    """Like parse_clock_time, and "24:00" -> None (the end of the day)."""
    if text.strip() == "24:00":
        return None
    try:
        return parse_clock_time(text)
    except ValueError:
        raise ValueError(
            f"invalid end time {text!r}: expected HH:MM on a 24-hour clock, 00:00 to 23:59, "
            "or 24:00 for the end of the day, e.g. 20:00"
        ) from None


def load_zone(name: str) -> ZoneInfo:
    """An IANA zone by name; from the tzdata package where the system has none (Windows)."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {name!r}: expected an IANA zone name, e.g. America/Toronto, "
            "Europe/London or UTC"
        ) from None


def utc_text(when: datetime | None) -> str | None:
    """An aware time as RFC 3339 in UTC with `Z`, as the state document shows it."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z") if when else None
