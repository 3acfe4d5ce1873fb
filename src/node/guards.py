"""Transition conditions of the lifecycle machine: pure predicates over one snapshot.

The machine builds a `GuardContext` from its current facts and asks these; keeping them free of
I/O is what lets every combination be checked as a table.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "PAPER_ACCOUNT_PREFIX",
    "GuardContext",
    "account_matches_mode",
    "account_mismatch_reason",
    "budget_allows",
    "login_failures_exhausted",
    "may_start",
    "not_latched",
    "not_operator_stopped",
    "window_allows",
]

# IB gives every paper account an id starting with "DU"; live ones never do.
PAPER_ACCOUNT_PREFIX = "DU"


@dataclass(frozen=True, slots=True)
class GuardContext:
    # No defaults: a forgotten field must be a type error, not a silently permissive guard.
    window_open: bool
    forced: bool
    latched: str | None
    operator_stopped: bool
    budget_available: bool
    trading_mode: str
    account: str | None
    consecutive_start_failures: int
    login_failure_limit: int


def window_allows(ctx: GuardContext) -> bool:
    return ctx.window_open or ctx.forced


def not_latched(ctx: GuardContext) -> bool:
    return ctx.latched is None


def not_operator_stopped(ctx: GuardContext) -> bool:
    return not ctx.operator_stopped


def may_start(ctx: GuardContext) -> bool:
    return window_allows(ctx) and not_latched(ctx) and not_operator_stopped(ctx)


def budget_allows(ctx: GuardContext) -> bool:
    return ctx.budget_available


def account_matches_mode(ctx: GuardContext) -> bool:
    return account_mismatch_reason(ctx) is None


def account_mismatch_reason(ctx: GuardContext) -> str | None:
    """Why the connected account does not fit the trading mode, in the operator's words."""
    account = (ctx.account or "").strip()
    is_paper = account.upper().startswith(PAPER_ACCOUNT_PREFIX)
    if ctx.trading_mode == "paper":
        if not account:
            return "paper mode but the gateway reported no account"
        if not is_paper:
            return f"paper mode but account {account} is not a paper account (DU...)"
        return None
    if ctx.trading_mode == "live":
        if not account:
            return "live mode but the gateway reported no account"
        if is_paper:
            return f"live mode but account {account} is a paper account (DU...)"
        return None
    return f"unknown trading mode {ctx.trading_mode!r} (expected paper or live)"


def login_failures_exhausted(ctx: GuardContext) -> bool:
    """Enough failed starts in a row that retrying risks an IB account lock-out."""
    return ctx.consecutive_start_failures >= ctx.login_failure_limit
