"""The simulator against unmodified ib_async 2.1 over real loopback sockets (server version 178)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from ib_async import IB, LimitOrder, MarketOrder, Order, Stock, StopLimitOrder, StopOrder, Trade

from node.sim import Simulator
from support import WAIT, connect_ib, until

pytestmark = pytest.mark.anyio


class Errors:
    """Collects (reqId, code, message) from ib_async's errorEvent."""

    def __init__(self, ib: IB) -> None:
        self.seen: list[tuple[int, int, str]] = []
        ib.errorEvent += self._on_error

    def _on_error(self, req_id: int, code: int, message: str, contract: Any) -> None:
        self.seen.append((req_id, code, message))

    def codes(self) -> list[int]:
        return [code for _, code, _ in self.seen]


async def connect(sim: Simulator, client_id: int = 1) -> IB:
    return await connect_ib(sim.port, client_id)


@pytest.fixture
async def ib(sim: Simulator) -> AsyncIterator[IB]:
    client = await connect(sim)
    yield client
    client.disconnect()


AAPL = Stock("AAPL", "SMART", "USD")


async def qualified(ib: IB, symbol: str = "AAPL") -> Stock:
    contract = Stock(symbol, "SMART", "USD")
    await ib.qualifyContractsAsync(contract)
    return contract


def statuses(trade: Trade) -> list[str]:
    return [entry.status for entry in trade.log]


# ---------------------------------------------------------------------- connect and sync


async def test_connect_negotiates_178_and_completes_the_startup_sync(sim: Simulator) -> None:
    ib = IB()
    errors = Errors(ib)
    await ib.connectAsync("127.0.0.1", sim.port, clientId=3, timeout=WAIT, raiseSyncErrors=True)
    try:
        assert ib.isConnected()
        assert ib.client.serverVersion() == 178
        assert ib.managedAccounts() == [sim.account]
        assert sim.account.startswith("DU")
        assert {2104, 2106, 2158} <= set(errors.codes())
        values = {v.tag: v.value for v in ib.accountValues() if v.currency in ("USD", "")}
        assert values["AccountCode"] == sim.account
        assert float(values["NetLiquidation"]) == pytest.approx(1_000_000)
    finally:
        ib.disconnect()


async def test_current_time_is_now(ib: IB) -> None:
    server_time = await ib.reqCurrentTimeAsync()
    local = await anyio.to_thread.run_sync(lambda: __import__("time").time())
    assert abs(server_time.timestamp() - local) < 5


async def test_account_summary_and_pnl(ib: IB, sim: Simulator) -> None:
    summary = {v.tag: v for v in await ib.accountSummaryAsync()}
    assert summary["AccountType"].value == "INDIVIDUAL"
    assert summary["NetLiquidation"].account == sim.account
    assert float(summary["TotalCashValue"].value) == pytest.approx(1_000_000)
    pnl = ib.reqPnL(sim.account)
    await until(lambda: pnl.dailyPnL == pnl.dailyPnL and pnl.realizedPnL == 0.0)
    assert pnl.unrealizedPnL == 0.0


# ---------------------------------------------------------------------- contracts and data


async def test_contract_details_and_unknown_symbol(ib: IB) -> None:
    contract = await qualified(ib)
    assert contract.conId == 265598
    assert contract.primaryExchange == "NASDAQ"
    details = await ib.reqContractDetailsAsync(Stock("SPY", "SMART", "USD"))
    assert len(details) == 1
    assert details[0].contract is not None
    assert details[0].contract.conId == 756733
    assert details[0].longName == "SPDR S&P 500 ETF TRUST"
    errors = Errors(ib)
    assert await ib.reqContractDetailsAsync(Stock("ZZZZZ", "SMART", "USD")) == []
    assert 200 in errors.codes()


async def test_snapshot_and_streaming_quotes(ib: IB, sim: Simulator) -> None:
    contract = await qualified(ib, "MSFT")
    [ticker] = await ib.reqTickersAsync(contract)
    quote = sim.market.quote("MSFT")
    assert (ticker.bid, ticker.ask, ticker.last) == (quote.bid, quote.ask, quote.last)
    assert ticker.bid < ticker.ask
    assert ticker.bidSize > 0
    assert ticker.askSize > 0
    assert ticker.volume == quote.volume
    assert ticker.marketDataType == 1

    stream = ib.reqMktData(contract)
    await until(lambda: stream.last == quote.last)
    sim.set_price("MSFT", 333.33)
    await until(lambda: stream.last == 333.33)
    sim.step_market()
    moved = sim.market.quote("MSFT")
    await until(lambda: stream.last == moved.last and stream.bid == moved.bid)
    ib.cancelMktData(contract)


async def test_delayed_market_data_type(ib: IB, sim: Simulator) -> None:
    ib.reqMarketDataType(3)
    contract = await qualified(ib, "SPY")
    [ticker] = await ib.reqTickersAsync(contract)
    assert ticker.marketDataType == 3
    assert ticker.bid == sim.market.quote("SPY").bid  # ib_async maps delayed ids 66/67/68 too


async def test_historical_bars(ib: IB) -> None:
    bars = await ib.reqHistoricalDataAsync(
        await qualified(ib), "", "10 D", "1 day", "TRADES", useRTH=True
    )
    assert len(bars) == 10
    assert all(bar.high >= bar.low for bar in bars)


# ---------------------------------------------------------------------- orders


async def test_market_order_fills_at_the_touch_with_execution_and_commission(
    ib: IB, sim: Simulator
) -> None:
    contract = await qualified(ib)
    ask = sim.market.quote("AAPL").ask
    trade = ib.placeOrder(contract, MarketOrder("BUY", 10, orderRef="coid-1"))
    await until(lambda: trade.isDone() and trade.fills and trade.fills[0].commissionReport.execId)
    assert trade.orderStatus.status == "Filled"
    assert trade.orderStatus.avgFillPrice == ask
    assert statuses(trade)[-1] == "Filled"
    [fill] = trade.fills
    assert fill.execution.orderRef == "coid-1"
    assert fill.execution.side == "BOT"
    assert fill.execution.shares == 10
    assert fill.commissionReport.commission == 1.0  # 10 x 0.005 is below the 1.00 minimum
    await until(lambda: any(p.position == 10 for p in ib.positions()))
    [position] = ib.positions()
    assert position.contract.conId == 265598
    assert position.avgCost == pytest.approx(ask + 0.1)  # commission folded into the cost
    await until(lambda: any(i.position == 10 for i in ib.portfolio()))
    expected_cash = 1_000_000 - 10 * ask - 1.0
    await until(lambda: float(_value(ib, "TotalCashValue")) == pytest.approx(expected_cash))


def _value(ib: IB, tag: str) -> str:
    return next(v.value for v in ib.accountValues() if v.tag == tag and v.currency == "USD")


async def test_sell_realizes_pnl(ib: IB, sim: Simulator) -> None:
    contract = await qualified(ib)
    buy = ib.placeOrder(contract, MarketOrder("BUY", 100))
    await until(buy.isDone)
    sim.set_price("AAPL", sim.market.quote("AAPL").last + 10)
    sell = ib.placeOrder(contract, MarketOrder("SELL", 100))
    await until(lambda: sell.isDone() and sell.fills and sell.fills[0].commissionReport.execId)
    assert sell.fills[0].execution.side == "SLD"
    assert sell.fills[0].commissionReport.realizedPNL > 900
    await until(lambda: not [p for p in ib.positions() if p.position])


async def test_limit_order_rests_is_modified_and_cancelled(ib: IB, sim: Simulator) -> None:
    contract = await qualified(ib)
    errors = Errors(ib)
    trade = ib.placeOrder(contract, LimitOrder("BUY", 5, 100.0, orderRef="lim-1"))
    await until(lambda: trade.orderStatus.status == "Submitted")
    assert statuses(trade) == ["PendingSubmit", "PreSubmitted", "Submitted"]
    assert trade.order.permId > 0

    trade.order.lmtPrice = 101.0
    ib.placeOrder(contract, trade.order)
    await until(lambda: trade.log[-1].message == "Modified")
    assert sim.engine.orders[(1, trade.order.orderId)].lmt_price == 101.0

    ib.cancelOrder(trade.order)
    await until(lambda: trade.orderStatus.status == "Cancelled")
    await until(lambda: 202 in errors.codes())
    assert trade.filled() == 0


async def test_limit_order_fills_when_the_price_crosses(ib: IB, sim: Simulator) -> None:
    contract = await qualified(ib)
    last = sim.market.quote("AAPL").last
    trade = ib.placeOrder(contract, LimitOrder("BUY", 7, round(last - 5, 2)))
    await until(lambda: trade.orderStatus.status == "Submitted")
    sim.set_price("AAPL", last - 6)
    await until(trade.isDone)
    assert trade.orderStatus.status == "Filled"
    assert trade.orderStatus.avgFillPrice <= last - 5


async def test_stop_orders_wait_in_presubmitted_until_triggered(ib: IB, sim: Simulator) -> None:
    contract = await qualified(ib)
    last = sim.market.quote("AAPL").last
    stop = ib.placeOrder(contract, StopOrder("BUY", 3, round(last + 2, 2)))
    stop_limit = ib.placeOrder(
        contract, StopLimitOrder("SELL", 4, round(last - 3, 2), round(last - 2, 2))
    )
    await until(lambda: stop.orderStatus.status == stop_limit.orderStatus.status == "PreSubmitted")
    sim.set_price("AAPL", last + 2.5)
    await until(stop.isDone)
    assert stop.orderStatus.status == "Filled"
    assert stop_limit.orderStatus.status == "PreSubmitted"
    sim.set_price("AAPL", last - 2.5)  # through the stop, still above the limit
    await until(stop_limit.isDone)
    assert stop_limit.orderStatus.status == "Filled"
    assert stop_limit.orderStatus.avgFillPrice >= last - 3


async def test_time_in_force_ioc_opg_gtc(ib: IB, sim: Simulator) -> None:
    contract = await qualified(ib)
    last = sim.market.quote("AAPL").last
    ioc = ib.placeOrder(contract, LimitOrder("BUY", 1, round(last - 20, 2), tif="IOC"))
    await until(ioc.isDone)
    assert ioc.orderStatus.status == "Cancelled"
    assert ioc.filled() == 0

    gtc = ib.placeOrder(contract, LimitOrder("BUY", 1, round(last - 20, 2), tif="GTC"))
    opg = ib.placeOrder(contract, MarketOrder("BUY", 2, tif="OPG"))
    await until(lambda: gtc.orderStatus.status == "Submitted")
    await until(lambda: opg.orderStatus.status == "PreSubmitted")
    sim.open_auction()
    await until(opg.isDone)
    assert opg.orderStatus.status == "Filled"
    assert gtc.orderStatus.status == "Submitted"
    assert sim.engine.orders[(1, gtc.order.orderId)].tif == "GTC"


async def test_partial_fills(ib: IB, sim: Simulator) -> None:
    contract = await qualified(ib)
    sim.set_partial_fill(3)
    trade = ib.placeOrder(contract, MarketOrder("BUY", 10))
    await until(lambda: len(trade.fills) == 1)
    assert trade.orderStatus.status == "Submitted"
    assert (trade.orderStatus.filled, trade.orderStatus.remaining) == (3, 7)
    for expected in (2, 3, 4):
        sim.step_market()
        await until(lambda expected=expected: len(trade.fills) == expected)  # type: ignore[misc]
    assert trade.orderStatus.status == "Filled"
    assert [f.execution.shares for f in trade.fills] == [3, 3, 3, 1]
    assert [f.execution.cumQty for f in trade.fills] == [3, 6, 9, 10]


async def test_what_if_returns_margin_and_places_nothing(ib: IB, sim: Simulator) -> None:
    contract = await qualified(ib)
    state = await ib.whatIfOrderAsync(contract, LimitOrder("BUY", 100, 150.0))
    assert float(state.initMarginChange) == pytest.approx(100 * 150.0 * 0.25)
    assert state.commission == 1.0
    assert sim.engine.orders == {}
    assert await ib.reqOpenOrdersAsync() == []


async def test_injected_reject_surfaces_as_error_and_inactive(ib: IB, sim: Simulator) -> None:
    contract = await qualified(ib)
    errors = Errors(ib)
    sim.faults.reject_next(201, "Order rejected - reason:Simulated margin deficit")
    trade = ib.placeOrder(contract, MarketOrder("BUY", 1, orderRef="rej-1"))
    await until(lambda: (trade.order.orderId, 201) in [(r, c) for r, c, _ in errors.seen])
    assert "Simulated margin deficit" in errors.seen[-1][2]
    await until(lambda: trade.orderStatus.status == "Inactive")
    completed = await ib.reqCompletedOrdersAsync(False)
    assert [(t.order.orderRef, t.orderStatus.status) for t in completed] == [("rej-1", "Inactive")]
    # Only the next order is rejected.
    ok = ib.placeOrder(contract, MarketOrder("BUY", 1))
    await until(ok.isDone)
    assert ok.orderStatus.status == "Filled"


@pytest.mark.parametrize(
    ("order", "code"),
    [
        (Order(action="BUY", totalQuantity=1, orderType="TRAIL", auxPrice=1.0), 387),
        (MarketOrder("BUY", 0), 434),
        (LimitOrder("BUY", 1, 0.0), 201),
        (MarketOrder("HOLD", 1), 201),
        (MarketOrder("BUY", 1, tif="FOK"), 201),
    ],
)
async def test_unsupported_orders_get_an_error(ib: IB, order: Order, code: int) -> None:
    contract = await qualified(ib)
    errors = Errors(ib)
    trade = ib.placeOrder(contract, order)
    await until(lambda: any(r == trade.order.orderId for r, _, _ in errors.seen))
    assert [c for r, c, _ in errors.seen if r == trade.order.orderId] == [code]


async def test_orders_and_executions_survive_a_reconnect(sim: Simulator) -> None:
    ib = await connect(sim, client_id=9)
    contract = await qualified(ib)
    resting = ib.placeOrder(contract, LimitOrder("BUY", 2, 50.0, orderRef="rest-1"))
    filled = ib.placeOrder(contract, MarketOrder("BUY", 4, orderRef="fill-1"))
    await until(lambda: filled.isDone() and resting.orderStatus.status == "Submitted")
    ib.disconnect()
    await until(lambda: 9 not in sim.sessions)

    again = await connect(sim, client_id=9)
    try:
        [open_trade] = again.openTrades()
        assert open_trade.order.permId == resting.order.permId
        assert open_trade.order.orderRef == "rest-1"
        completed = await again.reqCompletedOrdersAsync(False)
        assert [t.order.orderRef for t in completed] == ["fill-1"]
        [fill] = await again.reqExecutionsAsync()
        assert fill.execution.orderRef == "fill-1"
        # The start-up sync already stored this fill, with its commission report.
        [synced] = again.fills()
        assert synced.execution.execId == fill.execution.execId
        assert synced.commissionReport.commission == 1.0
        assert again.client._reqIdSeq > filled.order.orderId
        # The other clients see the order too (reqAllOpenOrders).
        other = await connect(sim, client_id=10)
        assert [t.order.orderRef for t in await other.reqAllOpenOrdersAsync()] == ["rest-1"]
        assert await other.reqOpenOrdersAsync() == []
        other.disconnect()
    finally:
        again.disconnect()


async def test_global_cancel_cancels_every_client(sim: Simulator) -> None:
    first, second = await connect(sim, 1), await connect(sim, 2)
    try:
        contract = await qualified(first)
        a = first.placeOrder(contract, LimitOrder("BUY", 1, 50.0))
        b = second.placeOrder(contract, LimitOrder("BUY", 1, 51.0))
        await until(lambda: a.orderStatus.status == b.orderStatus.status == "Submitted")
        first.reqGlobalCancel()
        await until(lambda: a.orderStatus.status == b.orderStatus.status == "Cancelled")
    finally:
        first.disconnect()
        second.disconnect()


async def test_duplicate_client_id_is_refused_with_326(sim: Simulator) -> None:
    first = await connect(sim, client_id=5)
    second = IB()
    errors = Errors(second)
    try:
        with pytest.raises((TimeoutError, ConnectionError)):
            await second.connectAsync("127.0.0.1", sim.port, clientId=5, timeout=2)
        assert 326 in errors.codes()
        assert first.isConnected()
        assert (await first.reqCurrentTimeAsync()) is not None
    finally:
        first.disconnect()
        second.disconnect()


async def test_client_id_is_free_again_after_disconnect(sim: Simulator) -> None:
    first = await connect(sim, client_id=6)
    first.disconnect()
    await until(lambda: 6 not in sim.sessions)
    again = await connect(sim, client_id=6)
    assert again.isConnected()
    again.disconnect()
