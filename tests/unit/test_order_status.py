"""The IB-to-API status mapping, one row per case of the module's table."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, get_args

import pytest

from node.order_status import (
    KNOWN_BROKER_STATUSES,
    OPEN,
    STATUSES,
    TERMINAL,
    OrderStatus,
    TradeEvent,
    is_known_broker_status,
    is_terminal,
    map_status,
    sse_event_name,
)

D = Decimal
NONE = (D(0), D(10))  # (filled, remaining)
SOME = (D(4), D(6))
ALL = (D(10), D(0))

REJECT = 201  # "order rejected"
WARNING = 399  # "held until the open": the order stays working
CANCELED_NOTICE = 202  # the cancel confirmation
CONNECTION = 1100  # says nothing about the order


ROWS: list[tuple[str, tuple[Decimal, Decimal], dict[str, Any], str]] = [
    # not acknowledged yet
    ("PendingSubmit", NONE, {}, "pending_new"),
    ("ApiPending", NONE, {}, "pending_new"),
    ("PendingSubmit", SOME, {}, "partially_filled"),
    # held by IB, working, partly filled
    ("PreSubmitted", NONE, {}, "accepted"),
    ("PreSubmitted", SOME, {}, "partially_filled"),
    ("Submitted", NONE, {}, "new"),
    ("Submitted", SOME, {}, "partially_filled"),
    ("Submitted", NONE, {"error_code": WARNING}, "new"),
    ("Submitted", NONE, {"error_code": REJECT}, "new"),  # errors only end dead orders
    # done
    ("Filled", ALL, {}, "filled"),
    ("Filled", ALL, {"cancel_requested": True}, "filled"),  # the fill won the race
    ("Filled", SOME, {}, "partially_filled"),  # IB has not finished reporting
    # cancels
    ("PendingCancel", NONE, {}, "pending_cancel"),
    ("PendingCancel", SOME, {}, "pending_cancel"),
    ("Submitted", NONE, {"cancel_requested": True}, "pending_cancel"),
    ("PreSubmitted", SOME, {"cancel_requested": True}, "pending_cancel"),
    ("PendingSubmit", NONE, {"cancel_requested": True}, "pending_cancel"),
    ("ApiCancelled", NONE, {}, "canceled"),
    ("ApiCancelled", NONE, {"cancel_requested": True}, "canceled"),
    ("Cancelled", NONE, {"cancel_requested": True}, "canceled"),
    ("Cancelled", SOME, {"cancel_requested": True}, "canceled"),
    ("Cancelled", NONE, {"cancel_requested": True, "error_code": REJECT}, "canceled"),
    ("Cancelled", NONE, {"cancel_requested": True, "error_code": CANCELED_NOTICE}, "canceled"),
    # IB refused it (ib_async reports this as Cancelled carrying the error)
    ("Cancelled", NONE, {"error_code": REJECT}, "rejected"),
    ("Cancelled", NONE, {"error_code": 200}, "rejected"),  # unknown contract
    ("Cancelled", NONE, {"error_code": 99999}, "rejected"),  # unknown codes fail the request
    ("Cancelled", SOME, {"error_code": REJECT}, "canceled"),  # fills must not be hidden
    # IB ended it, not us
    ("Cancelled", NONE, {}, "expired"),
    ("Cancelled", NONE, {"tif": "ioc"}, "expired"),
    ("Cancelled", SOME, {"tif": "opg"}, "expired"),
    ("Cancelled", NONE, {"tif": "DAY"}, "expired"),
    ("Cancelled", NONE, {"error_code": CANCELED_NOTICE}, "expired"),
    ("Cancelled", NONE, {"tif": "gtc"}, "canceled"),
    ("Cancelled", NONE, {"tif": "gtc", "error_code": WARNING}, "canceled"),
    # Inactive: rejected only with an error that says so
    ("Inactive", NONE, {"error_code": REJECT}, "rejected"),
    ("Inactive", NONE, {"error_code": 460}, "rejected"),  # no trading permission
    ("Inactive", SOME, {"error_code": REJECT}, "canceled"),
    ("Inactive", NONE, {}, "accepted"),
    ("Inactive", SOME, {}, "partially_filled"),
    ("Inactive", NONE, {"error_code": WARNING}, "accepted"),
    ("Inactive", NONE, {"error_code": CONNECTION}, "accepted"),
    ("Inactive", NONE, {"cancel_requested": True}, "pending_cancel"),
    # ValidationError is ib_async noting a warning on a working order: never terminal
    ("ValidationError", NONE, {}, "accepted"),
    ("ValidationError", NONE, {"error_code": REJECT}, "accepted"),
    ("ValidationError", NONE, {"previous": "new"}, "new"),
    ("ValidationError", SOME, {"previous": "new"}, "partially_filled"),
    ("ValidationError", NONE, {"previous": "new", "cancel_requested": True}, "pending_cancel"),
    ("ValidationError", ALL, {"previous": "filled"}, "filled"),
    # unknown statuses: keep what we had, else the cautious open status
    ("ApiUpdate", NONE, {}, "pending_new"),
    ("", NONE, {}, "pending_new"),
    ("SomethingNew", SOME, {}, "partially_filled"),
    ("SomethingNew", NONE, {"previous": "accepted"}, "accepted"),
    ("SomethingNew", NONE, {"previous": "canceled"}, "canceled"),
    ("SomethingNew", NONE, {"cancel_requested": True}, "pending_cancel"),
    ("submitted", NONE, {}, "pending_new"),  # IB's spelling is exact
    # previous never overrides an informative status
    ("Submitted", NONE, {"previous": "accepted"}, "new"),
    ("Cancelled", NONE, {"previous": "new", "tif": "gtc"}, "canceled"),
]


@pytest.mark.parametrize(("broker", "fills", "kwargs", "expected"), ROWS)
def test_map_status(
    broker: str, fills: tuple[Decimal, Decimal], kwargs: dict[str, Any], expected: str
) -> None:
    filled, remaining = fills
    assert map_status(broker, filled, remaining, **kwargs) == expected


@pytest.mark.parametrize("broker", sorted(KNOWN_BROKER_STATUSES))
def test_every_known_status_has_a_row(broker: str) -> None:
    assert broker in {row[0] for row in ROWS}


def test_sets() -> None:
    assert set(get_args(OrderStatus)) == STATUSES
    assert {"filled", "canceled", "expired", "rejected"} == TERMINAL
    assert {"pending_new", "accepted", "new", "partially_filled", "pending_cancel"} == OPEN
    assert not OPEN & TERMINAL
    assert OPEN | TERMINAL == STATUSES


@pytest.mark.parametrize("status", sorted(STATUSES))
def test_is_terminal(status: str) -> None:
    assert is_terminal(status) == (status in TERMINAL)


def test_is_known_broker_status() -> None:
    assert is_known_broker_status("Submitted")
    assert not is_known_broker_status("ApiUpdate")
    assert not is_known_broker_status("submitted")


def test_only_dead_orders_map_to_terminal_statuses() -> None:
    # Without a cancel and without a rejecting error, only Filled (all of it) ends an order,
    # apart from IB's own Cancelled/ApiCancelled.
    for broker in [*sorted(KNOWN_BROKER_STATUSES), "ApiUpdate", "Unknown"]:
        for fills in (NONE, SOME):
            status = map_status(broker, *fills, error_code=WARNING)
            assert is_terminal(status) == (broker in {"Cancelled", "ApiCancelled"}), broker


EVENTS = [
    (None, "pending_new", "pending_new"),
    ("pending_new", "accepted", "pending_new"),
    ("accepted", "new", "new"),
    ("pending_new", "new", "new"),
    ("new", "partially_filled", "partial_fill"),
    ("partially_filled", "partially_filled", "partial_fill"),
    ("partially_filled", "filled", "fill"),
    ("new", "filled", "fill"),
    ("new", "pending_cancel", "pending_cancel"),
    ("pending_cancel", "canceled", "canceled"),
    ("pending_cancel", "new", "new"),  # IB refused the cancel
    ("pending_cancel", "filled", "fill"),
    ("new", "expired", "expired"),
    ("pending_new", "rejected", "rejected"),
]


@pytest.mark.parametrize(("old", "new", "event"), EVENTS)
def test_sse_event_name(old: str | None, new: str, event: str) -> None:
    assert sse_event_name(old, new) == event


def test_every_status_has_an_event_and_every_event_is_used() -> None:
    names = {sse_event_name(None, status) for status in STATUSES}
    assert names == set(get_args(TradeEvent))


@pytest.mark.parametrize(("old", "new"), [("new", "bogus"), ("bogus", "new"), (None, "")])
def test_sse_event_name_rejects_unknown_statuses(old: str | None, new: str) -> None:
    with pytest.raises(ValueError, match="unknown order status"):
        sse_event_name(old, new)
