"""The order gate: the one place that decides whether an order may be sent to IB.

`decide` is pure and fails closed: every fact it needs arrives in a `GateContext` built by the
caller at the moment of the order (the arm file is checked then, not cached), and anything it
cannot establish (no account, no price to value a notional limit with, an unknown trading mode)
is a refusal. The gates run in DESIGN.md §5 order (steps 2-7); when several would refuse, the
first one is the answer, so a client always sees the most fundamental reason first.

`dry_run` runs every gate and returns all refusals (for the preview's `would_block_by`);
`blocked_by` keeps only the gates that do not depend on the order (for the state document).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from node.guards import PAPER_ACCOUNT_PREFIX

__all__ = [
    "DEFAULT_NOT_READY_RETRY_S",
    "GATES",
    "Decision",
    "GateContext",
    "OrderIntent",
    "Place",
    "Refuse",
    "blocked_by",
    "decide",
    "dry_run",
]

# Retry-After for not-ready when no backoff deadline is known: long enough not to hammer a
# starting gateway, short enough that a client notices SERVING quickly.
DEFAULT_NOT_READY_RETRY_S = 5.0
# A Retry-After of 0 invites a busy loop against a node that is about to start a gateway.
MIN_RETRY_S = 1.0
# When the rate window's oldest entry is unknown, the whole window is the safe upper bound.
RATE_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class GateContext:
    # No defaults: a forgotten fact must be a type error, never a silently open gate.
    kill_switch: bool
    state: str
    # The broker's own view (socket up, IB reachable, heartbeats answered): the connection can
    # drop, or IB send 1100, a moment before the state machine has handled it, and in that
    # moment the state still says SERVING.
    connected: bool
    next_retry_in: float | None
    orders_enabled: bool
    armed: bool
    trading_mode: str
    live_override: bool
    account: str | None
    max_order_qty: Decimal | None
    max_order_notional: Decimal | None
    max_open_orders: int | None
    open_orders: int
    symbol_allowlist: frozenset[str]
    max_orders_per_minute: int | None
    orders_last_minute: int
    rate_window_frees_in: float | None


@dataclass(frozen=True, slots=True)
class OrderIntent:
    symbol: str
    side: str
    qty: Decimal
    type: str
    limit_price: Decimal | None
    stop_price: Decimal | None
    reference_price: Decimal | None


@dataclass(frozen=True, slots=True)
class Place:
    pass


@dataclass(frozen=True, slots=True)
class Refuse:
    slug: str
    status: int
    detail: str
    retry_after: float | None = None
    # Keyword-only so the problem fields keep their natural order; names the gate for metrics
    # (`ibd_gate_blocks_total{gate}`) and the audit row, where one slug covers several limits.
    gate: str = field(kw_only=True)


Decision = Place | Refuse


# ---------------------------------------------------------------- order-independent gates


def _kill_switch(ctx: GateContext) -> Refuse | None:
    if not ctx.kill_switch:
        return None
    return Refuse(
        "kill-switch-engaged",
        403,
        "the kill switch is engaged; only the operator can clear it, on the laptop "
        "(ibkr-node ctl clear-kill)",
        gate="kill_switch",
    )


def _serving(ctx: GateContext) -> Refuse | None:
    if ctx.state == "SERVING" and ctx.connected:
        return None
    if ctx.state == "SERVING":
        return Refuse(
            "not-ready",
            503,
            "the gateway (or IB behind it) just stopped answering and the node is recovering; "
            "nothing was sent, retrying is safe",
            DEFAULT_NOT_READY_RETRY_S,
            gate="state",
        )
    if ctx.next_retry_in is None:
        retry = DEFAULT_NOT_READY_RETRY_S
    else:
        retry = max(MIN_RETRY_S, ctx.next_retry_in)
    return Refuse(
        "not-ready",
        503,
        f"the node is {ctx.state}, not SERVING; nothing was sent, retrying is safe",
        retry,
        gate="state",
    )


def _orders_enabled(ctx: GateContext) -> Refuse | None:
    if ctx.orders_enabled:
        return None
    return Refuse(
        "orders-disabled",
        403,
        "orders are disabled (ORDERS_ENABLED=false); the operator enables them on the laptop",
        gate="orders_enabled",
    )


def _armed(ctx: GateContext) -> Refuse | None:
    if ctx.armed:
        return None
    return Refuse(
        "not-armed",
        403,
        "orders are not armed: the arm file (ARM_ORDERS_FILE) is missing; the operator creates "
        "it on the laptop",
        gate="armed",
    )


def _live_mismatch(ctx: GateContext) -> str | None:
    account = (ctx.account or "").strip()
    if not account:
        return "the gateway has not reported an account, so the trading mode cannot be confirmed"
    is_paper = account.upper().startswith(PAPER_ACCOUNT_PREFIX)
    if ctx.trading_mode == "paper":
        return None if is_paper else f"paper mode but account {account} is not a paper account"
    if ctx.trading_mode == "live":
        if not ctx.live_override:
            return "live mode without the live override file (LIVE_TRADING_OVERRIDE_FILE)"
        return None if not is_paper else f"live mode but account {account} is a paper account"
    return f"unknown trading mode {ctx.trading_mode!r}"


def _live(ctx: GateContext) -> Refuse | None:
    reason = _live_mismatch(ctx)
    if reason is None:
        return None
    return Refuse("live-trading-not-allowed", 403, reason, gate="trading_mode")


def _open_orders(ctx: GateContext) -> Refuse | None:
    if ctx.max_open_orders is None or ctx.open_orders < ctx.max_open_orders:
        return None
    return Refuse(
        "risk-limit-exceeded",
        403,
        f"{ctx.open_orders} open orders; MAX_OPEN_ORDERS is {ctx.max_open_orders}",
        gate="max_open_orders",
    )


def _rate(ctx: GateContext) -> Refuse | None:
    limit = ctx.max_orders_per_minute
    if limit is None or ctx.orders_last_minute < limit:
        return None
    frees_in = ctx.rate_window_frees_in
    retry = RATE_WINDOW_S if frees_in is None else max(0.0, frees_in)
    return Refuse(
        "rate-limited",
        429,
        f"{ctx.orders_last_minute} orders in the last minute; MAX_ORDERS_PER_MINUTE is {limit}",
        retry,
        gate="max_orders_per_minute",
    )


# ---------------------------------------------------------------- order-dependent gates


def _usable(value: Decimal | None) -> bool:
    # A zero, negative or NaN price would value any order at nothing and slip past the limit.
    return value is not None and value.is_finite() and value > 0


def _qty(ctx: GateContext, order: OrderIntent) -> Refuse | None:
    if not _usable(order.qty):
        # The schema forbids this; the gate does not rely on it.
        return Refuse(
            "risk-limit-exceeded", 403, f"quantity {order.qty} is not positive", gate="order_qty"
        )
    if ctx.max_order_qty is None or order.qty <= ctx.max_order_qty:
        return None
    return Refuse(
        "risk-limit-exceeded",
        403,
        f"quantity {order.qty} is over MAX_ORDER_QTY {ctx.max_order_qty}",
        gate="max_order_qty",
    )


def needs_reference_price(side: str, order_type: str) -> bool:
    """Whether MAX_ORDER_NOTIONAL needs the market's price for such an order: its own prices
    do not bound what it trades at. A market order; a buy stop (it trades at or above its
    stop, at once when the market is already above); a sell limit (at or above its limit)."""
    return order_type == "market" or (side, order_type) in {("buy", "stop"), ("sell", "limit")}


def _valuation(order: OrderIntent) -> Decimal | None:
    """The price MAX_ORDER_NOTIONAL values the order at: the most it can be expected to trade
    at per share, or None when that is not known."""
    own = [p for p in (order.limit_price, order.stop_price) if p is not None and _usable(p)]
    reference = order.reference_price if _usable(order.reference_price) else None
    if needs_reference_price(order.side, order.type):
        return None if reference is None else max([*own, reference])
    if order.side == "buy":  # a limit or stop limit: it never pays more than its limit
        bound = order.limit_price
    elif order.type == "stop":  # a sell stop trades at or below its stop
        bound = order.stop_price
    else:  # a sell stop limit triggers at or below its stop and trades at or above its limit
        bound = max(own) if own else None
    return bound if _usable(bound) else reference


def _notional(ctx: GateContext, order: OrderIntent) -> Refuse | None:
    if ctx.max_order_notional is None:
        return None
    price = _valuation(order)
    if price is None or not _usable(order.qty):
        return Refuse(
            "risk-limit-exceeded",
            403,
            f"no price is known for {order.symbol}, so MAX_ORDER_NOTIONAL "
            f"{ctx.max_order_notional} cannot be checked",
            gate="max_order_notional",
        )
    notional = order.qty * price
    if notional <= ctx.max_order_notional:
        return None
    return Refuse(
        "risk-limit-exceeded",
        403,
        f"notional {notional} ({order.qty} x {price}) is over MAX_ORDER_NOTIONAL "
        f"{ctx.max_order_notional}",
        gate="max_order_notional",
    )


def _allowlist(ctx: GateContext, order: OrderIntent) -> Refuse | None:
    if not ctx.symbol_allowlist:
        return None
    allowed = {s.strip().upper() for s in ctx.symbol_allowlist}
    if order.symbol.strip().upper() in allowed:
        return None
    return Refuse(
        "risk-limit-exceeded",
        403,
        f"{order.symbol} is not in SYMBOL_ALLOWLIST",
        gate="symbol_allowlist",
    )


Gate = Callable[[GateContext, OrderIntent], Refuse | None]


def _ignoring_order(check: Callable[[GateContext], Refuse | None]) -> Gate:
    return lambda ctx, _order: check(ctx)


# DESIGN.md §5 steps 2-7. Within step 7 the 403 limits come before the 429: retrying after
# Retry-After would only meet the 403, so a policy refusal must not hide behind a transient one.
_ORDER_INDEPENDENT: tuple[Callable[[GateContext], Refuse | None], ...] = (
    _kill_switch,
    _serving,
    _orders_enabled,
    _armed,
    _live,
)
GATES: tuple[Gate, ...] = (
    *(_ignoring_order(g) for g in _ORDER_INDEPENDENT),
    _qty,
    _notional,
    _ignoring_order(_open_orders),
    _allowlist,
    _ignoring_order(_rate),
)


def closed_to_every_order(ctx: GateContext) -> Refuse | None:
    """The first refusal of the gates that refuse any order (DESIGN.md §5 steps 2-6): checked
    before IB is asked anything for an order (its quote), then again within `decide`."""
    return next((r for r in (check(ctx) for check in _ORDER_INDEPENDENT) if r is not None), None)


def decide(ctx: GateContext, order: OrderIntent) -> Decision:
    """Place, or the first refusal in gate order."""
    for gate in GATES:
        refusal = gate(ctx, order)
        if refusal is not None:
            return refusal
    return Place()


def dry_run(ctx: GateContext, order: OrderIntent) -> list[Refuse]:
    """Every refusal, in gate order (empty when the order would be placed)."""
    return [r for r in (gate(ctx, order) for gate in GATES) if r is not None]


def blocked_by(ctx: GateContext) -> list[str]:
    """Slugs of the gates that would refuse any order right now, in gate order, no repeats.

    Includes a full MAX_OPEN_ORDERS or MAX_ORDERS_PER_MINUTE, since those block every order too;
    `can_place_orders` is then simply `not blocked_by(ctx)`.
    """
    checks = (*_ORDER_INDEPENDENT, _open_orders, _rate)
    slugs = [r.slug for r in (check(ctx) for check in checks) if r is not None]
    return list(dict.fromkeys(slugs))
