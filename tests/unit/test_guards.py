"""The lifecycle guards, each as a table."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace
from typing import Any

import pytest

from node.guards import (
    GuardContext,
    account_matches_mode,
    account_mismatch_reason,
    budget_allows,
    login_failures_exhausted,
    may_start,
    not_latched,
    not_operator_stopped,
    window_allows,
)

BASE = GuardContext(
    window_open=True,
    forced=False,
    latched=None,
    operator_stopped=False,
    budget_available=True,
    trading_mode="paper",
    account="DU1234567",
    consecutive_start_failures=0,
    login_failure_limit=3,
)


def ctx(**changes: Any) -> GuardContext:
    return replace(BASE, **changes)


def test_context_is_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        BASE.forced = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("window_open", "forced", "expected"),
    [(True, False, True), (False, True, True), (True, True, True), (False, False, False)],
)
def test_window_allows(window_open: bool, forced: bool, expected: bool) -> None:
    assert window_allows(ctx(window_open=window_open, forced=forced)) is expected


@pytest.mark.parametrize(
    ("latched", "expected"),
    [(None, True), ("needs human: login failed 3 times", False), ("", False)],
)
def test_not_latched(latched: str | None, expected: bool) -> None:
    assert not_latched(ctx(latched=latched)) is expected


@pytest.mark.parametrize(("stopped", "expected"), [(False, True), (True, False)])
def test_not_operator_stopped(stopped: bool, expected: bool) -> None:
    assert not_operator_stopped(ctx(operator_stopped=stopped)) is expected


@pytest.mark.parametrize(
    ("window_open", "forced", "latched", "stopped", "expected"),
    [
        (True, False, None, False, True),
        (False, True, None, False, True),
        (False, False, None, False, False),
        (True, False, "needs human", False, False),
        (False, True, "needs human", False, False),
        (True, False, None, True, False),
        (False, True, None, True, False),
        (False, False, "needs human", True, False),
    ],
)
def test_may_start(
    window_open: bool, forced: bool, latched: str | None, stopped: bool, expected: bool
) -> None:
    context = ctx(window_open=window_open, forced=forced, latched=latched, operator_stopped=stopped)
    assert may_start(context) is expected


@pytest.mark.parametrize(("available", "expected"), [(True, True), (False, False)])
def test_budget_allows(available: bool, expected: bool) -> None:
    assert budget_allows(ctx(budget_available=available)) is expected


@pytest.mark.parametrize(
    ("mode", "account", "reason"),
    [
        ("paper", "DU1234567", None),
        ("paper", "du1234567", None),
        ("paper", "U1234567", "paper mode but account U1234567 is not a paper account (DU...)"),
        ("paper", "U123", "paper mode but account U123 is not a paper account (DU...)"),
        ("paper", None, "paper mode but the gateway reported no account"),
        ("paper", "", "paper mode but the gateway reported no account"),
        ("live", "U1234567", None),
        ("live", "F987654", None),
        ("live", "DU1234567", "live mode but account DU1234567 is a paper account (DU...)"),
        ("live", None, "live mode but the gateway reported no account"),
        ("live", "  ", "live mode but the gateway reported no account"),
        ("demo", "DU1234567", "unknown trading mode 'demo' (expected paper or live)"),
    ],
)
def test_account_against_mode(mode: str, account: str | None, reason: str | None) -> None:
    context = ctx(trading_mode=mode, account=account)
    assert account_mismatch_reason(context) == reason
    assert account_matches_mode(context) is (reason is None)


@pytest.mark.parametrize(
    ("failures", "limit", "expected"),
    [(0, 3, False), (2, 3, False), (3, 3, True), (4, 3, True), (1, 1, True), (0, 1, False)],
)
def test_login_failures_exhausted(failures: int, limit: int, expected: bool) -> None:
    context = ctx(consecutive_start_failures=failures, login_failure_limit=limit)
    assert login_failures_exhausted(context) is expected
