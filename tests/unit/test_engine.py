"""The order engine and account, without sockets: matching, fills, money."""

from __future__ import annotations

import pytest

from node.sim.account import Account
from node.sim.engine import (
    AccountChanged,
    Event,
    OrderChanged,
    OrderEngine,
    OrderError,
    OrderFilled,
    OrderRequest,
    commission_for,
)
from node.sim.market import Market
from support import sim_order as order


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def statuses(self) -> list[str]:
        return [e.order.status for e in self.events if isinstance(e, OrderChanged)]

    def errors(self) -> list[int]:
        return [e.code for e in self.events if isinstance(e, OrderError)]

    def fills(self) -> list[OrderFilled]:
        return [e for e in self.events if isinstance(e, OrderFilled)]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def engine(recorder: Recorder) -> OrderEngine:
    return OrderEngine(Account("DU1"), Market(seed=3), listener=recorder, clock=lambda: 1.7e9)


def test_market_is_deterministic_per_seed() -> None:
    first, second, other = Market(seed=1), Market(seed=1), Market(seed=2)
    for market in (first, second, other):
        market.step()
        market.step()
    assert first.quote("AAPL") == second.quote("AAPL")
    assert first.quote("AAPL") != other.quote("AAPL")
    quote = first.quote("SPY")
    assert quote.bid < quote.ask
    assert quote.bid_size > 0


def test_market_order_fills_at_once_at_the_touch(engine: OrderEngine, recorder: Recorder) -> None:
    ask = engine.market.quote("AAPL").ask
    engine.place(order())
    assert recorder.statuses() == ["PreSubmitted", "Submitted"]
    [fill] = recorder.fills()
    assert fill.order.status == "Filled"
    assert fill.execution.price == ask
    assert fill.execution.order_ref == "ref"
    assert any(isinstance(e, AccountChanged) for e in recorder.events)
    assert engine.account.positions["AAPL"].quantity == 10
    assert engine.account.cash == pytest.approx(1_000_000 - 10 * ask - 1.0)


@pytest.mark.parametrize(
    ("action", "offset", "fills"),
    [("BUY", -1.0, False), ("BUY", +1.0, True), ("SELL", +1.0, False), ("SELL", -1.0, True)],
)
def test_limit_orders_fill_only_when_marketable(
    engine: OrderEngine, recorder: Recorder, action: str, offset: float, fills: bool
) -> None:
    last = engine.market.quote("AAPL").last
    engine.place(order(action=action, order_type="LMT", lmt_price=round(last + offset, 2)))
    assert bool(recorder.fills()) is fills


def test_resting_limit_fills_when_the_market_crosses(
    engine: OrderEngine, recorder: Recorder
) -> None:
    engine.place(order(order_type="LMT", lmt_price=100.0))
    assert recorder.statuses()[-1] == "Submitted"
    engine.market.set_price("AAPL", 99.0)
    engine.on_market(["AAPL"])
    [fill] = recorder.fills()
    assert fill.execution.price <= 100.0


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (order(symbol="NOPE"), 200),
        (order(order_type="TRAIL"), 387),
        (order(total_quantity=0), 434),
        (order(total_quantity=1.5), 10243),
        (order(order_type="LMT", lmt_price=None), 201),
        (order(order_type="STP", aux_price=None), 201),
        (order(tif="FOK"), 201),
        (order(action="HOLD"), 201),
        (order(account="DU999"), 201),
        (order(sec_type="OPT"), 200),
        (order(unsupported="algo order"), 201),
    ],
)
def test_invalid_orders_are_refused(
    engine: OrderEngine, recorder: Recorder, request_: OrderRequest, code: int
) -> None:
    engine.place(request_)
    assert recorder.errors() == [code]
    assert recorder.fills() == []


def test_refused_order_is_kept_as_inactive(engine: OrderEngine, recorder: Recorder) -> None:
    engine.reject_next(201, "no")
    engine.place(order())
    assert recorder.statuses() == ["Inactive"]
    assert [o.status for o in engine.completed_orders()] == ["Inactive"]
    engine.place(order(order_id=2))
    assert recorder.fills()  # the fault applies once


def test_modify_and_cancel(engine: OrderEngine, recorder: Recorder) -> None:
    engine.place(order(order_type="LMT", lmt_price=50.0))
    engine.place(order(order_type="LMT", lmt_price=51.0, total_quantity=20))
    live = engine.orders[(1, 1)]
    assert (live.lmt_price, live.total_quantity) == (51.0, 20)
    engine.cancel(1, 1)
    assert live.status == "Cancelled"
    assert recorder.errors() == [202]
    engine.cancel(1, 1)
    engine.cancel(1, 99)
    assert recorder.errors() == [202, 10148, 10147]
    engine.place(order(order_type="LMT", lmt_price=52.0))  # the id is used up
    assert recorder.errors()[-1] == 103


def test_modifying_a_filled_order_is_refused(engine: OrderEngine, recorder: Recorder) -> None:
    engine.place(order())
    engine.place(order(total_quantity=20))
    assert recorder.errors() == [104]


def test_partial_fills_one_chunk_per_step(engine: OrderEngine, recorder: Recorder) -> None:
    engine.settings.partial_fill_size = 4
    engine.place(order())
    for _ in range(5):
        engine.on_market()
    assert [f.execution.shares for f in recorder.fills()] == [4, 4, 2]
    assert recorder.fills()[-1].order.status == "Filled"


def test_ioc_cancels_the_remainder(engine: OrderEngine, recorder: Recorder) -> None:
    engine.settings.partial_fill_size = 4
    engine.place(order(tif="IOC"))
    assert [f.execution.shares for f in recorder.fills()] == [4]
    assert engine.orders[(1, 1)].status == "Cancelled"


def test_opg_waits_for_the_open(engine: OrderEngine, recorder: Recorder) -> None:
    engine.place(order(tif="OPG"))
    engine.on_market()
    assert recorder.fills() == []
    assert engine.orders[(1, 1)].status == "PreSubmitted"
    engine.open_auction()
    assert engine.orders[(1, 1)].status == "Filled"


def test_stop_triggers_then_fills(engine: OrderEngine, recorder: Recorder) -> None:
    last = engine.market.quote("AAPL").last
    engine.place(order(action="SELL", order_type="STP", aux_price=round(last - 1, 2)))
    assert engine.orders[(1, 1)].status == "PreSubmitted"
    engine.market.set_price("AAPL", last - 1.5)
    engine.on_market()
    assert engine.orders[(1, 1)].status == "Filled"


def test_global_cancel(engine: OrderEngine) -> None:
    engine.place(order(order_type="LMT", lmt_price=1.0))
    engine.place(order(client_id=2, order_type="LMT", lmt_price=1.0))
    engine.global_cancel()
    assert engine.open_orders() == []


def test_next_valid_id_is_per_client(engine: OrderEngine) -> None:
    engine.place(order(order_id=41))
    assert engine.next_valid_id(1) == 42
    assert engine.next_valid_id(2) == 1


@pytest.mark.parametrize(
    ("quantity", "price", "commission"),
    [(10, 100.0, 1.0), (1000, 100.0, 5.0), (1, 0.5, 0.005), (400, 1.0, 2.0)],
)
def test_commission_fixed_pricing(quantity: float, price: float, commission: float) -> None:
    assert commission_for(quantity, price) == pytest.approx(commission)


def test_account_realizes_pnl_and_flips() -> None:
    account = Account("DU1")
    account.apply_fill("AAPL", 265598, 100, 10.0, 1.0)
    assert account.positions["AAPL"].avg_cost == pytest.approx(10.01)
    booked = account.apply_fill("AAPL", 265598, -150, 12.0, 1.0)
    assert booked.realized_pnl == pytest.approx((12.0 - 10.01) * 100 - 1.0)
    assert account.positions["AAPL"].quantity == -50
    assert account.positions["AAPL"].avg_cost == 12.0
    account.apply_fill("AAPL", 265598, 50, 11.0, 1.0)
    assert account.positions["AAPL"].quantity == 0
