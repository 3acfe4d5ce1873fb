"""OrderService applies IB's reports through one queue: reconcile's view and the live reports
never race, a stale report never undoes a newer one, a failed commit costs no other report.
A real AuditStore; the broker is a stand-in that hands reports over as ib_async would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from node.api.schemas import OrderRequest
from node.audit import AuditStore, AuditUnavailable, OrderRecord
from node.broker import BrokerError, OrderReport, QuoteReport
from node.clock import ManualClock, RealClock
from node.message_pacer import MessagePacer
from node.orders import OrderProblem, OrderService, request_hash
from node.safety import GateContext
from support import OPEN_GATE, WAIT, frame, split_frames

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 23, 17, tzinfo=UTC)


@dataclass
class StandInBroker:
    """What OrderService needs of the broker for reports and reconcile."""

    reports: list[OrderReport] = field(default_factory=list)
    on_order_report: Any = None
    connected: bool = True
    cancels: list[int] = field(default_factory=list)

    def cancel_order(self, broker_order_id: int) -> bool:
        self.cancels.append(broker_order_id)
        return True

    # placing: IB never answers here
    sent: list[Any] = field(default_factory=list)

    async def con_id(self, symbol: str) -> int:
        return 265598

    def reserve_order_id(self) -> int:
        return 40 + len(self.sent)

    def place_order(self, spec: Any, order_id: int) -> None:
        self.sent.append((spec, order_id))

    async def refresh_completed(self) -> None:
        return None

    def defer_rest_of_burst(self) -> None:  # the real one puts off decoding; see the test below
        return None

    def order_reports(self) -> list[OrderReport]:
        return list(self.reports)


@dataclass
class Running:
    store: AuditStore
    broker: StandInBroker
    service: OrderService


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    clock = ManualClock(T0)
    store = await AuditStore.open(tmp_path / "audit.db", clock=clock.now)
    broker = StandInBroker()

    def no_gate() -> GateContext:
        raise AssertionError("no order is placed here")

    service = OrderService(store, broker, clock, no_gate, ack_timeout=5, trading_mode="paper")
    async with anyio.create_task_group() as tg:
        tg.start_soon(service.run)
        await service.flush_reports()  # run() is up and has loaded its sets
        yield Running(store, broker, service)
        tg.cancel_scope.cancel()
    await store.close()


def market_order(cid: str, qty: int = 100) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol="AAPL", side="buy", type="market",
                        qty=Decimal(qty))  # fmt: skip


async def until_sent(running: Running) -> None:
    """Until the stand-in broker was asked to send an order. Checkpoints, not sleeps: the
    tasks keep the order they run in under the daemon."""
    with anyio.fail_after(WAIT):
        while not running.broker.sent:
            await anyio.lowlevel.checkpoint()


def captured_events(running: Running, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """The order events the service streams, as (seq, event name)."""
    streamed: list[tuple[int, str]] = []
    monkeypatch.setattr(running.service, "_stream_order_event",
                        lambda seq, data: streamed.append((seq, data["event"])))  # fmt: skip
    return streamed


async def intent(store: AuditStore, cid: str, broker_id: int) -> None:
    request = market_order(cid)
    record = OrderRecord.new(request, request_hash=request_hash(request), trading_mode="paper",
                             con_id=265598, at=T0)  # fmt: skip
    await store.insert_order(replace(record, broker_order_id=broker_id))


def report(cid: str, status: str, filled: int, broker_id: int = 7) -> OrderReport:
    return OrderReport(client_order_id=cid, broker_order_id=broker_id, perm_id=99,
                       broker_status=status, filled=Decimal(filled),
                       remaining=Decimal(100 - filled),
                       avg_fill_price=Decimal(10) if filled else None)  # fmt: skip


async def fill_rows(store: AuditStore, cid: str) -> list[str]:
    return [e.data["filled_qty"] for e in await store.journal_since(0)
            if e.kind == "fill" and e.client_order_id == cid]  # fmt: skip


async def test_reconcile_and_a_queued_report_journal_one_fill(running: Running) -> None:
    await intent(running.store, "r-1", 7)
    filled = report("r-1", "Filled", 100)
    running.broker.reports = [filled]  # IB's view after a reconnect...
    running.broker.on_order_report(filled)  # ...and the same fill, already queued
    await running.service.reconcile()
    assert await fill_rows(running.store, "r-1") == ["100"]
    order = await running.store.get_order("r-1")
    assert order is not None
    assert order.status == "filled"


async def test_a_stale_report_never_undoes_a_newer_one(running: Running) -> None:
    await intent(running.store, "r-2", 7)
    running.broker.on_order_report(report("r-2", "Submitted", 60))
    running.broker.on_order_report(report("r-2", "Submitted", 30))  # older, late
    await running.service.flush_reports()
    order = await running.store.get_order("r-2")
    assert order is not None
    assert order.filled_qty == 60
    assert await fill_rows(running.store, "r-2") == ["60"]


async def test_a_failed_commit_costs_no_other_report(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    await intent(running.store, "a-1", 1)
    await intent(running.store, "b-1", 2)
    real = running.store.update_orders
    failures = [AuditUnavailable("audit store write failed: disk I/O error")]

    async def once_unavailable(updates: Any, on_commit: Any = None) -> Any:
        if failures and len(updates) > 1:
            raise failures.pop()
        return await real(updates, on_commit)

    monkeypatch.setattr(running.store, "update_orders", once_unavailable)
    running.broker.on_order_report(report("a-1", "Filled", 100, broker_id=1))
    running.broker.on_order_report(report("b-1", "Filled", 100, broker_id=2))  # one burst
    await running.service.flush_reports()
    assert not failures, "the burst was not written together first"
    for cid in ("a-1", "b-1"):
        order = await running.store.get_order(cid)
        assert order is not None
        assert order.status == "filled", cid
        assert await fill_rows(running.store, cid) == ["100"]


async def test_a_cancel_that_meets_a_fill_does_not_reopen_the_order(running: Running) -> None:
    await intent(running.store, "c-1", 7)
    running.broker.on_order_report(report("c-1", "Submitted", 0))
    await running.service.flush_reports()
    seen = await running.store.get_order("c-1")  # what the DELETE route read: new
    assert seen is not None
    assert seen.status == "new"
    running.broker.on_order_report(report("c-1", "Filled", 100))  # IB fills it meanwhile
    await running.service.flush_reports()
    rows_before = len(await running.store.journal_since(0))
    with pytest.raises(OrderProblem) as refused:
        await running.service.cancel(seen, "req-cancel")
    assert (refused.value.status, refused.value.slug) == (409, "order-not-cancelable")
    order = await running.store.get_order("c-1")
    assert order is not None
    assert order.status == "filled"  # not pending_cancel: nothing reopened it
    assert len(await running.store.journal_since(0)) == rows_before


async def test_a_post_cancelled_while_waiting_leaves_no_waiter(running: Running) -> None:
    running.service.gate_context = lambda: OPEN_GATE
    request = market_order("w-1")
    with anyio.CancelScope() as scope:  # the client went away while IB was silent
        async with anyio.create_task_group() as tg:
            tg.start_soon(running.service.place, request, "req-w")
            await until_sent(running)
            scope.cancel()
    assert "w-1" not in running.service._acks
    running.broker.on_order_report(report("w-1", "Filled", 100, broker_id=40))
    await running.service.flush_reports()
    order = await running.store.get_order("w-1")  # applied from the store, not a stale waiter
    assert order is not None
    assert order.status == "filled"


async def post_and_deliver(
    running: Running, monkeypatch: pytest.MonkeyPatch, cid: str,
    deliver: Callable[[], None], happened: list[str],
) -> None:  # fmt: skip
    """POST a market order with the real clock, as in the daemon; once it is sent, deliver
    IB's burst. What happens is added to `happened`, in order: the 201's status and each
    commit of reports."""
    running.service.gate_context = lambda: OPEN_GATE
    running.service.clock = RealClock()
    real = running.store.update_orders

    async def recording(updates: Any, on_commit: Any = None) -> Any:
        happened.append(f"applied {len(updates)} in one commit")
        return await real(updates, on_commit)

    monkeypatch.setattr(running.store, "update_orders", recording)
    request = market_order(cid)

    async def post() -> None:
        placed = await running.service.place(request, f"req-{cid}")
        happened.append(f"answered {placed.record.status}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(post)
        await until_sent(running)
        deliver()
    await running.service.flush_reports()


async def test_the_post_is_answered_before_the_burst_is_applied(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tasks run in the order they were woken: the waiting POST must be woken before the task
    that applies the burst, or the 201 waits for the burst's commit to be prepared."""

    def burst() -> None:  # both reports in one callback, as ib_async hands them over
        running.broker.on_order_report(report("f-1", "Submitted", 0, broker_id=40))
        running.broker.on_order_report(report("f-1", "Filled", 100, broker_id=40))

    happened: list[str] = []
    await post_and_deliver(running, monkeypatch, "f-1", burst, happened)
    assert happened == ["answered filled", "applied 2 in one commit"]


def paced_reports(running: Running, cid: str, happened: list[str]) -> MessagePacer:
    """The broker's pacer before a stand-in for ib_async's decoder, as in the daemon: each
    message ["3", status, filled] or ["4", status, filled, error code] hands over a report."""

    def decode(data: bytes) -> None:
        for message_id, status, filled, *code in split_frames(data):
            if message_id not in ("3", "4"):
                continue  # an account value: no report
            happened.append(f"decoded {status}{' ' + code[0] if code else ''}")
            running.broker.on_order_report(replace(
                report(cid, status, int(filled), broker_id=40),
                error_code=int(code[0]) if code else None,
                error_text="Order rejected - reason:test" if code else None,
            ))  # fmt: skip

    pacer = MessagePacer(decode, asyncio.get_running_loop().call_soon)
    running.broker.defer_rest_of_burst = pacer.defer_rest  # type: ignore[method-assign]
    return pacer


async def test_the_post_is_answered_before_the_rest_of_the_burst_is_decoded(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The POST is answered from the burst's first acknowledgement and sent before the rest
    is decoded, and the burst is still applied in one commit."""
    happened: list[str] = []
    pacer = paced_reports(running, "g-1", happened)

    def burst() -> None:  # one read: IB's burst
        pacer.data_received(frame("3", "Submitted", "0") + frame("6", "NetLiquidation", "1")
                            + frame("3", "Filled", "100"))  # fmt: skip

    await post_and_deliver(running, monkeypatch, "g-1", burst, happened)
    assert happened == ["decoded Submitted", "answered new", "decoded Filled",
                        "applied 2 in one commit"]  # fmt: skip


@pytest.mark.parametrize("first", ["Inactive", "ValidationError"])
async def test_a_status_a_later_message_explains_does_not_cut_the_burst(
    running: Running, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    """IB may send Inactive before the error that makes it a rejection, and a warning makes
    ib_async report ValidationError before the order's real status: the answer waits for
    the rest of the read, as before the pacer."""
    happened: list[str] = []
    pacer = paced_reports(running, "h-1", happened)

    def burst() -> None:
        pacer.data_received(frame("3", first, "0") + frame("4", "Inactive", "0", "201"))

    await post_and_deliver(running, monkeypatch, "h-1", burst, happened)
    assert happened == [f"decoded {first}", "decoded Inactive 201", "answered rejected",
                        "applied 2 in one commit"]  # fmt: skip


async def test_the_pending_new_event_is_committed_with_the_intent(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streamed from the intent's own commit (no second commit while IB works); an order the
    broker could not send is then announced as rejected, and its id is free again."""
    streamed = captured_events(running, monkeypatch)
    running.service.gate_context = lambda: OPEN_GATE

    def socket_gone(spec: Any, order_id: int) -> None:
        raise BrokerError("not connected to the gateway")

    monkeypatch.setattr(running.broker, "place_order", socket_gone)
    request = market_order("e-1")
    with pytest.raises(OrderProblem) as refused:
        await running.service.place(request, "req-e")
    assert (refused.value.status, refused.value.slug) == (503, "gateway-unavailable")
    assert refused.value.retry_after
    journal = await running.store.journal_since(0)
    [event_row, rejected_row] = [e for e in journal if e.kind == "order_event"]
    intent_row = next(e for e in journal if e.kind == "order_intent")
    assert event_row.seq == intent_row.seq + 1
    assert event_row.data["order"]["status"] == "pending_new"
    # The rejection is announced in the release's own commit: before anything a retry writes.
    assert [e.kind for e in journal][-3:] == ["order_released", "order_event", "gate_refusal"]
    assert rejected_row.data["order"]["status"] == "rejected"
    assert streamed == [(event_row.seq, "pending_new"), (rejected_row.seq, "rejected")]
    assert await running.store.get_order("e-1") is None  # a refused request consumes nothing


# ---------------------------------------------------------------- the gate up to the send


def live_gate(running: Running, **limits: Any) -> dict[str, bool]:
    """The order service's gate reads the service's own counts, as the daemon's does; the
    returned flags switch the kill switch and the arm file while an order is on its way."""
    flags = {"kill_switch": False, "armed": True}

    def context() -> GateContext:
        count, frees_in = running.service.orders_last_minute()
        return replace(OPEN_GATE, open_orders=len(running.service.open_ids),
                       orders_last_minute=count, rate_window_frees_in=frees_in,
                       kill_switch=flags["kill_switch"], armed=flags["armed"],
                       **limits)  # fmt: skip

    running.service.gate_context = context
    return flags


def acknowledging(running: Running, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """IB acknowledges every order as it is sent; returns the client_order_ids sent."""
    sent: list[str] = []

    def place_order(spec: Any, order_id: int) -> None:
        sent.append(spec.client_order_id)
        running.broker.on_order_report(report(spec.client_order_id, "Submitted", 0, order_id))

    monkeypatch.setattr(running.broker, "place_order", place_order)
    return sent


def limit_order(cid: str) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol="AAPL", side="buy", type="limit",
                        qty=Decimal(1), limit_price=Decimal(100))  # fmt: skip


async def post_at_once(running: Running, cids: list[str]) -> dict[str, str]:
    """POST the orders concurrently; each id's outcome: its status, or its problem's slug."""
    outcomes: dict[str, str] = {}

    async def post(cid: str) -> None:
        try:
            placed = await running.service.place(limit_order(cid), f"req-{cid}")
            outcomes[cid] = placed.record.status
        except OrderProblem as problem:
            outcomes[cid] = problem.slug

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            for cid in cids:
                tg.start_soon(post, cid)
    return outcomes


@pytest.mark.parametrize(
    ("limit", "refused_as"),
    [({"max_open_orders": 2}, "risk-limit-exceeded"),
     ({"max_orders_per_minute": 2}, "rate-limited")],
)  # fmt: skip
async def test_concurrent_orders_cannot_share_a_limits_last_slot(
    running: Running, monkeypatch: pytest.MonkeyPatch, limit: dict[str, int], refused_as: str
) -> None:
    live_gate(running, **limit)
    sent = acknowledging(running, monkeypatch)
    outcomes = await post_at_once(running, [f"r-{i}" for i in range(5)])
    assert len(sent) == 2
    assert sorted(outcomes.values()) == ["new", "new", *[refused_as] * 3]
    for cid, outcome in outcomes.items():  # a refused request leaves its id free
        assert (await running.store.get_order(cid) is None) == (outcome == refused_as)


@pytest.mark.parametrize("switched", ["kill_switch", "armed"])
async def test_a_gate_that_closes_while_the_intent_commits_stops_the_order(
    running: Running, monkeypatch: pytest.MonkeyPatch, switched: str
) -> None:
    """A kill (or the arm file's removal) that lands while the order's intent is being
    committed: the order is not sent, its intent is released and its id is free."""
    flags = live_gate(running)
    sent = acknowledging(running, monkeypatch)
    real_insert = running.store.insert_order

    async def insert_while_the_gate_closes(*args: Any) -> Any:
        result = await real_insert(*args)
        flags[switched] = not flags[switched]  # what POST /v1/kill or `ctl disarm` did meanwhile
        return result

    monkeypatch.setattr(running.store, "insert_order", insert_while_the_gate_closes)
    with pytest.raises(OrderProblem) as refused:
        await running.service.place(limit_order("k-1"), "req-k")
    assert refused.value.slug == ("kill-switch-engaged" if switched == "kill_switch"
                                  else "not-armed")  # fmt: skip
    assert sent == []
    assert await running.store.get_order("k-1") is None
    assert "k-1" not in running.service.open_ids
    kinds = [e.kind for e in await running.store.journal_since(0)]
    assert kinds[-4:] == ["order_event", "order_released", "order_event", "gate_refusal"]


async def test_a_kill_during_the_contract_lookup_stops_the_order(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = live_gate(running)
    sent = acknowledging(running, monkeypatch)

    async def con_id_while_killed(symbol: str) -> int:
        flags["kill_switch"] = True  # the kill landed while IB looked the symbol up
        return 265598

    monkeypatch.setattr(running.broker, "con_id", con_id_while_killed)
    with pytest.raises(OrderProblem) as refused:
        await running.service.place(limit_order("k-2"), "req-k")
    assert refused.value.slug == "kill-switch-engaged"
    assert sent == []
    assert await running.store.get_order("k-2") is None


async def test_a_cancel_that_was_never_sent_leaves_no_trace(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IB was not asked (this session does not know the order yet): its later reports are
    not read as answers to a cancel."""
    await intent(running.store, "x-1", broker_id=7)
    monkeypatch.setattr(running.broker, "cancel_order", lambda broker_order_id: False)
    record = await running.store.get_order("x-1")
    assert record is not None
    with pytest.raises(OrderProblem) as refused:
        await running.service.cancel(record, "req-x")
    assert (refused.value.status, refused.value.slug) == (503, "gateway-unavailable")
    running.broker.on_order_report(report("x-1", "Submitted", 0))
    await running.service.flush_reports()
    working = await running.store.get_order("x-1")
    assert working is not None
    assert working.status == "new"


# ---------------------------------------------------------------- MAX_ORDER_NOTIONAL's price


def quoting(running: Running, monkeypatch: pytest.MonkeyPatch, bid: str = "200",
            fails: BaseException | None = None) -> list[str]:  # fmt: skip
    """The market at `bid` (ask a cent above), or a quote that fails; the symbols asked."""
    asked: list[str] = []

    async def quote(symbol: str) -> QuoteReport:
        asked.append(symbol)
        if fails is not None:
            raise fails
        return QuoteReport(symbol=symbol, bid=Decimal(bid), ask=Decimal(bid) + Decimal("0.01"),
                           last=Decimal(bid), bid_size=None, ask_size=None, volume=None,
                           data_type="live")  # fmt: skip

    monkeypatch.setattr(running.broker, "quote", quote, raising=False)
    return asked


async def test_a_sell_limit_below_the_market_is_valued_at_the_market(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It trades at or above its limit: a limit of a cent bounds nothing."""
    live_gate(running, max_order_notional=Decimal(10_000))
    sent = acknowledging(running, monkeypatch)
    asked = quoting(running, monkeypatch, bid="200")
    order = OrderRequest(client_order_id="s-1", symbol="AAPL", side="sell", type="limit",
                         qty=Decimal(100), limit_price=Decimal("0.01"))  # fmt: skip
    with pytest.raises(OrderProblem) as refused:
        await running.service.place(order, "req-s")
    assert (refused.value.status, refused.value.slug) == (403, "risk-limit-exceeded")
    assert "100 x 200" in refused.value.detail
    assert (asked, sent) == (["AAPL"], [])


async def test_a_quote_ib_cannot_give_is_a_503_to_retry(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    live_gate(running, max_order_notional=Decimal(10_000))
    quoting(running, monkeypatch, fails=BrokerError("quotes: no answer in 11 s"))
    with pytest.raises(OrderProblem) as refused:
        await running.service.place(market_order("q-1", qty=1), "req-q")
    assert (refused.value.status, refused.value.slug) == (503, "gateway-unavailable")
    assert refused.value.retry_after


async def test_no_quote_is_asked_for_an_order_every_order_is_refused(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = live_gate(running, max_order_notional=Decimal(10_000))
    flags["kill_switch"] = True
    asked = quoting(running, monkeypatch, fails=BrokerError("not connected"))
    with pytest.raises(OrderProblem) as refused:
        await running.service.place(market_order("q-2", qty=1), "req-q")
    assert refused.value.slug == "kill-switch-engaged"
    assert asked == []


async def test_a_completed_orders_report_keeps_the_recorded_order_id(running: Running) -> None:
    """IB sends completed orders without their order id; ib_async gives 0 for it."""
    await intent(running.store, "z-1", broker_id=7)
    running.broker.on_order_report(report("z-1", "Filled", 100, broker_id=0))
    await running.service.flush_reports()
    filled = await running.store.get_order("z-1")
    assert filled is not None
    assert (filled.status, filled.broker_order_id) == ("filled", 7)


async def test_a_status_change_and_its_trade_update_are_one_commit(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the change cannot lose its announcement: the order_event row is in the
    change's own commit and streamed from it, not queued for a later one."""
    streamed = captured_events(running, monkeypatch)
    await intent(running.store, "u-1", broker_id=7)
    before = await running.store.last_seq()
    running.broker.on_order_report(report("u-1", "Filled", 100))
    await running.service.flush_reports()
    rows = await running.store.journal_since(before)
    assert [r.kind for r in rows] == ["order_status", "fill", "order_event"]
    assert rows[-1].data["event"] == "fill"
    assert rows[-1].data["order"]["status"] == "filled"
    assert streamed == [(rows[-1].seq, "fill")]

    await intent(running.store, "u-2", broker_id=8)
    running.broker.on_order_report(report("u-2", "Submitted", 0, broker_id=8))
    await running.service.flush_reports()
    record = await running.store.get_order("u-2")
    assert record is not None
    before = await running.store.last_seq()
    await running.service.cancel(record, "req-cancel")
    rows = await running.store.journal_since(before)
    assert [(r.kind, r.request_id) for r in rows] == [
        ("order_status", "req-cancel"),
        ("cancel", "req-cancel"),
        ("order_event", "req-cancel"),
    ]
    assert streamed[-1] == (rows[-1].seq, "pending_cancel")


async def test_reconcile_leaves_an_order_its_post_is_placing_to_the_post(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reconcile reads an intent whose POST is still deciding (send it, or release it unsent):
    it must not mark it 'never reached IB', nor fail when the POST released it meanwhile."""
    await intent(running.store, "f-1", broker_id=7)
    await intent(running.store, "f-3", broker_id=9)
    running.service._unsent.add("f-1")  # its POST is between the intent and the send
    running.service._in_flight.add("f-3")  # sent before the gateway went; its POST still waits
    summary = await running.service.reconcile()
    assert "0 orders reconciled by orderRef, 1 never reached IB" in summary
    placing = await running.store.get_order("f-1")
    assert placing is not None
    assert placing.status == "pending_new"
    lost = await running.store.get_order("f-3")  # sent, but IB does not have it: not left open
    assert lost is not None
    assert lost.status == "rejected"
    running.service._unsent.discard("f-1")

    gone = replace(placing, client_order_id="f-2")  # read by reconcile, released before its update
    real_open_orders = running.store.open_orders

    async def with_a_released_one() -> list[OrderRecord]:
        return [*await real_open_orders(), gone]

    monkeypatch.setattr(running.store, "open_orders", with_a_released_one)
    assert "1 never reached IB" in await running.service.reconcile()  # f-1 now; f-2 skipped
    rejected = await running.store.get_order("f-1")
    assert rejected is not None
    assert rejected.status == "rejected"


async def test_a_post_answered_within_its_cancel_is_answered_as_canceled(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ib_async can report the order's end inside cancelOrder itself: the waiting POST reads
    it as the cancel it is, not as IB ending a day order."""
    running.service.gate_context = lambda: OPEN_GATE
    answered: list[str] = []

    async def post() -> None:
        placed = await running.service.place(limit_order("cc-1"), "req-cc")
        answered.append(placed.record.status)

    def cancel_order(broker_order_id: int) -> bool:
        running.broker.on_order_report(report("cc-1", "Cancelled", 0, broker_id=broker_order_id))
        return True

    monkeypatch.setattr(running.broker, "cancel_order", cancel_order)
    async with anyio.create_task_group() as tg:
        tg.start_soon(post)
        await until_sent(running)
        record = await running.store.get_order("cc-1")
        assert record is not None
        with contextlib.suppress(OrderProblem):  # the row may already be canceled: a 409
            await running.service.cancel(record, "req-cancel")
    assert answered == ["canceled"]
