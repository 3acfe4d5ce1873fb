"""The order service: idempotency, the gate, the audit intent, placement, status tracking.

DESIGN.md §5: a refused request consumes nothing (its client_order_id stays free); the
intent is written before the order is sent; the response waits for IB's first report or
ORDER_ACK_TIMEOUT; after any reconnect or restart orders are reconciled by orderRef.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, NoReturn, cast

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from loguru import logger

from node.api.schemas import OrderRequest
from node.audit import (
    KIND_FILL,
    AuditError,
    AuditStore,
    DuplicateOrder,
    OrderNotFound,
    OrderRecord,
    OrderUpdate,
)
from node.broker import (
    Broker,
    BrokerError,
    OrderReport,
    OrderSpec,
    UnknownSymbol,
    WhatIfReport,
)
from node.clock import Clock
from node.order_status import (
    PENDING_BROKER_STATUSES,
    OrderStatus,
    is_terminal,
    map_status,
    sse_event_name,
)
from node.plugins.notifiers.base import ORDER_REJECTED
from node.queues import with_queued
from node.ratelimit import SlidingWindowCounter
from node.safety import (
    GateContext,
    OrderIntent,
    Refuse,
    closed_to_every_order,
    decide,
    dry_run,
    needs_reference_price,
)

# IB's statuses that say it works on (or filled) the order: an answer that needs nothing after.
ACKNOWLEDGED = frozenset({"PreSubmitted", "Submitted", "Filled"})
REJECT_REASON_NOT_AT_IB = "not found at IB after a reconnect: it never reached the gateway"


class OrderProblem(Exception):
    """A refusal the API turns into an RFC 9457 problem; nothing was sent to IB."""

    def __init__(self, slug: str, status: int, detail: str, retry_after: float | None = None,
                 **extra: Any) -> None:  # fmt: skip
        super().__init__(detail)
        self.slug = slug
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        self.extra = extra

    def body(self, request_id: str) -> dict[str, Any]:
        """As an RFC 9457 object, for per-order results (cancel all, kill)."""
        return {
            "type": f"/problems/{self.slug}",
            "title": self.slug.replace("-", " ").capitalize(),
            "status": self.status,
            "detail": self.detail,
            "request_id": request_id,
        }


class GatewayNotConnected(OrderProblem):
    """A cancel that could not be sent because the gateway is not connected: the kill switch
    carries it out on the next CONNECTED. (An order this session does not hold, being placed
    right now or ended while the node was away, is a plain OrderProblem: connecting again
    changes nothing for it, and reconcile settles it.)"""


def cancel_results(
    results: list[tuple[OrderRecord, OrderProblem | None]], request_id: str
) -> list[dict[str, Any]]:
    return [
        {"id": record.id, "client_order_id": record.client_order_id, "status": record.status,
         "problem": None if problem is None else problem.body(request_id)}
        for record, problem in results
    ]  # fmt: skip


@dataclass
class Placed:
    record: OrderRecord
    replayed: bool


@dataclass
class _Waiter:
    """A POST waiting for IB's first report on its order."""

    committed: OrderRecord  # the row as last written: apply()'s base, without a read
    event: anyio.Event = field(default_factory=anyio.Event)
    answer: OrderRecord | None = None  # the row with IB's first report applied: the 201's body
    deferred: bool = False  # the rest of IB's burst was put off for this POST


def request_hash(request: OrderRequest) -> str:
    return hashlib.sha256(request.canonical_json().encode()).hexdigest()


def intent_of(request: OrderRequest, reference_price: Decimal | None) -> OrderIntent:
    return OrderIntent(
        symbol=request.symbol, side=request.side, qty=request.qty, type=request.type,
        limit_price=request.limit_price, stop_price=request.stop_price,
        reference_price=reference_price,
    )  # fmt: skip


class OrderService:
    def __init__(
        self,
        store: AuditStore,
        broker: Broker,
        clock: Clock,
        gate_context: Callable[[], GateContext],
        *,
        ack_timeout: float,
        trading_mode: str,
        count: Callable[[str, str], None] = lambda metric, label: None,
        alert: Callable[[str, str], None] = lambda kind, message: None,
        stream_order_event: Callable[[int, dict[str, Any]], None] = lambda seq, data: None,
    ) -> None:
        self.store = store
        self.broker = broker
        self.clock = clock
        self.gate_context = gate_context
        self.ack_timeout = ack_timeout
        self.trading_mode = trading_mode
        self._count = count  # ("outcome" | "gate", label) for the metrics
        self._alert = alert  # (notice kind, message): the notifiers
        # Every order event, as (seq, data), from the commit that journals it: the SSE stream.
        self._stream_order_event = stream_order_event
        self._in_flight: set[str] = set()
        self._unsent: set[str] = set()  # intents written whose POST has not sent them yet
        # The node's open orders, for MAX_OPEN_ORDERS without a database read per order;
        # loaded by run() and kept by the send and apply.
        self.open_ids: set[str] = set()
        self._acks: dict[str, _Waiter] = {}
        # Every client_order_id the store holds, once run() has loaded them: a new id needs
        # no read before its intent is written. The orders table's primary key stays the
        # guard: an id missing here by mistake gets a 409 from insert_order, never a second order.
        self._known_ids: set[str] | None = None
        self._cancel_requested: set[str] = set()
        self._accepted = SlidingWindowCounter(60.0)  # for MAX_ORDERS_PER_MINUTE
        # IB's reports, and flush markers (an Event set once everything before it is applied):
        # one task applies them all, in order, so no two writers compute from stale rows.
        self._reports: MemoryObjectSendStream[OrderReport | anyio.Event]
        self._report_queue: MemoryObjectReceiveStream[OrderReport | anyio.Event]
        self._reports, self._report_queue = anyio.create_memory_object_stream[
            OrderReport | anyio.Event
        ](math.inf)
        broker.on_order_report = self._on_report

    # ------------------------------------------------------------------ placing

    async def place(self, request: OrderRequest, request_id: str) -> Placed:
        cid = request.client_order_id
        digest = request_hash(request)
        if cid in self._in_flight:
            raise OrderProblem(
                "request-in-progress", 409, f"client_order_id {cid} is being placed; retry shortly"
            )
        known = self._known_ids
        existing = (
            None if known is not None and cid not in known else await self.store.get_order(cid)
        )
        if existing is not None:
            if existing.request_hash != digest:
                raise OrderProblem(
                    "idempotency-key-reused",
                    422,
                    f"client_order_id {cid} was used for a different order",
                )
            return Placed(existing, replayed=True)
        self._in_flight.add(cid)
        try:
            return await self._place_new(request, digest, request_id)
        finally:
            self._in_flight.discard(cid)

    async def _place_new(self, request: OrderRequest, digest: str, request_id: str) -> Placed:
        cid = request.client_order_id
        ctx = self.gate_context()
        # Refused before anything is asked of IB or written.
        closed = closed_to_every_order(ctx)
        if closed is not None:
            await self._refuse(closed, request, request_id, ctx.state)
        reference = await self._reference_price(request, ctx)
        intent = intent_of(request, reference)
        early = decide(ctx, intent)
        if isinstance(early, Refuse):
            await self._refuse(early, request, request_id, ctx.state)
        try:
            con_id = await self.broker.con_id(request.symbol)
        except BrokerError as exc:
            raise OrderProblem("gateway-unavailable", 503, str(exc), 5.0) from None
        if con_id is None:
            raise OrderProblem("unknown-symbol", 422, f"IB knows no US stock {request.symbol!r}")
        now = self.clock.now()
        try:
            broker_id = self.broker.reserve_order_id()
        except BrokerError as exc:
            raise OrderProblem("gateway-unavailable", 503, str(exc), 5.0) from None
        record = OrderRecord.new(
            request, request_hash=digest, request_id=request_id, con_id=con_id,
            account_id=ctx.account or "", trading_mode=self.trading_mode, at=now,
            broker_order_id=broker_id,
        )  # fmt: skip
        spec = OrderSpec(
            client_order_id=cid, symbol=request.symbol, con_id=con_id, side=request.side,
            qty=request.qty, type=request.type, limit_price=request.limit_price,
            stop_price=request.stop_price, time_in_force=request.time_in_force,
            extended_hours=request.extended_hours, account=ctx.account or "",
        )  # fmt: skip
        # Written and not yet sent (this POST sends it or releases it): reconcile leaves it be.
        self._unsent.add(cid)
        try:
            await self._write_intent(record, request_id)
            # The gate again, on the facts as they are now: a kill switch, a removed arm file
            # or a lost gateway during the lookups or the commit stops the order here, and a
            # request that ran alongside has been counted (open orders, the minute's orders),
            # so no two share a limit's last slot. Nothing awaits from here to the send.
            now_ctx = self.gate_context()
            decision = decide(now_ctx, intent)
            if isinstance(decision, Refuse):
                await self._release(record, decision, request, request_id, now_ctx.state)
            waiter = self._acks[cid] = _Waiter(committed=record)
            try:
                self.broker.place_order(spec, broker_id)
            except BrokerError as exc:  # the socket was gone, so IB cannot have it
                self._acks.pop(cid, None)
                gone = Refuse("gateway-unavailable", 503, f"{exc}; nothing was sent", 5.0,
                              gate="connected")  # fmt: skip
                await self._release(record, gone, request, request_id, now_ctx.state)
        finally:
            self._unsent.discard(cid)
        self.open_ids.add(cid)
        self._accepted.record(anyio.current_time())
        self._count("outcome", "sent")
        logger.info("request {} order {} sent to IB as #{} ({} {} {} {})", request_id, cid,
                    broker_id, request.side, request.qty, request.symbol, request.type)  # fmt: skip
        try:
            await self.clock.wait(waiter.event, self.ack_timeout)
        finally:  # a cancelled POST (client gone) must not leave its waiter behind
            self._acks.pop(cid, None)
        if waiter.answer is not None:
            # IB's first report: the 201 does not wait for its commit (the intent is
            # durable; a crash before the commit is mended by reconcile).
            return Placed(waiter.answer, replayed=False)
        current = await self.store.get_order(cid)
        assert current is not None
        return Placed(current, replayed=False)

    async def _write_intent(self, record: OrderRecord, request_id: str) -> None:
        """The intent, before anything is sent, and its pending_new event in the same commit
        (no second commit, and fsync, while IB works on the order)."""
        cid = record.client_order_id
        try:
            await self.store.insert_order(record, ["pending_new"], self._stream_committed)
        except DuplicateOrder:
            if self._known_ids is not None:
                self._known_ids.add(cid)  # stored after all: the next try replays or refuses
            raise OrderProblem(
                "request-in-progress", 409, f"client_order_id {cid} is being placed; retry shortly"
            ) from None
        except Exception as exc:  # any doubt about the audit trail refuses the order
            logger.error("request {} {}: audit store unavailable: {}", request_id, cid, exc)
            raise OrderProblem("audit-unavailable", 503,
                               "the audit trail could not record the order; nothing was sent",
                               5.0) from None  # fmt: skip
        if self._known_ids is not None:
            self._known_ids.add(cid)

    async def _refuse(self, refusal: Refuse, request: OrderRequest, request_id: str,
                      state: str) -> NoReturn:  # fmt: skip
        """The gate's refusal as the request's problem, counted and journaled; `state` is the
        lifecycle state the deciding context saw."""
        self._count("gate", refusal.gate)
        self._count("outcome", "refused")
        await self._journal_refusal(refusal, request, request_id)
        raise OrderProblem(refusal.slug, refusal.status, refusal.detail, refusal.retry_after,
                           state=state)  # fmt: skip

    async def _release(self, record: OrderRecord, refusal: Refuse, request: OrderRequest,
                       request_id: str, state: str) -> NoReturn:  # fmt: skip
        """The intent of an order refused after it was written, and never sent: its id is
        freed (DESIGN.md §5: a refused request consumes nothing), the refusal journaled."""
        cid = record.client_order_id
        rejected = replace(record, status="rejected", status_reason=f"not sent: {refusal.detail}",
                           failed_at=self.clock.now())  # fmt: skip
        # Shielded: a client that hangs up now must not leave an unsent intent holding its id.
        with anyio.CancelScope(shield=True):
            try:
                announce = {"event": "rejected", "order": rejected.to_api()}
                await self.store.delete_order(cid, announce, self._stream_committed)
                if self._known_ids is not None:
                    self._known_ids.discard(cid)
            except Exception as exc:  # the order stays pending_new; reconcile rejects it
                logger.error("request {} {}: the unsent intent could not be released: {}",
                             request_id, cid, exc)  # fmt: skip
        await self._refuse(refusal, request, request_id, state)

    def _stream_committed(self, events: list[tuple[int, dict[str, Any]]]) -> None:
        for seq, data in events:
            self._stream_order_event(seq, data)

    async def _reference_price(self, request: OrderRequest, ctx: GateContext) -> Decimal | None:
        """The market's price for MAX_ORDER_NOTIONAL, for the orders whose own prices do not
        bound what they trade at (`needs_reference_price`). A quote IB cannot give now is a
        503 to retry, not the limit's final 403."""
        if ctx.max_order_notional is None or ctx.state != "SERVING":
            return None
        if not needs_reference_price(request.side, request.type):
            return None
        try:
            quote = await self.broker.quote(request.symbol)
        except UnknownSymbol:
            raise OrderProblem("unknown-symbol", 422,
                               f"IB knows no US stock {request.symbol!r}") from None  # fmt: skip
        except BrokerError as exc:
            raise OrderProblem("gateway-unavailable", 503,
                               f"no quote for {request.symbol} to check MAX_ORDER_NOTIONAL "
                               f"against: {exc}", 5.0) from None  # fmt: skip
        return quote.ask if request.side == "buy" else quote.bid

    async def _journal_refusal(self, refusal: Refuse, request: OrderRequest,
                               request_id: str) -> None:  # fmt: skip
        logger.warning("request {} order {} refused by the gate: {} ({})", request_id,
                       request.client_order_id, refusal.slug, refusal.detail)  # fmt: skip
        try:
            await self.store.journal(
                "gate_refusal",
                {"gate": refusal.gate, "slug": refusal.slug, "detail": refusal.detail,
                 "request": request.model_dump(mode="json")},
                request_id=request_id, client_order_id=request.client_order_id,
            )  # fmt: skip
        except Exception as exc:  # the refusal stands even when it cannot be journaled
            logger.error("request {}: could not journal a refusal: {}", request_id, exc)

    async def what_if(self, request: OrderRequest) -> WhatIfReport:
        """IB's margin and commission estimate; nothing is placed."""
        con_id = await self.broker.con_id(request.symbol)
        if con_id is None:
            raise UnknownSymbol([request.symbol])
        ctx = self.gate_context()
        return await self.broker.what_if(OrderSpec(
            client_order_id=request.client_order_id, symbol=request.symbol, con_id=con_id,
            side=request.side, qty=request.qty, type=request.type,
            limit_price=request.limit_price, stop_price=request.stop_price,
            time_in_force=request.time_in_force, extended_hours=request.extended_hours,
            account=ctx.account or "",
        ))  # fmt: skip

    async def preview_gates(self, request: OrderRequest) -> list[Refuse]:
        ctx = self.gate_context()
        try:
            reference = await self._reference_price(request, ctx)
        except OrderProblem:  # a dry run: the notional gate then says no price is known
            reference = None
        return dry_run(ctx, intent_of(request, reference))

    def orders_last_minute(self) -> tuple[int, float | None]:
        now = anyio.current_time()
        return self._accepted.count(now), self._accepted.frees_in(now)

    # ------------------------------------------------------------------ cancelling

    async def cancel(self, record: OrderRecord, request_id: str) -> OrderRecord:
        if is_terminal(record.status):
            raise OrderProblem(
                "order-not-cancelable", 409, f"order {record.id} is already {record.status}"
            )
        if not self.broker.connected:
            raise GatewayNotConnected(
                "gateway-unavailable",
                503,
                "the gateway is not connected; cancel again when it is",
                5.0,
            )
        # Before asking: ib_async may report the order's end within cancelOrder itself. Taken
        # back when nothing was asked, so IB's own end of a day order is not read as a cancel.
        self._cancel_requested.add(record.client_order_id)
        if record.broker_order_id is None or not self.broker.cancel_order(record.broker_order_id):
            self._cancel_requested.discard(record.client_order_id)
            raise OrderProblem(
                "gateway-unavailable",
                503,
                "the gateway does not know this order yet; retry shortly",
                5.0,
            )
        try:
            # Who asked and the pending_cancel announcement, in the change's own commit.
            [updated] = await self.store.update_orders([OrderUpdate(
                record.client_order_id, {"status": "pending_cancel"},
                [("cancel", {"id": record.id})], only_if_open=True, announce=sse_event_name,
                request_id=request_id)], self._stream_committed)  # fmt: skip
        except AuditError as exc:
            logger.error("request {}: order {} asked to cancel at IB, but the audit trail could "
                         "not record it: {}", request_id, record.client_order_id, exc)  # fmt: skip
            raise OrderProblem("audit-unavailable", 503, "IB was asked to cancel the order, but "
                               "the audit trail could not record it", 5.0) from None  # fmt: skip
        if is_terminal(updated.status):  # IB finished it while the cancel was on its way
            raise OrderProblem(
                "order-not-cancelable", 409, f"order {record.id} is already {updated.status}"
            )
        return updated

    async def cancel_open(self, request_id: str) -> list[tuple[OrderRecord, OrderProblem | None]]:
        results: list[tuple[OrderRecord, OrderProblem | None]] = []
        for record in await self.store.open_orders():
            try:
                results.append((await self.cancel(record, request_id), None))
            except OrderProblem as problem:
                results.append((record, problem))
        return results

    # ------------------------------------------------------------------ IB's reports

    def _on_report(self, report: OrderReport) -> None:
        """IB's report, as ib_async hands it over: a waiting POST is answered, and the report
        is queued for apply(), which makes it durable in order.

        Tasks run in the order they were woken. The answer comes first: the POST's task is
        woken, then the rest of IB's burst is put off until after it (the broker's
        `defer_rest_of_burst`), then the task that applies the reports is woken. So the 201
        goes out before the rest of the burst is decoded, and the burst is still applied in
        one commit. The queueing is in `finally`, so nothing in the answer can cost the
        durable path.
        """
        try:
            self._answer(report)
        finally:
            self._reports.send_nowait(report)

    def _answer(self, report: OrderReport) -> None:
        waiter = self._acks.get(report.client_order_id)
        if (waiter is None or report.broker_order_id != waiter.committed.broker_order_id
                or (waiter.answer is None
                    and report.broker_status in PENDING_BROKER_STATUSES)):  # fmt: skip
            return
        # Until the POST resumes, later reports refine the answer: ib_async reports IB's
        # refusal as Cancelled, then the error that makes it a rejection, in one call.
        base = waiter.answer or waiter.committed
        changes = self._changes(base, report)
        waiter.answer = base if changes is None else replace(base, **changes)
        waiter.event.set()
        if not waiter.deferred and report.broker_status in ACKNOWLEDGED:
            # IB has the order: the POST goes out before the rest of the burst is decoded.
            # Not on a status a later message may still explain (Inactive before its error,
            # ValidationError from a warning): the whole read refines those, as it always did.
            waiter.deferred = True
            self.broker.defer_rest_of_burst()

    async def run(self) -> None:
        """Apply IB's order reports to the store, in order (a task of the daemon)."""
        self.open_ids |= {record.client_order_id for record in await self.store.open_orders()}
        self._known_ids = await self.store.client_order_ids()
        async with self._report_queue:
            async for item in self._report_queue:
                queued = with_queued(item, self._report_queue)  # IB's burst: one commit
                burst: list[OrderReport] = []
                for entry in queued:
                    if isinstance(entry, OrderReport):
                        burst.append(entry)
                        continue
                    await self._apply_burst(burst)
                    burst = []
                    entry.set()  # a flush marker: everything before it is applied
                await self._apply_burst(burst)

    async def _apply_burst(self, burst: list[OrderReport]) -> None:
        if not burst:
            return
        try:
            await self.apply_all(burst)
            return
        except Exception as exc:
            if len(burst) == 1:  # one bad report must not stop the reports after it
                logger.exception("order report for {} not applied: {}",
                                 burst[0].client_order_id, exc)  # fmt: skip
                return
            logger.warning("order reports not applied together ({}); one at a time", exc)
        for report in burst:  # a failed commit costs no other report
            await self._apply_burst([report])

    async def flush_reports(self) -> None:
        """Return once every report queued so far is applied (run() must be running)."""
        done = anyio.Event()
        self._reports.send_nowait(done)
        await done.wait()

    async def apply_all(self, reports: list[OrderReport]) -> None:
        """Apply reports in order, written in one transaction with the trade updates they
        announce (streamed from that commit); then log and alert."""
        rows: dict[str, OrderRecord] = {}  # each order's row as the reports before left it
        updates: list[OrderUpdate] = []
        befores: list[tuple[OrderRecord, str]] = []  # (row before, IB's status) per update
        for report in reports:
            cid = report.client_order_id
            record = rows.get(cid)
            if record is None:
                pending = self._acks.get(cid)
                # While its POST waits, the row is the one this service last wrote: no read.
                record = pending.committed if pending else await self.store.get_order(cid)
            if record is None:
                continue  # not the node's order (another client's orderRef)
            changes = self._changes(record, report)
            if changes is None or all(getattr(record, k) == v for k, v in changes.items()):
                continue
            fill = (
                [(KIND_FILL, {"filled_qty": str(report.filled),
                              "avg_price": str(report.avg_fill_price)})]
                if report.filled > record.filled_qty else []
            )  # fmt: skip
            updates.append(OrderUpdate(cid, changes, fill, announce=sse_event_name))
            befores.append((record, report.broker_status))
            rows[cid] = replace(record, **changes)
        if not updates:
            return
        for (before, broker_status), updated in zip(
            befores, await self.store.update_orders(updates, self._stream_committed), strict=True
        ):
            cid = updated.client_order_id
            if is_terminal(updated.status):
                self.open_ids.discard(cid)
            pending = self._acks.get(cid)
            if pending is not None:
                pending.committed = updated
            if updated.status != before.status:
                if is_terminal(updated.status):
                    self._count("outcome", updated.status)
                logger.info("order {} {} -> {} (IB {})", cid, before.status, updated.status,
                            broker_status)  # fmt: skip
                if updated.status == "rejected":
                    self._alert(ORDER_REJECTED, f"order {cid} ({updated.side} {updated.qty} "
                                f"{updated.symbol}) rejected: {updated.status_reason}")  # fmt: skip

    def _changes(self, record: OrderRecord, report: OrderReport) -> dict[str, Any] | None:
        """The fields IB's report sets on the order; None when the report must not move it."""
        if report.filled < record.filled_qty:
            return None  # older than what is stored: IB's filled quantity never goes down
        status = map_status(
            report.broker_status, report.filled, report.remaining,
            cancel_requested=record.client_order_id in self._cancel_requested,
            error_code=report.error_code,
            tif=record.time_in_force, previous=cast(OrderStatus, record.status),
        )  # fmt: skip
        if is_terminal(record.status) and status != record.status:
            # A terminal state does not move, with one exception: ib_async reports IB's
            # refusal as Cancelled just before the error that explains it arrives.
            correcting = (status == "rejected" and record.status in ("expired", "canceled")
                          and not record.filled_qty)  # fmt: skip
            if not correcting:
                return None
        changes: dict[str, Any] = {
            "broker_status": report.broker_status,
            # IB sends no order id with a completed order (ib_async then says 0): the one the
            # intent recorded stays.
            "broker_order_id": report.broker_order_id or record.broker_order_id,
            "perm_id": report.perm_id or record.perm_id,
            "filled_qty": report.filled,
            "filled_avg_price": report.avg_fill_price,
            "commission": report.commission,
            "status": status,
            "reconcile_pending": False,
        }
        now = self.clock.now()
        if status == "filled" and record.filled_at is None:
            changes["filled_at"] = now
        if status == "canceled" and record.canceled_at is None:
            changes["canceled_at"] = now
        if status == "expired" and record.expired_at is None:
            changes["expired_at"] = now
        if status == "rejected":
            changes["failed_at"] = record.failed_at or now
            changes["status_reason"] = (
                f"IB {report.error_code}: {report.error_text}" if report.error_code
                else record.status_reason or "rejected by IB"
            )  # fmt: skip
        return changes

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self) -> str:
        """Match the node's open orders with IB's by orderRef: nothing resent, no fill missed."""
        await self.broker.refresh_completed()
        reports = {r.client_order_id: r for r in self.broker.order_reports()}
        matched = missing = 0
        for record in await self.store.open_orders():
            cid = record.client_order_id
            report = reports.get(cid)
            if report is not None:
                # Through the queue, behind the reports already in it: one writer, in order.
                self._reports.send_nowait(report)
                matched += 1
            elif cid in self._unsent:
                continue  # its POST is sending it, or releasing it unsent, right now
            elif record.broker_order_id is None or record.status == "pending_new":
                try:
                    await self.store.update_orders([OrderUpdate(cid, {
                        "status": "rejected", "status_reason": REJECT_REASON_NOT_AT_IB,
                        "failed_at": self.clock.now()}, announce=sse_event_name)],
                        self._stream_committed)  # fmt: skip
                except OrderNotFound:
                    continue  # released since it was read: it was never sent
                self.open_ids.discard(cid)
                missing += 1
        await self.flush_reports()
        summary = f"{matched} orders reconciled by orderRef, {missing} never reached IB"
        await self.store.journal("reconcile", {"matched": matched, "missing": missing})
        return summary
