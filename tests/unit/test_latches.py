"""The operator's persisted decisions: round trip, and damaged files never crash start-up."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from node.latches import OperatorState

NOW = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "operator_state.json"
    state = OperatorState(path)
    state.force(datetime(2026, 11, 23, 18, 0, tzinfo=UTC))
    state.set_stopped(True)
    state.latch("needs human: test")
    again = OperatorState(path)
    assert again.forced(NOW)
    assert not again.forced(datetime(2026, 11, 23, 19, 0, tzinfo=UTC))
    assert again.stopped
    assert again.latched == "needs human: test"
    again.force(None)
    assert OperatorState(path).forced_until is None


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"forced_until": "garbage"}',
        '{"forced_until": "2026-11-23T18:00:00"}',  # naive
        '{"forced_until": 5}',
        '{"stopped": "false"}',
        '{"latched": 3}',
    ],
)
def test_damaged_file_means_no_decisions_and_the_kill_switch_engaged(
    tmp_path: Path, content: str
) -> None:
    """The file may have held an engaged kill switch: no order goes out until the operator
    has looked (`ctl clear-kill`)."""
    path = tmp_path / "operator_state.json"
    path.write_text(content, encoding="utf-8")
    state = OperatorState(path)
    assert state.forced_until is None
    assert not state.forced(NOW)
    assert not state.stopped
    assert state.latched is None
    assert state.kill_switch
    state.clear_kill()
    assert not OperatorState(path).kill_switch


def test_unreadable_file_engages_the_kill_switch(tmp_path: Path) -> None:
    path = tmp_path / "operator_state.json"
    path.mkdir()  # exists, but cannot be read as a file
    assert OperatorState(path).kill_switch


def test_no_file_means_no_kill_switch(tmp_path: Path) -> None:
    assert not OperatorState(tmp_path / "operator_state.json").kill_switch


def test_unwritable_folder_keeps_the_decision_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    state = OperatorState(blocker / "operator_state.json")  # its folder is a file
    state.set_stopped(True)
    assert state.stopped
