"""The order gate as tables: each gate alone, their order, and every combination of the
order-independent gates."""

from __future__ import annotations

import itertools
from dataclasses import FrozenInstanceError, replace
from decimal import Decimal
from typing import Any

import pytest

from node.safety import (
    DEFAULT_NOT_READY_RETRY_S,
    GateContext,
    OrderIntent,
    Place,
    Refuse,
    blocked_by,
    decide,
    dry_run,
)
from support import OPEN_GATE

D = Decimal

OPEN = OPEN_GATE

ORDER = OrderIntent(
    symbol="AAPL",
    side="buy",
    qty=D("10"),
    type="limit",
    limit_price=D("100"),
    stop_price=None,
    reference_price=None,
)


def ctx(**changes: Any) -> GateContext:
    return replace(OPEN, **changes)


def order(**changes: Any) -> OrderIntent:
    return replace(ORDER, **changes)


def refusal(decision: Place | Refuse) -> Refuse:
    assert isinstance(decision, Refuse), decision
    return decision


def test_everything_open_places() -> None:
    assert decide(OPEN, ORDER) == Place()
    assert dry_run(OPEN, ORDER) == []
    assert blocked_by(OPEN) == []


def test_inputs_are_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        OPEN.armed = False  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        ORDER.qty = D(1)  # type: ignore[misc]


# ---------------------------------------------------------------- each gate alone


@pytest.mark.parametrize(
    ("changes", "slug", "status", "gate"),
    [
        ({"kill_switch": True}, "kill-switch-engaged", 403, "kill_switch"),
        ({"state": "BACKOFF"}, "not-ready", 503, "state"),
        ({"state": "DEGRADED"}, "not-ready", 503, "state"),
        ({"state": "CONNECTED"}, "not-ready", 503, "state"),
        ({"state": "OFF"}, "not-ready", 503, "state"),
        ({"state": "STARTING_GATEWAY"}, "not-ready", 503, "state"),
        ({"connected": False}, "not-ready", 503, "state"),  # dropped, not yet handled
        ({"orders_enabled": False}, "orders-disabled", 403, "orders_enabled"),
        ({"armed": False}, "not-armed", 403, "armed"),
        ({"trading_mode": "live"}, "live-trading-not-allowed", 403, "trading_mode"),
        ({"account": "U1234567"}, "live-trading-not-allowed", 403, "trading_mode"),
        ({"account": None}, "live-trading-not-allowed", 403, "trading_mode"),
        ({"account": "  "}, "live-trading-not-allowed", 403, "trading_mode"),
        ({"trading_mode": "demo"}, "live-trading-not-allowed", 403, "trading_mode"),
        ({"max_order_qty": D("9")}, "risk-limit-exceeded", 403, "max_order_qty"),
        ({"max_order_notional": D("999.99")}, "risk-limit-exceeded", 403, "max_order_notional"),
        ({"max_open_orders": 3, "open_orders": 3}, "risk-limit-exceeded", 403, "max_open_orders"),
        ({"max_open_orders": 0}, "risk-limit-exceeded", 403, "max_open_orders"),
        ({"symbol_allowlist": frozenset({"MSFT"})}, "risk-limit-exceeded", 403,
         "symbol_allowlist"),
        ({"max_orders_per_minute": 5, "orders_last_minute": 5}, "rate-limited", 429,
         "max_orders_per_minute"),
    ],
)  # fmt: skip
def test_each_gate_refuses_alone(
    changes: dict[str, Any], slug: str, status: int, gate: str
) -> None:
    refused = refusal(decide(ctx(**changes), ORDER))
    assert (refused.slug, refused.status, refused.gate) == (slug, status, gate)
    assert refused.detail
    assert [r.slug for r in dry_run(ctx(**changes), ORDER)] == [slug]


@pytest.mark.parametrize(
    "changes",
    [
        {"max_order_qty": D("10")},  # at the limit is allowed
        {"max_order_notional": D("1000")},
        {"max_open_orders": 3, "open_orders": 2},
        {"symbol_allowlist": frozenset({"AAPL", "MSFT"})},
        {"symbol_allowlist": frozenset({"aapl"})},  # case does not matter
        {"max_orders_per_minute": 5, "orders_last_minute": 4},
        {"trading_mode": "live", "live_override": True, "account": "U1234567"},
        {"live_override": True},  # the override file means nothing in paper mode
        {"account": "du1234567"},
    ],
)
def test_limits_that_are_not_reached_place(changes: dict[str, Any]) -> None:
    assert decide(ctx(**changes), ORDER) == Place()


# ---------------------------------------------------------------- retry_after


@pytest.mark.parametrize(
    ("next_retry_in", "expected"),
    [(None, DEFAULT_NOT_READY_RETRY_S), (42.5, 42.5), (0.2, 1.0), (-3.0, 1.0)],
)
def test_not_ready_retry_after(next_retry_in: float | None, expected: float) -> None:
    refused = refusal(decide(ctx(state="BACKOFF", next_retry_in=next_retry_in), ORDER))
    assert refused.retry_after == expected


@pytest.mark.parametrize(("frees_in", "expected"), [(12.5, 12.5), (None, 60.0), (-1.0, 0.0)])
def test_rate_limited_retry_after(frees_in: float | None, expected: float) -> None:
    c = ctx(max_orders_per_minute=2, orders_last_minute=2, rate_window_frees_in=frees_in)
    assert refusal(decide(c, ORDER)).retry_after == expected


def test_policy_refusals_have_no_retry_after() -> None:
    for c in (ctx(kill_switch=True), ctx(armed=False), ctx(max_order_qty=D(1))):
        assert refusal(decide(c, ORDER)).retry_after is None


# ---------------------------------------------------------------- the notional price


@pytest.mark.parametrize(
    ("changes", "places"),
    [
        # a buy limit never pays more than its limit, whatever the market
        ({"limit_price": D("100"), "stop_price": D("200"), "reference_price": D("300")}, True),
        ({"limit_price": D("101")}, False),
        ({"type": "stop_limit", "limit_price": D("100"), "stop_price": D("90")}, True),
        # a sell stop trades at or below its stop
        ({"side": "sell", "type": "stop", "limit_price": None, "stop_price": D("100")}, True),
        ({"side": "sell", "type": "stop", "limit_price": None, "stop_price": D("100.01")}, False),
        # a sell stop limit: at or below its stop, at or above its limit
        (
            {"side": "sell", "type": "stop_limit", "limit_price": D("99"), "stop_price": D("100")},
            True,
        ),
        (
            {"side": "sell", "type": "stop_limit", "limit_price": D("101"), "stop_price": D("99")},
            False,
        ),
        # a buy stop trades at or above its stop (at once, at the market, when that is higher)
        (
            {
                "type": "stop",
                "limit_price": None,
                "stop_price": D("100"),
                "reference_price": D("100"),
            },
            True,
        ),
        (
            {
                "type": "stop",
                "limit_price": None,
                "stop_price": D("90"),
                "reference_price": D("100.01"),
            },
            False,
        ),
        ({"type": "stop", "limit_price": None, "stop_price": D("100.01")}, False),
        ({"type": "stop", "limit_price": None, "stop_price": D("1")}, False),  # no market price
        # a sell limit trades at or above its limit: a limit far below the market is no bound
        ({"side": "sell", "limit_price": D("0.01"), "reference_price": D("100.01")}, False),
        ({"side": "sell", "limit_price": D("100"), "reference_price": D("99")}, True),
        ({"side": "sell", "limit_price": D("1")}, False),  # no market price
        # a market order at the caller's reference (last or ask)
        ({"type": "market", "limit_price": None, "reference_price": D("100")}, True),
        ({"type": "market", "limit_price": None, "reference_price": D("100.5")}, False),
        # no price at all: cannot check, so refuse
        ({"type": "market", "limit_price": None, "reference_price": None}, False),
        # unusable prices do not count as known
        ({"type": "market", "limit_price": None, "reference_price": D("0")}, False),
        ({"type": "market", "limit_price": None, "reference_price": D("-5")}, False),
        ({"type": "market", "limit_price": None, "reference_price": D("NaN")}, False),
        ({"type": "market", "limit_price": None, "reference_price": D("Infinity")}, False),
        # a bad limit price falls through to the next known one
        ({"limit_price": D("0"), "reference_price": D("50")}, True),
    ],
)
def test_notional_limit(changes: dict[str, Any], places: bool) -> None:
    decision = decide(ctx(max_order_notional=D("1000")), order(**changes))
    if places:
        assert decision == Place()
    else:
        assert refusal(decision).gate == "max_order_notional"


def test_no_price_is_fine_without_a_notional_limit() -> None:
    market = order(type="market", limit_price=None, reference_price=None)
    assert decide(OPEN, market) == Place()


@pytest.mark.parametrize("qty", [D("0"), D("-1"), D("NaN"), D("-Infinity")])
def test_a_non_positive_quantity_is_refused_even_without_limits(qty: Decimal) -> None:
    refused = refusal(decide(OPEN, order(qty=qty)))
    assert (refused.slug, refused.gate) == ("risk-limit-exceeded", "order_qty")


def test_allowlist_ignores_case() -> None:
    c = ctx(symbol_allowlist=frozenset({"AAPL"}))
    assert decide(c, order(symbol="aapl")) == Place()
    assert refusal(decide(c, order(symbol="AAPL.B"))).gate == "symbol_allowlist"


# ---------------------------------------------------------------- order of the gates

EVERYTHING_FAILS = ctx(
    kill_switch=True,
    state="BACKOFF",
    orders_enabled=False,
    armed=False,
    trading_mode="live",
    account="DU1",
    max_order_qty=D(1),
    max_order_notional=D(1),
    max_open_orders=1,
    open_orders=1,
    symbol_allowlist=frozenset({"MSFT"}),
    max_orders_per_minute=1,
    orders_last_minute=1,
    rate_window_frees_in=30.0,
)
GATE_ORDER: list[tuple[str, dict[str, Any]]] = [
    ("kill_switch", {"kill_switch": False}),
    ("state", {"state": "SERVING"}),
    ("orders_enabled", {"orders_enabled": True}),
    ("armed", {"armed": True}),
    ("trading_mode", {"trading_mode": "paper"}),
    ("max_order_qty", {"max_order_qty": None}),
    ("max_order_notional", {"max_order_notional": None}),
    ("max_open_orders", {"max_open_orders": None}),
    ("symbol_allowlist", {"symbol_allowlist": frozenset()}),
    ("max_orders_per_minute", {"max_orders_per_minute": None}),
]


def test_a_connection_dropped_before_the_machine_noticed_is_not_ready() -> None:
    """The broker has forgotten the account, the state still says SERVING: a retryable 503,
    never a 403 live-trading refusal (a client would not retry that)."""
    refused = refusal(decide(ctx(connected=False, account=None), ORDER))
    assert (refused.slug, refused.status) == ("not-ready", 503)
    assert refused.retry_after is not None


def test_the_first_failing_gate_wins_in_design_order() -> None:
    c = EVERYTHING_FAILS
    for gate, fix in GATE_ORDER:
        assert refusal(decide(c, ORDER)).gate == gate
        c = replace(c, **fix)
    assert decide(c, ORDER) == Place()


def test_dry_run_lists_every_refusal_in_order() -> None:
    assert [r.gate for r in dry_run(EVERYTHING_FAILS, ORDER)] == [g for g, _ in GATE_ORDER]
    # ... and its first entry is always decide's answer
    assert dry_run(EVERYTHING_FAILS, ORDER)[0] == decide(EVERYTHING_FAILS, ORDER)


def test_blocked_by_keeps_only_order_independent_gates_without_repeats() -> None:
    assert blocked_by(EVERYTHING_FAILS) == [
        "kill-switch-engaged",
        "not-ready",
        "orders-disabled",
        "not-armed",
        "live-trading-not-allowed",
        "risk-limit-exceeded",  # MAX_OPEN_ORDERS is full: no order can pass
        "rate-limited",
    ]
    assert blocked_by(ctx(max_order_qty=D(1), symbol_allowlist=frozenset({"X"}))) == []


def test_rate_limit_comes_after_every_policy_refusal() -> None:
    c = ctx(max_orders_per_minute=1, orders_last_minute=1, max_order_qty=D(1))
    assert refusal(decide(c, ORDER)).slug == "risk-limit-exceeded"


# ---------------------------------------------------------------- every combination

ACCOUNTS = ["DU1234567", "U7654321", None]


def expected_slug(
    kill: bool, serving: bool, enabled: bool, armed: bool, mode: str, override: bool,
    account: str | None,
) -> str | None:  # fmt: skip
    # Written independently of safety.py, straight from DESIGN.md §5.
    if kill:
        return "kill-switch-engaged"
    if not serving:
        return "not-ready"
    if not enabled:
        return "orders-disabled"
    if not armed:
        return "not-armed"
    if account is None:
        return "live-trading-not-allowed"
    paper_account = account.startswith("DU")
    if mode == "paper" and not paper_account:
        return "live-trading-not-allowed"
    if mode == "live" and (not override or paper_account):
        return "live-trading-not-allowed"
    return None


COMBINATIONS = list(
    itertools.product(
        [False, True], [False, True], [False, True], [False, True], ["paper", "live"],
        [False, True], ACCOUNTS,
    )
)  # fmt: skip


@pytest.mark.parametrize(
    ("kill", "serving", "enabled", "armed", "mode", "override", "account"), COMBINATIONS
)
def test_every_combination(
    kill: bool, serving: bool, enabled: bool, armed: bool, mode: str, override: bool,
    account: str | None,
) -> None:  # fmt: skip
    c = ctx(
        kill_switch=kill,
        state="SERVING" if serving else "DEGRADED",
        orders_enabled=enabled,
        armed=armed,
        trading_mode=mode,
        live_override=override,
        account=account,
    )
    want = expected_slug(kill, serving, enabled, armed, mode, override, account)
    decision = decide(c, ORDER)
    if want is None:
        assert decision == Place()
        assert blocked_by(c) == []
    else:
        assert refusal(decision).slug == want
        assert blocked_by(c)[0] == want
    assert len(COMBINATIONS) == 2**6 * 3
