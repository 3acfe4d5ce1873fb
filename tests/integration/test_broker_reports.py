"""The broker's order reports as ib_async fires them, against a real simulator on loopback:
no report states a fact IB has not sent yet."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from node.broker import Broker, OrderReport, OrderSpec
from node.clock import RealClock
from support import until

pytestmark = pytest.mark.anyio


async def test_no_report_claims_a_zero_price_or_commission_before_ib_sent_them(
    sim_factory: Any,
) -> None:
    """ib_async fires for the execution before IB's orderStatus (with the average price) and
    its commission report arrive: that report must carry the executions' own average and no
    commission yet, not 0 for either, which the journal would keep as IB's word."""
    sim = await sim_factory()
    broker = Broker(RealClock(), lambda event: None, client_id=5, heartbeat_interval=60,
                    heartbeat_timeout=10, heartbeat_misses=3)  # fmt: skip
    reports: list[OrderReport] = []
    broker.on_order_report = reports.append
    await broker.connect("127.0.0.1", sim.port, attempt_timeout=10)
    try:
        con_id = await broker.con_id("AAPL")
        assert con_id is not None
        order_id = broker.reserve_order_id()
        broker.place_order(OrderSpec(
            client_order_id="once-1", symbol="AAPL", con_id=con_id, side="buy", qty=Decimal(3),
            type="market", limit_price=None, stop_price=None, time_in_force="day",
            extended_hours=False, account=broker.info.accounts[0] if broker.info else "",
        ), order_id)  # fmt: skip
        await until(lambda: any(r.broker_status == "Filled" and r.commission is not None
                                for r in reports))  # fmt: skip
    finally:
        broker.disconnect()
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
