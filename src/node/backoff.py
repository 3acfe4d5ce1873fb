"""Restart pacing: the jittered delay schedule, and the hourly restart budget kept on disk."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from loguru import logger

from node.atomic import write_json_atomic

__all__ = ["BackoffSchedule", "BudgetExhausted", "RestartBudget", "parse_delays"]


def parse_delays(text: str) -> tuple[float, ...]:
    """Parse "2,5,10,30" into seconds; ValueError says what is wrong and what is expected."""
    expected = "expected comma-separated non-negative seconds such as '2,5,10,30,60,120,300'"
    items = [item.strip() for item in text.split(",")]
    if not text.strip():
        raise ValueError(f"backoff delays are empty; {expected}")
    delays: list[float] = []
    for item in items:
        if not item:
            raise ValueError(f"backoff delays {text!r} contain an empty item; {expected}")
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"backoff delay {item!r} is not a number; {expected}") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"backoff delay {item!r} must be a finite number >= 0; {expected}")
        delays.append(value)
    return tuple(delays)


class BackoffSchedule:
    """Delay before restart number `step`; the last delay repeats once the list runs out.

    Jitter spreads restarts so a gateway and its clients do not retry in lock-step; passing a
    seeded `rng` makes the schedule reproducible in tests.
    """

    def __init__(
        self, delays: Sequence[float], jitter: float, rng: random.Random | None = None
    ) -> None:
        if not delays:
            raise ValueError("a backoff schedule needs at least one delay")
        if any(not math.isfinite(d) or d < 0 for d in delays):
            raise ValueError(f"backoff delays must be finite and >= 0, got {list(delays)}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"backoff jitter must be between 0 and 1, got {jitter}")
        self.delays = tuple(float(d) for d in delays)
        self.jitter = jitter
        self._rng = rng if rng is not None else random.Random()

    def base_delay(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"backoff step must be >= 0, got {step}")
        return self.delays[min(step, len(self.delays) - 1)]

    def delay(self, step: int) -> float:
        base = self.base_delay(step)
        if self.jitter == 0:
            return base
        return base * self._rng.uniform(1 - self.jitter, 1 + self.jitter)


class BudgetExhausted(RuntimeError):
    """A restart was recorded although the budget had no free slot."""


@dataclass
class _State:
    starts: list[datetime] = field(default_factory=list)
    attempt: int = 0


class RestartBudget:
    """At most `limit` restarts (starts from BACKOFF) in any sliding `window_s`, kept in `path`.

    The file is re-read before every decision, so an operator who deletes it (as the deployment
    guide says to) resets the budget without restarting the daemon. A file that cannot be read or
    parsed counts as empty: a broken budget file must not keep the gateway down. Starts stamped in
    the future (the wall clock jumped back) still count, which errs on the side of fewer restarts.
    """

    def __init__(self, path: Path, limit: int, window_s: float = 3600) -> None:
        if limit < 1:
            raise ValueError(f"the restart budget needs a limit >= 1, got {limit}")
        if not window_s > 0:
            raise ValueError(f"the restart budget window must be > 0 seconds, got {window_s}")
        self.path = path
        self.limit = limit
        self.window = timedelta(seconds=window_s)
        # Starts whose write failed: kept in memory so a read-only disk cannot lift the limit.
        self._unsaved: list[datetime] = []
        self._complained = False

    # -- decisions -------------------------------------------------------------------------

    def used(self, now: datetime) -> int:
        return self.usage(now)[0]

    def usage(self, now: datetime) -> tuple[int, int]:
        """(starts used in the window, backoff attempt) from one read of the file."""
        state = self._load()
        return len(self._in_window(state.starts, now)), state.attempt

    def available(self, now: datetime) -> bool:
        return self.used(now) < self.limit

    def next_slot_at(self, now: datetime) -> datetime | None:
        """When a slot frees up, or None if one is free now."""
        starts = sorted(self._in_window(self._load().starts, now))
        if len(starts) < self.limit:
            return None
        # With more starts than the limit (the limit was lowered), several must age out first.
        return starts[len(starts) - self.limit] + self.window

    def take(self, now: datetime) -> None:
        state = self._load()
        starts = self._in_window(state.starts, now)
        if len(starts) >= self.limit:
            raise BudgetExhausted(
                f"no restart slot free: {len(starts)} of {self.limit} used in the last "
                f"{self.window.total_seconds():g} s"
            )
        state.starts = [*starts, _utc(now)]
        if not self._save(state):
            self._unsaved.append(_utc(now))

    @property
    def attempt(self) -> int:
        return self._load().attempt

    def set_attempt(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"backoff attempt must be >= 0, got {n}")
        state = self._load()
        state.attempt = n
        self._save(state)

    def reset(self) -> None:
        """Forget every start and the backoff step (`ctl reset-backoff`)."""
        self._unsaved.clear()
        self._save(_State())

    # -- storage ---------------------------------------------------------------------------

    def _in_window(self, starts: list[datetime], now: datetime) -> list[datetime]:
        horizon = _utc(now) - self.window
        return [start for start in starts if start > horizon]

    def _load(self) -> _State:
        state = _State()
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._complain(f"cannot be read ({exc})")
        else:
            try:
                state = _decode(json.loads(text))
            except (ValueError, TypeError, KeyError) as exc:
                self._complain(f"is not valid ({exc})")
            else:
                self._complained = False
        if self._unsaved:
            state.starts = sorted({*state.starts, *self._unsaved})
        return state

    def _complain(self, problem: str) -> None:
        if self._complained:
            return
        self._complained = True
        logger.warning(
            "restart budget file {} {}; treating it as empty (no recent restarts). "
            "Delete it or run `ibkr-node ctl reset-backoff` to start clean.",
            self.path,
            problem,
        )

    def _save(self, state: _State) -> bool:
        payload = {
            "starts": [start.isoformat() for start in sorted(state.starts)],
            "attempt": state.attempt,
        }
        try:
            write_json_atomic(self.path, payload)
        except OSError as exc:
            logger.error(
                "cannot write restart budget file {} ({}); the budget is kept in memory only "
                "until it can be written. Check that the folder exists and is writable.",
                self.path,
                exc,
            )
            return False
        self._unsaved.clear()
        return True


def _decode(raw: Any) -> _State:
    if not isinstance(raw, dict):
        raise TypeError("expected a JSON object")
    starts_raw = raw.get("starts", [])
    attempt = raw.get("attempt", 0)
    if not isinstance(starts_raw, list) or not all(isinstance(s, str) for s in starts_raw):
        raise TypeError("'starts' must be a list of ISO timestamps")
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0:
        raise TypeError("'attempt' must be an integer >= 0")
    starts = [_utc(datetime.fromisoformat(s), naive_ok=True) for s in starts_raw]
    return _State(starts=starts, attempt=attempt)


def _utc(when: datetime, *, naive_ok: bool = False) -> datetime:
    if when.tzinfo is None:
        if not naive_ok:
            raise ValueError(f"expected an aware datetime, got naive {when!r}")
        # A hand-edited file may drop the offset; the file is documented as UTC.
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)
