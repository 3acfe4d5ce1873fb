"""The broker's order reports as ib_async fires them, against a real simulator on loopback:
no report states a fact IB has not sent yet, nor misses one it has (IB's cumulative counts)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anyio
import pytest
from ib_async import (
    CommissionReport,
    Execution,
    Fill,
    LimitOrder,
    MarketOrder,
    OrderStatus,
    PortfolioItem,
    Position,
    Stock,
    Trade,
)

from node.broker import BRIEF_REPRS, Broker, OrderReport, OrderSpec
from node.clock import RealClock
from node.order_status import map_status
from support import WAIT, until

pytestmark = pytest.mark.anyio


def new_broker() -> Broker:
    return Broker(RealClock(), lambda event: None, client_id=5, heartbeat_interval=60,
                  heartbeat_timeout=10, heartbeat_misses=3)  # fmt: skip


@asynccontextmanager
async def market_order(
    sim: Any, cid: str, qty: int,
    also: Callable[[Broker, list[OrderReport]], None] = lambda broker, reports: None,
) -> AsyncIterator[list[OrderReport]]:  # fmt: skip
    """A broker connected to the simulator that has sent a buy market order of `qty` AAPL;
    yields the reports it hands over, as they come (``also`` runs after each)."""
    broker = new_broker()
    reports: list[OrderReport] = []

    def hand_over(report: OrderReport) -> None:
        reports.append(report)
        also(broker, reports)

    broker.on_order_report = hand_over
    await broker.connect("127.0.0.1", sim.port, attempt_timeout=10)
    try:
        con_id = await broker.con_id("AAPL")
        assert con_id is not None
        broker.place_order(OrderSpec(
            client_order_id=cid, symbol="AAPL", con_id=con_id, side="buy", qty=Decimal(qty),
            type="market", limit_price=None, stop_price=None, time_in_force="day",
            extended_hours=False, account=broker.info.accounts[0] if broker.info else "",
        ), broker.reserve_order_id())  # fmt: skip
        yield reports
    finally:
        broker.disconnect()


async def test_no_report_claims_a_zero_price_or_commission_before_ib_sent_them(
    sim_factory: Any,
) -> None:
    """ib_async fires for the execution before IB's orderStatus (with the average price) and
    its commission report arrive: that report must carry the executions' own average and no
    commission yet, not 0 for either, which the journal would keep as IB's word."""
    sim = await sim_factory()
    async with market_order(sim, "once-1", 3) as reports:
        await until(lambda: any(r.broker_status == "Filled" and r.commission is not None
                                for r in reports))  # fmt: skip
    ours = [r for r in reports if r.client_order_id == "once-1"]
    assert ours[-1].broker_status == "Filled"
    assert ours[-1].filled == Decimal(3)
    final_price, final_commission = ours[-1].avg_fill_price, ours[-1].commission
    assert final_price is not None
    assert final_price > 0
    assert final_commission is not None
    assert final_commission > 0
    assert any(r.filled and r.broker_status != "Filled" for r in ours), "no early execution"
    for report in ours:
        if report.filled:
            assert report.avg_fill_price == final_price, report
        assert report.commission in (None, final_commission), report


async def test_a_second_partial_fill_reports_the_new_average_before_ib_does(
    sim_factory: Any,
) -> None:
    """IB's orderStatus average is out of date while an execution is ahead of it: the report
    takes the executions' average then, not the previous fill's price."""
    sim = await sim_factory()
    sim.set_partial_fill(1)
    async with market_order(sim, "two-1", 2) as reports:
        await until(lambda: any(r.filled == 1 and r.commission is not None for r in reports))
        first_price = sim.market.quote("AAPL").ask
        sim.market.set_price("AAPL", first_price * 1.25)  # the second share fills elsewhere
        sim.engine.on_market()
        await until(lambda: any(r.broker_status == "Filled" and r.commission is not None
                                and r.filled == 2 for r in reports))  # fmt: skip
    ours = [r for r in reports if r.client_order_id == "two-1"]
    final = ours[-1].avg_fill_price
    assert final is not None
    assert final > Decimal(str(first_price))
    for report in ours:
        if report.filled == 2:
            assert report.avg_fill_price == final, report


async def test_a_task_woken_by_the_first_report_runs_before_the_rest_of_the_burst(
    sim_factory: Any,
) -> None:
    """The simulator sends an order's status, fill and account values in one write. Asked
    after the first status, the broker decodes the rest only after the tasks already woken
    (so the daemon's 201 need not wait for the whole burst), and none of the rest is lost.
    Fails if ib_async's own socket handlers, which the broker rewires, go away."""
    sim = await sim_factory()
    answered = anyio.Event()
    reports_at_answer: list[int] = []

    def answer_first(broker: Broker, reports: list[OrderReport]) -> None:
        if reports[-1].broker_status in ("PreSubmitted", "Submitted") and not answered.is_set():
            reports_at_answer.append(len(reports))
            answered.set()
            broker.defer_rest_of_burst()

    async with market_order(sim, "pace-1", 1, answer_first) as reports:
        with anyio.fail_after(WAIT):
            await answered.wait()
        reports_when_woken = len(reports)
        await until(lambda: any(r.broker_status == "Filled" and r.commission is not None
                                for r in reports))  # fmt: skip
    assert reports_when_woken == reports_at_answer[0], "the burst was decoded first"
    assert reports[-1].filled == Decimal(1)


def test_ib_async_order_objects_get_brief_reprs() -> None:
    """ib_async formats these for INFO lines the node never shows (about 100 µs for a
    Trade); once a Broker exists they are cheap and still say which order they are."""
    new_broker()
    contract = Stock("AAPL", "SMART", "USD")
    order = MarketOrder("BUY", 3, orderRef="r-1", orderId=7, permId=9001)
    trade = Trade(contract, order, OrderStatus(orderId=7, status="Submitted", filled=0.0))
    assert f"{trade}" == (
        "Trade(orderId=7, permId=9001, orderRef='r-1', symbol='AAPL', action='BUY', "
        "totalQuantity=3, status='Submitted', filled=0.0)"
    )
    execution = Execution(execId="e-1", orderId=7, permId=9001, shares=3.0, price=101.5)
    samples = [
        Fill(contract, execution, CommissionReport(execId="e-1", commission=1.0), trade.log),
        execution,
        CommissionReport(execId="e-1", commission=1.0, currency="USD"),
        PortfolioItem(contract, 3.0, 101.5, 304.5, 101.5, 0.0, 0.0, "DU1"),
        Position("DU1", contract, 3.0, 101.5),
    ]
    assert {type(sample) for sample in samples} | {Trade} == set(BRIEF_REPRS)
    for sample in samples:
        text = f"{sample}"
        assert text.startswith(f"{type(sample).__name__}("), text
        assert len(text) < 160, text
        assert "AAPL" in text or "e-1" in text, text


# ---------------------------------------------------------------------- IB's own counts


def gtc_trade(status: OrderStatus, todays_fills: list[float], filled_quantity: float | None = None
              ) -> Trade:  # fmt: skip
    """A 100-share GTC buy as ib_async holds it in a new session: IB re-sent only the day's
    executions; `status` is IB's orderStatus (or a completed order's bare status)."""
    contract = Stock("AAPL", "SMART", "USD")
    order = LimitOrder("BUY", 100, 200.0, orderId=7, permId=99, orderRef="gtc-1", tif="GTC")
    if filled_quantity is not None:
        order.filledQuantity = filled_quantity
    fills = [
        Fill(contract, Execution(execId=f"e-{i}", orderId=7, permId=99, shares=shares,
                                 price=200.0), CommissionReport(), datetime.now(UTC))
        for i, shares in enumerate(todays_fills)
    ]  # fmt: skip
    return Trade(contract, order, status, fills, [])


def report_of(trade: Trade) -> OrderReport:
    report = new_broker()._report(trade)
    assert report is not None
    return report


def our_status(report: OrderReport) -> str:
    return map_status(report.broker_status, report.filled, report.remaining, tif="gtc")


def test_an_order_filled_on_an_earlier_day_reports_ibs_cumulative_fill() -> None:
    """60 filled yesterday; today's session holds none of those executions."""
    status = OrderStatus(orderId=7, status="Submitted", filled=60.0, remaining=40.0,
                         avgFillPrice=200.0)  # fmt: skip
    report = report_of(gtc_trade(status, []))
    assert (report.filled, report.remaining, report.avg_fill_price) == (60, 40, 200)
    assert our_status(report) == "partially_filled"


def test_the_last_fill_on_a_later_day_reports_the_whole_order_filled() -> None:
    """60 yesterday, the last 40 today: IB says Filled 100; the session saw 40."""
    status = OrderStatus(orderId=7, status="Filled", filled=100.0, remaining=0.0,
                         avgFillPrice=200.0)  # fmt: skip
    report = report_of(gtc_trade(status, [40.0]))
    assert (report.filled, report.remaining) == (100, 0)
    assert our_status(report) == "filled"


def test_a_completed_order_without_executions_in_the_session_is_filled() -> None:
    """ib_async's completed order: a bare status, the quantity in order.filledQuantity."""
    report = report_of(gtc_trade(OrderStatus(orderId=7, status="Filled"), [], 100.0))
    assert (report.filled, report.remaining) == (100, 0)
    assert our_status(report) == "filled"


def test_an_execution_ahead_of_ibs_order_status_still_counts() -> None:
    """The live order: the execution arrives before IB's orderStatus says it."""
    status = OrderStatus(orderId=7, status="Submitted", filled=0.0, remaining=100.0)
    report = report_of(gtc_trade(status, [30.0]))
    assert (report.filled, report.remaining, report.avg_fill_price) == (30, 70, 200)
