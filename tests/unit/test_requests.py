"""placeOrder parsing, fed the exact fields ib_async 2.1 writes at server versions 157 and 178."""

from __future__ import annotations

import pytest
from ib_async import ComboLeg, Contract, LimitOrder, MarketOrder, Order, Stock, StopLimitOrder
from ib_async.client import Client
from ib_async.order import OrderCondition, PriceCondition

from node.sim.requests import RequestError, parse_place_order


def ib_async_fields(version: int, contract: Contract, order: Order, order_id: int = 7) -> list[str]:
    """What ib_async puts on the wire for this order, split into fields."""
    client = Client(wrapper=None)  # type: ignore[arg-type]
    client._serverVersion = version
    client.connState = Client.CONNECTED
    sent: list[str] = []
    client.sendMsg = sent.append  # type: ignore[method-assign]
    client.placeOrder(order_id, contract, order)
    [message] = sent
    return message.split("\0")[:-1] if message.endswith("\0") else message.split("\0")


AAPL = Stock("AAPL", "SMART", "USD")


@pytest.mark.parametrize("version", [157, 178])
def test_limit_order_fields(version: int) -> None:
    order = LimitOrder(
        "BUY",
        10,
        187.5,
        tif="GTC",
        orderRef="coid-1",
        outsideRth=True,
        goodTillDate="20261231 23:59:59 UTC",
    )
    fields = ib_async_fields(version, AAPL, order)
    assert len(fields) == (110 if version == 157 else 114)
    request = parse_place_order(fields, version, client_id=3)
    assert (request.client_id, request.order_id) == (3, 7)
    assert (request.symbol, request.sec_type, request.currency) == ("AAPL", "STK", "USD")
    assert (request.action, request.total_quantity, request.order_type) == ("BUY", 10.0, "LMT")
    assert (request.lmt_price, request.aux_price, request.tif) == (187.5, None, "GTC")
    assert request.order_ref == "coid-1"
    assert request.outside_rth is True
    assert request.good_till_date == "20261231 23:59:59 UTC"
    assert request.what_if is False
    assert request.unsupported == ""


@pytest.mark.parametrize("version", [157, 178])
def test_stop_limit_and_what_if(version: int) -> None:
    order = StopLimitOrder("SELL", 5, 99.0, 100.0)
    order.whatIf = True
    request = parse_place_order(ib_async_fields(version, AAPL, order), version, 1)
    assert (request.order_type, request.lmt_price, request.aux_price) == ("STP LMT", 99.0, 100.0)
    assert request.what_if is True


def test_market_order_defaults_tif_to_day() -> None:
    request = parse_place_order(ib_async_fields(178, AAPL, MarketOrder("BUY", 1)), 178, 1)
    assert request.tif == "DAY"
    assert request.lmt_price is None


def test_algo_and_conditions_are_flagged_unsupported() -> None:
    algo = LimitOrder("BUY", 1, 10.0, algoStrategy="Adaptive")
    assert parse_place_order(ib_async_fields(178, AAPL, algo), 178, 1).unsupported == "algo order"
    conditional = LimitOrder("BUY", 1, 10.0)
    condition: OrderCondition = PriceCondition(conId=265598, exch="SMART", price=200.0)
    conditional.conditions = [condition]
    request = parse_place_order(ib_async_fields(178, AAPL, conditional), 178, 1)
    assert request.unsupported == "conditional order"


def test_combo_is_flagged_unsupported() -> None:
    bag = Contract(
        secType="BAG",
        symbol="AAPL",
        exchange="SMART",
        currency="USD",
        comboLegs=[ComboLeg(conId=265598, ratio=1, action="BUY", exchange="SMART")],
    )
    request = parse_place_order(ib_async_fields(178, bag, LimitOrder("BUY", 1, 1.0)), 178, 1)
    assert request.unsupported == "combo (BAG) order"


@pytest.mark.parametrize(
    "fields",
    [["3"], ["3", "1", "0", "AAPL"], ["3", "x"], ["3", "1", *["0"] * 15, "abc"]],
)
def test_truncated_or_garbled_orders_raise_request_error(fields: list[str]) -> None:
    with pytest.raises(RequestError):
        parse_place_order(fields, 178, 1)
