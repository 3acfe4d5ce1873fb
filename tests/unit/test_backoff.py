"""The restart delay schedule and the hourly restart budget kept in restart_state.json."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from loguru import logger

from node.backoff import BackoffSchedule, BudgetExhausted, RestartBudget, parse_delays

T0 = datetime(2024, 3, 4, 14, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{level} {message}")
    yield lines
    logger.remove(sink)


# -- parse_delays ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2,5,10,30,60,120,300", (2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)),
        ("1", (1.0,)),
        (" 0.5 , 2 ", (0.5, 2.0)),
        ("0", (0.0,)),
    ],
)
def test_parse_delays_accepts(text: str, expected: tuple[float, ...]) -> None:
    assert parse_delays(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("2,,5", "empty item"),
        ("2,5,", "empty item"),
        ("2,-5", ">= 0"),
        ("2,abc", "not a number"),
        ("nan", "finite"),
        ("inf", "finite"),
    ],
)
def test_parse_delays_rejects_with_a_clear_message(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        parse_delays(text)
    assert "2,5,10,30" in str(info.value)  # every message shows the expected form


# -- BackoffSchedule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "base"),
    [(0, 2.0), (1, 5.0), (2, 10.0), (3, 10.0), (100, 10.0)],
)
def test_schedule_without_jitter_repeats_the_last_delay(step: int, base: float) -> None:
    schedule = BackoffSchedule([2, 5, 10], jitter=0)
    assert schedule.delay(step) == base
    assert schedule.base_delay(step) == base


def test_schedule_jitter_stays_within_bounds() -> None:
    schedule = BackoffSchedule([10, 100], jitter=0.2, rng=random.Random(1))
    delays = [schedule.delay(1) for _ in range(500)]
    assert all(80 <= d <= 120 for d in delays)
    assert len(set(delays)) > 1
    assert min(delays) < 90 < 110 < max(delays)


def test_schedule_is_reproducible_given_the_rng() -> None:
    first = BackoffSchedule([2, 5, 10], jitter=0.2, rng=random.Random(42))
    second = BackoffSchedule([2, 5, 10], jitter=0.2, rng=random.Random(42))
    assert [first.delay(s) for s in range(6)] == [second.delay(s) for s in range(6)]


@pytest.mark.parametrize(
    ("delays", "jitter"),
    [([], 0.2), ([1, -1], 0.2), ([1], -0.1), ([1], 1.5), ([float("nan")], 0)],
)
def test_schedule_rejects_bad_arguments(delays: list[float], jitter: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        BackoffSchedule(delays, jitter)


def test_schedule_rejects_a_negative_step() -> None:
    with pytest.raises(ValueError, match="step"):
        BackoffSchedule([1], 0).delay(-1)


# -- RestartBudget -----------------------------------------------------------------------------


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "restart_state.json"


def test_budget_fills_and_frees_as_starts_leave_the_hour(path: Path) -> None:
    budget = RestartBudget(path, limit=3)
    for t in (0, 600, 1200):
        assert budget.available(at(t))
        assert budget.next_slot_at(at(t)) is None
        budget.take(at(t))
    assert budget.used(at(1200)) == 3
    assert not budget.available(at(1300))
    assert budget.next_slot_at(at(1300)) == at(3600)
    with pytest.raises(BudgetExhausted):
        budget.take(at(1300))
    # The oldest start leaves the window exactly one hour after it was taken.
    assert not budget.available(at(3599))
    assert budget.available(at(3600))
    assert budget.used(at(3600)) == 2
    assert budget.used(at(4800)) == 0


def test_budget_persists_iso_utc_and_prunes_old_starts(path: Path) -> None:
    budget = RestartBudget(path, limit=5)
    budget.take(at(0))
    budget.take(at(600).astimezone(timezone(timedelta(hours=-5))))  # stored as UTC
    budget.take(at(4000))
    data = json.loads(path.read_text())
    assert data["attempt"] == 0
    # The first start was an hour old when the third was taken.
    assert data["starts"] == [
        "2024-03-04T14:10:00+00:00",
        "2024-03-04T15:06:40+00:00",
    ]
    # A second instance (a restarted daemon) sees the same budget.
    assert RestartBudget(path, limit=5).used(at(4000)) == 2


def test_budget_rereads_the_file_so_deleting_it_resets(path: Path) -> None:
    budget = RestartBudget(path, limit=1)
    budget.take(at(0))
    budget.set_attempt(4)
    assert not budget.available(at(10))
    path.unlink()
    assert budget.available(at(10))
    assert budget.attempt == 0


def test_budget_sees_changes_made_by_another_writer(path: Path) -> None:
    budget = RestartBudget(path, limit=2)
    other = RestartBudget(path, limit=2)
    budget.take(at(0))
    other.take(at(5))
    assert not budget.available(at(10))


def test_attempt_and_reset(path: Path) -> None:
    budget = RestartBudget(path, limit=2)
    assert budget.attempt == 0
    budget.set_attempt(3)
    budget.take(at(0))
    assert budget.attempt == 3
    assert budget.used(at(0)) == 1
    budget.reset()
    assert budget.attempt == 0
    assert budget.used(at(0)) == 0
    assert json.loads(path.read_text()) == {"starts": [], "attempt": 0}
    with pytest.raises(ValueError, match="attempt"):
        budget.set_attempt(-1)


def test_next_slot_when_the_limit_was_lowered(path: Path) -> None:
    RestartBudget(path, limit=5).take(at(0))
    RestartBudget(path, limit=5).take(at(100))
    RestartBudget(path, limit=5).take(at(200))
    lowered = RestartBudget(path, limit=2)
    # Two of the three starts must age out before one of two slots is free.
    assert lowered.next_slot_at(at(300)) == at(3700)


def test_future_starts_count_against_the_budget(path: Path) -> None:
    budget = RestartBudget(path, limit=1)
    budget.take(at(600))
    # The wall clock jumped back ten minutes: the start still counts.
    assert not budget.available(at(0))


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"starts": "yesterday"}',
        '{"starts": ["not a time"]}',
        '{"starts": [], "attempt": -2}',
        '{"starts": [], "attempt": "3"}',
        "",
    ],
)
def test_corrupt_file_counts_as_empty_and_is_logged_once(
    path: Path, content: str, log_lines: list[str]
) -> None:
    path.write_text(content)
    budget = RestartBudget(path, limit=1)
    assert budget.used(at(0)) == 0
    assert budget.available(at(0))
    assert budget.attempt == 0
    warnings = [line for line in log_lines if line.startswith("WARNING")]
    assert len(warnings) == 1
    assert str(path) in warnings[0]
    assert "reset-backoff" in warnings[0]
    # Taking a slot rewrites the file cleanly.
    budget.take(at(0))
    assert not budget.available(at(1))
    assert json.loads(path.read_text())["starts"] == [at(0).isoformat()]


def test_naive_timestamps_in_the_file_are_read_as_utc(path: Path) -> None:
    path.write_text(json.dumps({"starts": ["2024-03-04T14:00:00"], "attempt": 1}))
    budget = RestartBudget(path, limit=1)
    assert budget.next_slot_at(at(60)) == at(3600)
    assert budget.attempt == 1


def test_missing_folder_is_created(tmp_path: Path) -> None:
    path = tmp_path / "state" / "nested" / "restart_state.json"
    budget = RestartBudget(path, limit=2)
    assert budget.used(at(0)) == 0
    budget.take(at(0))
    assert path.exists()
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind


def test_unwritable_location_keeps_the_budget_in_memory(
    tmp_path: Path, log_lines: list[str]
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    budget = RestartBudget(blocker / "restart_state.json", limit=1)
    budget.take(at(0))
    assert not budget.available(at(1))
    assert any(line.startswith("ERROR") and "cannot write" in line for line in log_lines)


def test_naive_now_is_refused(path: Path) -> None:
    with pytest.raises(ValueError, match="aware"):
        RestartBudget(path, limit=1).take(datetime(2024, 3, 4, 14, 0))


@pytest.mark.parametrize(("limit", "window"), [(0, 3600.0), (1, 0.0)])
def test_budget_rejects_bad_arguments(path: Path, limit: int, window: float) -> None:
    with pytest.raises(ValueError, match="restart budget"):
        RestartBudget(path, limit=limit, window_s=window)


def test_unreadable_file_counts_as_empty(path: Path, log_lines: list[str]) -> None:
    path.mkdir()  # reading a folder fails with an OSError, like a file locked by another program
    budget = RestartBudget(path, limit=2)
    assert budget.available(at(0))
    assert budget.used(at(0)) == 0
    assert sum("cannot be read" in line for line in log_lines) == 1
