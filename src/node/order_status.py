"""IB's order status, in the API's (Alpaca's) vocabulary: one pure function and its sets.

The raw IB status is always kept next to ours as `broker_status`; this mapping only decides what
the Pi is told. Where IB is ambiguous the mapping fails closed, and for an order status "closed"
is the dangerous direction: an order reported terminal while IB still works it invites the Pi to
place it again, whereas an order wrongly reported open is merely canceled once more (harmless)
and counted against MAX_OPEN_ORDERS (conservative). So only a status that proves the order is
dead maps to a terminal one. The decisions, row by row (api-conventions §4.3; DESIGN.md §5):

| IB status | condition | ours |
|---|---|---|
| PendingSubmit, ApiPending | nothing filled / some filled | pending_new / partially_filled |
| PreSubmitted | nothing filled / some filled | accepted / partially_filled |
| Submitted | nothing filled / some filled | new / partially_filled |
| Filled | remaining 0 | filled |
| Filled | remaining > 0 | partially_filled (IB is still reporting; stay open) |
| PendingCancel | | pending_cancel |
| ApiCancelled | | canceled (cancelled before it left the API: only we do that) |
| Cancelled | we asked | canceled |
| Cancelled | not asked, rejecting error | rejected, or canceled if some filled (1) |
| Cancelled | not asked, day/ioc/opg | expired (best effort: IB ended it on schedule) |
| Cancelled | not asked, gtc | canceled (someone else did, e.g. in the gateway's window) |
| Inactive | rejecting error | rejected, or canceled if some filled (1) |
| Inactive | no rejecting error | accepted / partially_filled (2) |
| ValidationError | any | previous, else accepted / partially_filled (3) |
| ApiUpdate, unknown, "" | any | previous, else pending_new / partially_filled (3) |

(1) ib_async reports an order IB refused as Cancelled carrying the error. `rejected` promises
that nothing executed, so an order with fills ends `canceled` and keeps its `filled_qty`.

(2) Inactive without an error is IB's "accepted but currently inactive" (held by the exchange or
by a missing permission) and may wake up; calling it rejected would be the unsafe guess, so it
is `accepted`, open and cancelable, until reconciliation or a later status settles it.

(3) These say nothing about the order's progress. ValidationError is not an IB status: ib_async
sets it when a *warning* (399, 404, 110 on a modify...) arrives for an order that IB keeps
working, so it is never terminal whatever the error (api-conventions' "ValidationError ->
rejected" would declare a live order dead). The status the order already had (`previous`) is
kept; without one the cautious open status is used. `is_known_broker_status` tells the caller
to flag an unknown one for reconciliation.

A "rejecting error" is one `ib_errors` classifies as an order or request failure; warnings such
as 399 (held until the open) or 202 (the cancel confirmation) say the order is fine.

Whenever the order is still open and we asked to cancel it, the answer is `pending_cancel`: the
cancel is in flight until IB says Cancelled, and a fill that wins the race still shows as filled.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, get_args

from node.ib_errors import ErrorClass, classify

__all__ = [
    "KNOWN_BROKER_STATUSES",
    "OPEN",
    "STATUSES",
    "TERMINAL",
    "OrderStatus",
    "TradeEvent",
    "is_known_broker_status",
    "is_terminal",
    "map_status",
    "sse_event_name",
]

OrderStatus = Literal[
    "pending_new",
    "accepted",
    "new",
    "partially_filled",
    "filled",
    "pending_cancel",
    "canceled",
    "expired",
    "rejected",
]
TradeEvent = Literal[
    "pending_new", "new", "partial_fill", "fill", "canceled", "expired", "rejected",
    "pending_cancel",
]  # fmt: skip

STATUSES: frozenset[str] = frozenset(get_args(OrderStatus))
TERMINAL: frozenset[str] = frozenset({"filled", "canceled", "expired", "rejected"})
OPEN: frozenset[str] = STATUSES - TERMINAL

# Statuses ib_async reports before IB has answered: not yet an acknowledgement.
PENDING_BROKER_STATUSES: frozenset[str] = frozenset({"PendingSubmit", "ApiPending"})

KNOWN_BROKER_STATUSES = frozenset(
    {
        "PendingSubmit",
        "ApiPending",
        "PreSubmitted",
        "Submitted",
        "Filled",
        "PendingCancel",
        "ApiCancelled",
        "Cancelled",
        "Inactive",
        "ValidationError",
    }
)

# The statuses that say where the order is; ValidationError is only ib_async noting a warning.
_INFORMATIVE = KNOWN_BROKER_STATUSES - {"ValidationError"}
# Time in force values whose unrequested cancel is IB ending the order on schedule.
_SELF_ENDING_TIF = frozenset({"day", "ioc", "opg"})
# Connectivity codes say nothing about the order, and warnings leave it working.
_REJECTING = frozenset({ErrorClass.ORDER_REJECT, ErrorClass.REQUEST_ERROR, ErrorClass.CONFIG_ERROR})


def is_known_broker_status(broker_status: str) -> bool:
    return broker_status in KNOWN_BROKER_STATUSES


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def _rejecting(error_code: int | None) -> bool:
    return error_code is not None and classify(error_code) in _REJECTING


def map_status(
    broker_status: str,
    filled: Decimal,
    remaining: Decimal,
    *,
    cancel_requested: bool = False,
    error_code: int | None = None,
    tif: str = "day",
    previous: OrderStatus | None = None,
) -> OrderStatus:
    """Our status for IB's `broker_status` (see the module's table).

    `previous` is the status the order has now; it only matters for statuses that carry no news
    (ValidationError, ApiUpdate, unknown ones), which keep it rather than guess.
    """
    some_filled = filled > 0
    terminal = _terminal(broker_status, some_filled, remaining, cancel_requested, error_code, tif)
    if terminal is not None:
        return terminal
    uninformative = broker_status not in _INFORMATIVE
    if uninformative and previous in TERMINAL:
        return previous
    if cancel_requested or broker_status == "PendingCancel":
        return "pending_cancel"
    if some_filled:
        return "partially_filled"
    if uninformative and previous is not None:
        return previous
    if broker_status in ("PreSubmitted", "Inactive", "ValidationError"):
        return "accepted"
    if broker_status == "Submitted":
        return "new"
    return "pending_new"


def _terminal(
    broker_status: str,
    some_filled: bool,
    remaining: Decimal,
    cancel_requested: bool,
    error_code: int | None,
    tif: str,
) -> OrderStatus | None:
    if broker_status == "Filled":
        return "filled" if remaining <= 0 else None
    if broker_status == "ApiCancelled":
        return "canceled"
    if broker_status == "Cancelled":
        if cancel_requested:
            return "canceled"
        if _rejecting(error_code):
            return "canceled" if some_filled else "rejected"
        return "expired" if tif.lower() in _SELF_ENDING_TIF else "canceled"
    if broker_status == "Inactive" and _rejecting(error_code):
        return "canceled" if some_filled else "rejected"
    return None


_EVENT_FOR: dict[str, TradeEvent] = {
    "pending_new": "pending_new",
    # PreSubmitted: IB holds the order and has not routed it; Alpaca's `new` means routed.
    "accepted": "pending_new",
    "new": "new",
    "partially_filled": "partial_fill",
    "filled": "fill",
    "pending_cancel": "pending_cancel",
    "canceled": "canceled",
    "expired": "expired",
    "rejected": "rejected",
}


def sse_event_name(old_status: str | None, new_status: str) -> TradeEvent:
    """The `trade_updates` event name announcing a change from `old_status` to `new_status`.

    The name is the state arrived at, as in Alpaca's stream, so a cancel that IB refuses
    (pending_cancel back to new) is announced as `new`. `old_status` is None for an order's
    first event; both are checked so a typo at a call site fails loudly rather than publishing
    an event no client knows.
    """
    if old_status is not None and old_status not in STATUSES:
        raise ValueError(f"unknown order status {old_status!r}")
    try:
        return _EVENT_FOR[new_status]
    except KeyError:
        raise ValueError(f"unknown order status {new_status!r}") from None
