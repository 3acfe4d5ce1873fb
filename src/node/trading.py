"""The daemon's trading side: the gate's facts, the kill switch, the journal of what happens,
SSE fan-out and audit snapshots. The lifecycle machine never depends on it."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from loguru import logger

from node.api.events import STREAMED_KINDS, EventHub, StreamEvent
from node.api.metrics import NodeMetrics
from node.audit import KIND_ORDER_EVENT, AuditError, AuditStore, JournalRow
from node.broker import Broker, BrokerError
from node.clock import Clock
from node.config import Settings
from node.latches import OperatorState
from node.orders import GatewayNotConnected, OrderService, cancel_results
from node.plugins.notifiers.base import KILL_SWITCH
from node.queues import with_queued
from node.safety import GateContext, blocked_by

SNAPSHOT_NAME = "audit.db"


class Trading:
    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        store: AuditStore,
        broker: Broker,
        operator: OperatorState,
        metrics: NodeMetrics,
        state: Callable[[], str],
        retry_after: Callable[[], float | None],
        *,
        armed_by_demo: bool = False,
        alert: Callable[[str, str], None] = lambda kind, message: None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.store = store
        self.broker = broker
        self.operator = operator
        self.metrics = metrics
        self.hub = EventHub()
        self._state = state
        self._retry_after = retry_after
        self.armed_by_demo = armed_by_demo
        self.alert = alert  # (notice kind, message): the notifiers
        self._armed_seen: bool | None = None
        # Rows to journal, and flush markers (an Event set once every row before it is written).
        self._journal_in: MemoryObjectSendStream[_Row | anyio.Event]
        self._journal_out: MemoryObjectReceiveStream[_Row | anyio.Event]
        self._journal_in, self._journal_out = anyio.create_memory_object_stream[_Row | anyio.Event](
            math.inf
        )
        broker.on_ib_error = lambda code, message, req_id: self.journal_later(
            "ib_error", {"code": code, "message": message, "id": req_id}
        )
        self.orders = OrderService(
            store, broker, clock, self.gate_context,
            ack_timeout=settings.ORDER_ACK_TIMEOUT, trading_mode=settings.TRADING_MODE,
            count=self._count, alert=alert, stream_order_event=self.stream_order_event,
        )  # fmt: skip

    def _count(self, metric: str, label: str) -> None:
        if metric == "gate":
            self.metrics.gate_refusals.labels(label).inc()
        else:
            self.metrics.orders.labels(label).inc()

    # ------------------------------------------------------------------ the gate's facts

    def armed(self) -> bool:
        """The arm file, looked at on every call; its appearance and removal are journaled."""
        armed = self.armed_by_demo or self.settings.arm_orders_file.exists()
        if self._armed_seen is not None and armed != self._armed_seen:
            logger.warning(
                "arm file {} {}",
                self.settings.arm_orders_file,
                "appeared: orders may be placed" if armed else "removed: disarmed",
            )
            self.journal_later(
                "arm_file", {"armed": armed, "path": str(self.settings.arm_orders_file)}
            )
        self._armed_seen = armed
        return armed

    def live_override(self) -> bool:
        path = self.settings.LIVE_TRADING_OVERRIDE_FILE
        return path is not None and path.exists()

    def gate_context_now(self, open_orders: int = 0) -> GateContext:
        s = self.settings
        info = self.broker.info
        count, frees_in = self.orders.orders_last_minute()
        return GateContext(
            kill_switch=self.operator.kill_switch,
            state=self._state(),
            # Not only the socket: IB itself reachable (no 1100) and heartbeats answered, or
            # an order could go out in the instant before the machine reaches DEGRADED.
            connected=self.broker.healthy,
            next_retry_in=self._retry_after(),
            orders_enabled=s.ORDERS_ENABLED,
            armed=self.armed(),
            trading_mode=s.TRADING_MODE,
            live_override=self.live_override(),
            account=info.account if info else None,
            max_order_qty=s.MAX_ORDER_QTY,
            max_order_notional=s.MAX_ORDER_NOTIONAL,
            max_open_orders=s.MAX_OPEN_ORDERS,
            open_orders=open_orders,
            symbol_allowlist=s.symbol_allowlist,
            max_orders_per_minute=s.MAX_ORDERS_PER_MINUTE,
            orders_last_minute=count,
            rate_window_frees_in=frees_in,
        )

    def gate_context(self) -> GateContext:
        return self.gate_context_now(open_orders=len(self.orders.open_ids))

    def gates_document(self) -> dict[str, Any]:
        ctx = self.gate_context_now()
        blocked = blocked_by(ctx)
        return {
            "orders_enabled": ctx.orders_enabled,
            "armed": ctx.armed,
            "live_override": ctx.live_override,
            "kill_switch": ctx.kill_switch,
            "can_place_orders": not blocked,
            "blocked_by": blocked,
        }

    # ------------------------------------------------------------------ the kill switch

    async def kill(self, scope: str, request_id: str) -> dict[str, Any]:
        """Latch at once, then cancel; without a gateway the cancel waits for CONNECTED.

        The cancel stays pending (carried out on the next CONNECTED) until every open order
        has been asked to cancel; a journal that cannot be written delays no cancel.
        """
        connected = self.broker.connected and self._state() in ("SERVING", "DEGRADED", "CONNECTED")
        self.operator.engage_kill(scope)
        # An account-wide cancel still pending from an earlier kill is not narrowed by this one.
        scope = self.operator.kill_pending or scope
        logger.warning("request {}: KILL SWITCH engaged (scope {})", request_id, scope)
        self.alert(KILL_SWITCH, f"kill switch engaged (scope {scope}): no order goes out until "
                   "`ibkr-node ctl clear-kill` on the laptop")  # fmt: skip
        canceled: list[dict[str, Any]] = []
        pending = True
        if connected:
            canceled, pending = await self._cancel_for_kill(scope, request_id)
            if not pending:
                self.operator.kill_carried_out()
        await self._journal_kill({"engaged": True, "scope": scope, "pending": pending,
                                  "canceled": canceled}, request_id)  # fmt: skip
        return {"kill_switch": True, "scope": scope, "canceled": canceled, "pending": pending}

    async def _cancel_for_kill(self, scope: str,
                               request_id: str) -> tuple[list[dict[str, Any]], bool]:  # fmt: skip
        """Each open order's cancel result, and whether any cancel is still to be sent."""
        try:
            if scope == "account":
                self.broker.global_cancel()
            results = await self.orders.cancel_open(request_id)
        except (BrokerError, AuditError) as exc:
            logger.error("request {}: the kill switch's cancel failed ({}); it stays pending "
                         "and is carried out when the gateway is next connected",
                         request_id, exc)  # fmt: skip
            return [], True
        unsent = [record.client_order_id for record, problem in results
                  if isinstance(problem, GatewayNotConnected)]  # fmt: skip
        if unsent:
            logger.error("request {}: the kill switch could not cancel {} yet; it stays pending "
                         "and is carried out when the gateway is next connected",
                         request_id, ", ".join(unsent))  # fmt: skip
        return cancel_results(results, request_id), bool(unsent)

    async def carry_out_pending_kill(self) -> None:
        """CONNECTED runs this before anything else (DESIGN.md §5)."""
        scope = self.operator.kill_pending
        if scope is None:
            return
        canceled, pending = await self._cancel_for_kill(scope, "kill-on-connect")
        if not pending:
            self.operator.kill_carried_out()
        logger.warning("pending kill switch {}: {} order(s) asked to cancel (scope {})",
                       "still pending" if pending else "carried out", len(canceled),
                       scope)  # fmt: skip
        await self._journal_kill({"carried_out": not pending, "scope": scope,
                                  "canceled": canceled}, None)  # fmt: skip

    async def _journal_kill(self, data: dict[str, Any], request_id: str | None) -> None:
        # The latch and the cancels stand whether or not the row can be written.
        try:
            await self.store.journal("kill_switch", data, request_id=request_id)
        except AuditError as exc:
            logger.error("request {}: could not journal the kill switch: {}", request_id, exc)

    async def clear_kill(self) -> None:
        self.operator.clear_kill()
        logger.warning("kill switch cleared by the operator")
        await self.store.journal("kill_switch", {"engaged": False})

    # ------------------------------------------------------------------ journal and events

    def journal_later(self, kind: str, data: dict[str, Any], request_id: str | None = None,
                      ) -> None:  # fmt: skip
        """From synchronous code (the machine's callbacks): written in order by run()."""
        self._journal_in.send_nowait((kind, data, request_id))

    def stream_order_event(self, seq: int, data: dict[str, Any]) -> None:
        """An order event already journaled (as seq), given from the store's `on_commit`:
        streamed in journal order like the writer's own."""
        self.hub.publish(StreamEvent(seq, STREAMED_KINDS[KIND_ORDER_EVENT], data))

    async def _write_journal(self) -> None:
        async with self._journal_out:
            async for first in self._journal_out:
                rows: list[JournalRow] = []
                for item in with_queued(first, self._journal_out):  # one commit for all
                    if isinstance(item, anyio.Event):
                        await self._write_rows(rows)
                        rows = []
                        item.set()
                        continue
                    kind, data, request_id = item
                    rows.append(JournalRow(kind, data, request_id))
                await self._write_rows(rows)

    async def _write_rows(self, rows: list[JournalRow]) -> None:
        if not rows:
            return
        try:
            await self.store.journal_many(rows, partial(self._stream, rows))
        except Exception:  # one bad row must not cost the others: one at a time
            for row in rows:
                await self._journal_one(row)

    async def drain(self) -> None:
        """At shutdown, once the gateway is gone: IB's last reports (decoded as its socket
        closed) applied, then every row queued so far written, before their writers stop."""
        await self.orders.flush_reports()
        written = anyio.Event()
        self._journal_in.send_nowait(written)
        await written.wait()

    def _stream(self, rows: list[JournalRow], seqs: list[int]) -> None:
        """Under the store's write lock (its `on_commit`): streamed in journal order."""
        for seq, row in zip(seqs, rows, strict=True):
            name = STREAMED_KINDS.get(row.kind)
            if name is not None:
                self.hub.publish(StreamEvent(seq, name, row.data))

    async def _journal_one(self, row: JournalRow) -> None:
        try:
            await self.store.journal_many([row], partial(self._stream, [row]))
        except Exception as exc:  # the daemon keeps running; the log still has it
            logger.error("could not journal {}: {}", row.kind, exc)

    async def snapshot(self) -> None:
        folder = self.settings.GDRIVE_BASE_PATH
        if folder is None:
            return
        try:
            await self.store.snapshot(folder / SNAPSHOT_NAME)
        except Exception as exc:
            logger.error("audit snapshot to {} failed: {}", folder / SNAPSHOT_NAME, exc)

    async def _snapshots(self) -> None:
        while True:
            await self.clock.sleep(self.settings.AUDIT_SNAPSHOT_INTERVAL)
            await self.snapshot()

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._write_journal)
            tg.start_soon(self.orders.run)
            tg.start_soon(self._snapshots)

    async def close(self) -> None:
        """Shutdown: end the event streams, write a last snapshot, close the store."""
        self.hub.close()
        with anyio.CancelScope(shield=True):
            await self.snapshot()
            await self.store.close()


_Row = tuple[str, dict[str, Any], str | None]  # kind, data, request_id
