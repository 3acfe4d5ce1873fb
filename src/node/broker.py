"""The ib_async adapter: connect, heartbeat, IB error handling. The only module importing ib_async.

It turns what the socket says into events for the lifecycle machine (disconnected,
heartbeat_lost, connectivity_lost) and into a status the API reads. Every deadline it
acts on (heartbeat interval and timeout) is a Clock sleep; ib_async's own connect
timeout is a bounded real-time I/O limit.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import anyio
from ib_async import (
    IB,
    CommissionReport,
    Execution,
    Fill,
    LimitOrder,
    MarketOrder,
    Order,
    PortfolioItem,
    Position,
    Stock,
    StopLimitOrder,
    StopOrder,
    Trade,
)
from loguru import logger

from node.clock import Clock
from node.events import Event, Trigger
from node.ib_errors import ErrorClass, classify, farm_from_message, market_data, next_farm_state
from node.message_pacer import MessagePacer


class BrokerError(Exception):
    """A request to the gateway failed; str() says why in operator terms."""


class UnknownSymbol(BrokerError):
    def __init__(self, symbols: list[str]) -> None:
        super().__init__(f"IB knows no US stock {', '.join(symbols)}")
        self.symbols = symbols


@dataclass(frozen=True)
class ConnectionInfo:
    host: str
    port: int
    server_version: int
    accounts: tuple[str, ...]
    connected_since: datetime

    @property
    def account(self) -> str | None:
        return self.accounts[0] if self.accounts else None


@dataclass
class HeartbeatStatus:
    last_ok: datetime | None = None
    latency_ms: float | None = None
    misses: int = 0


@dataclass(frozen=True)
class OrderSpec:
    """An order as the node sends it: orderRef carries the client_order_id."""

    client_order_id: str
    symbol: str
    con_id: int
    side: str  # buy | sell
    qty: Decimal
    type: str  # market | limit | stop | stop_limit
    limit_price: Decimal | None
    stop_price: Decimal | None
    time_in_force: str  # day | gtc | ioc | opg
    extended_hours: bool
    account: str


@dataclass(frozen=True)
class OrderReport:
    """What IB says about one of the node's orders (matched by orderRef)."""

    client_order_id: str
    broker_order_id: int
    perm_id: int
    broker_status: str
    filled: Decimal
    remaining: Decimal
    avg_fill_price: Decimal | None
    error_code: int | None = None
    error_text: str | None = None
    commission: Decimal | None = None


@dataclass(frozen=True)
class WhatIfReport:
    commission: Decimal | None
    init_margin_change: Decimal | None
    maint_margin_change: Decimal | None
    equity_with_loan_after: Decimal | None
    warning: str


@dataclass(frozen=True)
class QuoteReport:
    symbol: str
    bid: Decimal | None
    ask: Decimal | None
    last: Decimal | None
    bid_size: Decimal | None
    ask_size: Decimal | None
    volume: Decimal | None
    data_type: str  # live | frozen | delayed | delayed_frozen


@dataclass(frozen=True)
class PositionReport:
    symbol: str
    con_id: int
    qty: Decimal
    avg_cost: Decimal
    market_price: Decimal | None
    market_value: Decimal | None
    unrealized_pl: Decimal | None
    realized_pl: Decimal | None


DATA_TYPES = {1: "live", 2: "frozen", 3: "delayed", 4: "delayed_frozen"}
QUOTE_TIMEOUT = 11.0  # real TWS ends a snapshot within about 11 s
CONTRACT_TIMEOUT = 10.0
WHAT_IF_TIMEOUT = 10.0
# A whole account's completed orders; RECONCILE_TIMEOUT (60 s by default) bounds CONNECTED.
ORDERS_TIMEOUT = 30.0
T = TypeVar("T")


@dataclass
class SyncSummary:
    open_orders: int
    positions: int
    executions: int

    def describe(self) -> str:
        return (
            f"{self.open_orders} open orders, {self.positions} positions, "
            f"{self.executions} executions reconciled"
        )


@dataclass
class _Watch:
    """A condition variable for 'something about the connection changed'."""

    changed: anyio.Event = field(default_factory=anyio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self.changed.wait()


class Broker:
    def __init__(
        self,
        clock: Clock,
        post: Callable[[Event], None],
        *,
        client_id: int,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        heartbeat_misses: int,
    ) -> None:
        self._clock = clock
        self._post = post
        self.client_id = client_id
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.heartbeat_misses = heartbeat_misses
        self._ib: IB | None = None
        self._pacer: MessagePacer | None = None  # between the session's socket and ib_async
        self._leaving = False  # a disconnect we asked for is not a failure
        self.info: ConnectionInfo | None = None
        self.heartbeat = HeartbeatStatus()
        self.heartbeat_lost = False
        self.connectivity_lost = False  # IB 1100 until 1101/1102
        self.broken_farms: frozenset[str] = frozenset()
        self._watch = _Watch()
        self._poke = anyio.Event()
        self.on_order_report: Callable[[OrderReport], None] = lambda report: None
        # Every IB error or notice, for the audit journal: (code, message, request id).
        self.on_ib_error: Callable[[int, str, int], None] = lambda code, message, req_id: None
        self._con_ids: dict[str, int] = {}
        # The last snapshot of each symbol and when it was taken: DEGRADED serves these.
        self.last_quotes: dict[str, tuple[QuoteReport, datetime]] = {}
        self._order_errors: dict[int, tuple[int, str]] = {}  # IB order id -> last error
        use_brief_reprs()

    # ------------------------------------------------------------------ status

    @property
    def connected(self) -> bool:
        return self._ib is not None and self._ib.isConnected()

    @property
    def market_data(self) -> str:
        return market_data(self.broken_farms)

    @property
    def healthy(self) -> bool:
        return self.connected and not self.heartbeat_lost and not self.connectivity_lost

    async def wait_healthy(self) -> None:
        """Return once heartbeats are answered and IB connectivity is back."""
        await self._watch.until(lambda: self.healthy)

    # ------------------------------------------------------------------ connect

    async def connect(self, host: str, port: int, attempt_timeout: float) -> ConnectionInfo:
        """One connect attempt with ib_async's full start-up sync, bounded in real time."""
        self.disconnect()
        ib = IB()
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += self._on_disconnected
        ib.orderStatusEvent += self._on_trade
        ib.execDetailsEvent += lambda trade, fill: self._on_trade(trade)
        ib.commissionReportEvent += lambda trade, fill, report: self._on_trade(trade)
        self._ib = ib
        self._pacer = _paced(ib)
        self._leaving = False
        # Reset before the handshake, not after: IB sends 1100 or a broken farm to a client
        # that connects during an outage, and that notice arrives within the start-up sync.
        self.heartbeat_lost = False
        self.connectivity_lost = False
        self.broken_farms = frozenset()
        self._watch.notify()
        try:
            await ib.connectAsync(
                host, port, clientId=self.client_id, timeout=attempt_timeout, raiseSyncErrors=True
            )
        except (ConnectionError, OSError, TimeoutError) as exc:
            self.disconnect()
            raise BrokerError(_connect_failure(host, port, exc)) from None
        accounts = tuple(ib.managedAccounts())
        self.info = ConnectionInfo(
            host=host,
            port=port,
            server_version=ib.client.serverVersion(),
            accounts=accounts,
            connected_since=self._clock.now(),
        )
        self.heartbeat = HeartbeatStatus(last_ok=self._clock.now())
        self._watch.notify()
        logger.info(
            "connected to the gateway at {}:{} (server version {}, accounts {})",
            host, port, self.info.server_version, ",".join(accounts) or "none",
        )  # fmt: skip
        return self.info

    def disconnect(self) -> None:
        """Close the API connection on purpose (no `disconnected` event)."""
        pacer, self._pacer = self._pacer, None
        if pacer is not None:  # what arrived before we leave is decoded, as it came
            try:
                pacer.flush()
            finally:
                pacer.close()
        ib, self._ib = self._ib, None
        self.info = None
        if ib is not None:
            self._leaving = True
            ib.disconnect()
            self._leaving = False
            self._watch.notify()

    def sync_summary(self) -> SyncSummary:
        """What the start-up sync brought back (orders, positions, executions)."""
        ib = self._require()
        return SyncSummary(len(ib.openTrades()), len(ib.positions()), len(ib.fills()))

    # ------------------------------------------------------------------ orders

    async def con_id(self, symbol: str) -> int | None:
        """The stock's conId (cached), or None when IB knows no such symbol."""
        if symbol in self._con_ids:
            return self._con_ids[symbol]
        ib = self._require()
        details = await self._within(
            CONTRACT_TIMEOUT, ib.reqContractDetailsAsync(Stock(symbol, "SMART", "USD")),
            f"contract details for {symbol}",
        )  # fmt: skip
        if len(details) != 1 or details[0].contract is None:
            return None
        self._con_ids[symbol] = details[0].contract.conId
        return self._con_ids[symbol]

    def reserve_order_id(self) -> int:
        """The IB order id the next order will carry, known before it is sent (the intent
        row records it, so a crash right after sending still finds the order)."""
        return int(self._require().client.getReqId())

    def place_order(self, spec: OrderSpec, order_id: int) -> None:
        """Send the order under a reserved id (ib_async throttles requests to 45/s)."""
        ib = self._require()
        order = _ib_order(spec)
        order.orderId = order_id
        ib.placeOrder(_contract(spec), order)

    def defer_rest_of_burst(self) -> None:
        """Decode the rest of what the gateway sent on the next turn of the event loop: a
        request just answered by this report goes out before ib_async works through the rest
        of IB's burst (the fill, account values, portfolio: 2 ms here). See message_pacer."""
        if self._pacer is not None:
            self._pacer.defer_rest()

    async def what_if(self, spec: OrderSpec) -> WhatIfReport:
        ib = self._require()
        state = await self._within(
            WHAT_IF_TIMEOUT, ib.whatIfOrderAsync(_contract(spec), _ib_order(spec)), "what-if"
        )
        return WhatIfReport(
            commission=_decimal(state.commission),
            init_margin_change=_decimal(state.initMarginChange),
            maint_margin_change=_decimal(state.maintMarginChange),
            equity_with_loan_after=_decimal(state.equityWithLoanAfter),
            warning=state.warningText or "",
        )

    def cancel_order(self, broker_order_id: int) -> bool:
        """Ask IB to cancel; False when this session holds no such order."""
        ib = self._require()
        for trade in ib.trades():
            if trade.order.orderId == broker_order_id:
                ib.cancelOrder(trade.order)
                return True
        return False

    def global_cancel(self) -> None:
        self._require().reqGlobalCancel()  # type: ignore[no-untyped-call]

    def order_reports(self) -> list[OrderReport]:
        """Every order this session knows with an orderRef: open, completed and synced ones."""
        ib = self._require()
        return [report for trade in ib.trades() if (report := self._report(trade)) is not None]

    async def refresh_completed(self) -> None:
        """Ask IB again where every order stands: fills that happened while we were away, or
        while IB delivered nothing (1100), which it does not send again (failure-modes #31)."""
        ib = self._require()
        await self._within(ORDERS_TIMEOUT, ib.reqOpenOrdersAsync(), "the open orders request")
        completed = await self._within(
            ORDERS_TIMEOUT, ib.reqCompletedOrdersAsync(False), "the completed orders request"
        )
        # After the orders, as in ib_async's start-up sync: an execution finds its order.
        await self._within(ORDERS_TIMEOUT, ib.reqExecutionsAsync(), "the executions request")
        _settle(ib.trades(), completed)

    async def quotes(self, symbols: list[str]) -> list[QuoteReport]:
        """Snapshot quotes; symbols IB does not know raise BrokerError naming them."""
        ib = self._require()
        contracts = []
        unknown = []
        for symbol in symbols:
            con_id = await self.con_id(symbol)
            if con_id is None:
                unknown.append(symbol)
                continue
            contract = Stock(symbol, "SMART", "USD")
            contract.conId = con_id
            contracts.append(contract)
        if unknown:
            raise UnknownSymbol(unknown)
        tickers = await self._within(QUOTE_TIMEOUT, ib.reqTickersAsync(*contracts), "quotes")
        if len(tickers) != len(contracts):
            raise BrokerError("IB answered only part of the quote request")
        reports = [
            QuoteReport(
                symbol=contract.symbol, bid=_decimal(t.bid), ask=_decimal(t.ask),
                last=_decimal(t.last), bid_size=_decimal(t.bidSize),
                ask_size=_decimal(t.askSize), volume=_decimal(t.volume),
                data_type=DATA_TYPES.get(t.marketDataType, "live"),
            )
            for contract, t in zip(contracts, tickers, strict=True)
        ]  # fmt: skip
        now = self._clock.now()
        for report in reports:
            self.last_quotes[report.symbol] = (report, now)
        return reports

    async def quote(self, symbol: str) -> QuoteReport:
        [quote] = await self.quotes([symbol])
        return quote

    def account_values(self) -> dict[str, str]:
        """The account's values in USD (or without currency), by IB's tag."""
        ib = self._require()
        return {v.tag: v.value for v in ib.accountValues() if v.currency in ("USD", "BASE", "")}

    def positions(self) -> list[PositionReport]:
        ib = self._require()
        return [
            PositionReport(
                symbol=item.contract.symbol, con_id=item.contract.conId,
                qty=Decimal(str(item.position)), avg_cost=Decimal(str(item.averageCost)),
                market_price=_decimal(item.marketPrice), market_value=_decimal(item.marketValue),
                unrealized_pl=_decimal(item.unrealizedPNL), realized_pl=_decimal(item.realizedPNL),
            )
            for item in ib.portfolio()
            if item.position
        ]  # fmt: skip

    async def _within(self, seconds: float, request: Awaitable[T], what: str) -> T:
        """An ib_async request bounded by a Clock deadline (most have no timeout of their own);
        a socket that dies meanwhile is a BrokerError like any other failure."""
        result: list[T] = []
        failure: list[BaseException] = []
        async with anyio.create_task_group() as tg:

            async def deadline() -> None:
                await self._clock.sleep(seconds)
                tg.cancel_scope.cancel()

            tg.start_soon(deadline)
            try:
                result.append(await request)
            except (ConnectionError, OSError) as exc:
                failure.append(exc)  # raised outside the group, which would wrap it
            tg.cancel_scope.cancel()
        if failure:
            raise BrokerError(f"the gateway connection failed during {what}: {failure[0]}")
        if not result:
            raise BrokerError(f"no answer from IB for {what} within {seconds:g} s")
        return result[0]

    def _on_trade(self, trade: Trade) -> None:
        report = self._report(trade)
        if report is not None:
            self.on_order_report(report)

    def _report(self, trade: Trade) -> OrderReport | None:
        ref = trade.order.orderRef
        if not ref:
            return None
        status = trade.orderStatus
        error = self._order_errors.get(trade.order.orderId)
        # ib_async fires for an execution before IB's commission report and the orderStatus
        # with the new average arrive: a commission is reported once IB sent one, and the
        # average comes from the executions themselves until IB's own arrives (never 0).
        charged = [f for f in trade.fills if f.commissionReport.execId]
        commission = (
            sum((Decimal(str(f.commissionReport.commission)) for f in charged), Decimal(0))
            if charged else None
        )  # fmt: skip
        # IB re-sends only the current day's executions to a new session, so the session's
        # fills undercount an order that also filled on an earlier day; IB's own cumulative
        # count (orderStatus, or a completed order's filledQuantity) does not, but lags an
        # execution that has just arrived. The larger of the two is the truth.
        ib_filled = max(_decimal(status.filled) or Decimal(0),
                        _decimal(trade.order.filledQuantity) or Decimal(0))  # fmt: skip
        filled = max(_quantity(trade.filled()), ib_filled)
        total = _quantity(trade.order.totalQuantity)
        remaining = max(total - filled, Decimal(0))
        ib_remaining = _decimal(status.remaining)
        if ib_remaining is not None and (status.filled or status.remaining):
            # ib_async's OrderStatus starts at 0 filled and 0 remaining until IB sends one;
            # IB's remaining may be smaller (a canceled remnant), never larger than the truth.
            remaining = min(remaining, ib_remaining)
        average = _decimal(status.avgFillPrice) if filled else None
        if filled and (not average or ib_filled < filled):
            average = _average_price(trade)  # the executions are ahead of IB's orderStatus
        return OrderReport(
            client_order_id=ref,
            broker_order_id=int(trade.order.orderId),
            perm_id=int(trade.order.permId),
            broker_status=status.status,
            filled=filled,
            remaining=remaining,
            avg_fill_price=average,
            error_code=error[0] if error else None,
            error_text=error[1] if error else None,
            commission=_decimal(commission) if commission is not None else None,
        )

    def _require(self) -> IB:
        if self._ib is None or not self._ib.isConnected():
            raise BrokerError("not connected to the gateway")
        return self._ib

    # ------------------------------------------------------------------ heartbeat

    def probe_now(self) -> None:
        """Make the heartbeat probe at once (after a time jump, e.g. laptop resume)."""
        self._poke.set()

    async def run_heartbeat(self) -> None:
        """Probe every interval; HEARTBEAT_MISSES misses in a row post heartbeat_lost.

        After a miss the next probe goes out at once rather than after another interval,
        so with the defaults (3 s, 3 s, 2) a hang is seen within 3 + 3 + 3 = 9 s.
        """
        while True:
            if not self.heartbeat.misses:
                await self._sleep_or_poke(self.heartbeat_interval)
            if not self.connected:
                return
            latency = await self._probe()
            now = self._clock.now()
            if latency is not None:
                self.heartbeat = HeartbeatStatus(last_ok=now, latency_ms=latency, misses=0)
                if self.heartbeat_lost:
                    self.heartbeat_lost = False
                    logger.info("heartbeat answered again ({:.1f} ms)", latency)
                self._watch.notify()
                continue
            self.heartbeat.misses += 1
            logger.warning(
                "heartbeat missed ({} of {}): the gateway did not answer within {:g} s",
                self.heartbeat.misses, self.heartbeat_misses, self.heartbeat_timeout,
            )  # fmt: skip
            if self.heartbeat.misses >= self.heartbeat_misses and not self.heartbeat_lost:
                self.heartbeat_lost = True
                self._watch.notify()
                self._post(
                    Event(Trigger.HEARTBEAT_LOST, f"{self.heartbeat.misses} heartbeats missed")
                )

    async def _sleep_or_poke(self, seconds: float) -> None:
        async with anyio.create_task_group() as tg:

            async def poked() -> None:
                await self._poke.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(poked)
            await self._clock.sleep(seconds)
            tg.cancel_scope.cancel()
        if self._poke.is_set():
            self._poke = anyio.Event()

    async def _probe(self) -> float | None:
        """reqCurrentTime bounded by a Clock timeout; any inbound traffic also proves life."""
        ib = self._ib
        if ib is None:
            return None
        seen_before = ib.wrapper.lastTime
        started = time.perf_counter()
        answered = False
        async with anyio.create_task_group() as tg:

            async def deadline() -> None:
                await self._clock.sleep(self.heartbeat_timeout)
                tg.cancel_scope.cancel()

            tg.start_soon(deadline)
            try:
                await ib.reqCurrentTimeAsync()
                answered = True
            except ConnectionError:
                pass
            tg.cancel_scope.cancel()
        if answered or (ib.isConnected() and ib.wrapper.lastTime != seen_before):
            return (time.perf_counter() - started) * 1000
        return None

    # ------------------------------------------------------------------ ib_async callbacks

    def _on_disconnected(self) -> None:
        if self._leaving:
            return
        self.info = None
        self._watch.notify()
        logger.warning("the gateway closed the API connection")
        self._post(Event(Trigger.DISCONNECTED, "the gateway closed the API connection"))

    def _on_error(self, req_id: int, code: int, message: str, contract: Any) -> None:
        kind = classify(code)
        self.on_ib_error(code, message, req_id)
        if req_id > 0 and self._ib is not None:
            trade = next((t for t in self._ib.trades() if t.order.orderId == req_id), None)
            if trade is not None and code != 202:  # 202 is the echo of a cancel
                self._order_errors[req_id] = (code, message)
                self._on_trade(trade)
        before = self.market_data
        self.broken_farms = next_farm_state(self.broken_farms, code, farm_from_message(message))
        if self.market_data != before:
            logger.warning("market data {} (IB {} {})", self.market_data, code, message)
        if kind is ErrorClass.CONNECTIVITY_LOST:
            self.connectivity_lost = True
            self._watch.notify()
            logger.warning("IB {}: {} (orders blocked until restored)", code, message)
            self._post(Event(Trigger.CONNECTIVITY_LOST, f"IB {code}: {message}"))
        elif kind in (
            ErrorClass.CONNECTIVITY_RESTORED_DATA_LOST,
            ErrorClass.CONNECTIVITY_RESTORED_DATA_KEPT,
        ):
            self.connectivity_lost = False
            self._watch.notify()
            logger.info("IB {}: {}", code, message)
        elif kind in (ErrorClass.INFORMATIONAL, ErrorClass.DATA_DEGRADED, ErrorClass.DATA_RESTORED):
            logger.debug("IB {} (id {}): {}", code, req_id, message)
        else:
            logger.warning("IB {} {} (id {}): {}", code, kind.name.lower(), req_id, message)


# ib_async logs each order message at INFO with an f-string of the whole object, built even
# though logs.py never shows library lines below WARNING: a Trade's repr (its Order walks 150
# fields) takes about 100 µs, and an order brings seven or more of them, most decoded before
# its 201 can go out. These name what identifies the object instead (a few µs).
BRIEF_REPRS: dict[type, tuple[str, ...]] = {
    Trade: ("order.orderId", "order.permId", "order.orderRef", "contract.symbol",
            "order.action", "order.totalQuantity", "orderStatus.status", "orderStatus.filled"),
    Fill: ("contract.symbol", "execution.execId", "execution.orderId", "execution.shares",
           "execution.price"),
    Execution: ("execId", "orderId", "permId", "shares", "price"),
    CommissionReport: ("execId", "commission", "currency"),
    PortfolioItem: ("account", "contract.symbol", "position", "marketPrice"),
    Position: ("account", "contract.symbol", "position", "avgCost"),
}  # fmt: skip


def _brief_repr(paths: tuple[str, ...]) -> Callable[[object], str]:
    def brief(self: object) -> str:
        parts = []
        for path in paths:
            value: object = self
            for name in path.split("."):
                value = getattr(value, name, None)
            parts.append(f"{path.rpartition('.')[2]}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    return brief


def use_brief_reprs() -> None:
    """Give ib_async's order objects the reprs of BRIEF_REPRS (idempotent)."""
    for cls, paths in BRIEF_REPRS.items():
        setattr(cls, "__repr__", _brief_repr(paths))  # noqa: B010 - mypy refuses assigning a method


def _paced(ib: IB) -> MessagePacer:
    """Put a MessagePacer between the session's socket and ib_async's decoder.

    `_onSocketHasData` and `_onSocketDisconnected` are ib_async's own handlers of its
    connection's two events; they are private, ib_async is pinned in uv.lock, and
    tests/integration/test_broker_reports.py fails at once if they go away. On a close, what
    the pacer still holds is decoded before ib_async hears of the close, as without it.
    """
    client = ib.client
    connection = client.conn
    pacer = MessagePacer(client._onSocketHasData, asyncio.get_running_loop().call_soon)

    def closed(message: str) -> None:
        pacer.flush()
        client._onSocketDisconnected(message)  # type: ignore[no-untyped-call]

    connection.hasData -= client._onSocketHasData
    connection.hasData.connect(pacer.data_received, keep_ref=True)  # no weak reference
    connection.disconnected -= client._onSocketDisconnected
    connection.disconnected += closed
    return pacer


def _connect_failure(host: str, port: int, exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing listens on {host}:{port} yet"
    if isinstance(exc, TimeoutError):
        return f"{host}:{port} accepted the connection but the API handshake did not complete"
    return f"connecting to {host}:{port} failed: {exc or type(exc).__name__}"


def _contract(spec: OrderSpec) -> Stock:
    contract = Stock(spec.symbol, "SMART", "USD")
    contract.conId = spec.con_id
    return contract


def _ib_order(spec: OrderSpec) -> Order:
    action = spec.side.upper()
    qty = float(spec.qty)
    order: Order
    if spec.type == "market":
        order = MarketOrder(action, qty)
    elif spec.type == "limit":
        order = LimitOrder(action, qty, float(spec.limit_price or 0))
    elif spec.type == "stop":
        order = StopOrder(action, qty, float(spec.stop_price or 0))
    else:
        order = StopLimitOrder(
            action, qty, float(spec.limit_price or 0), float(spec.stop_price or 0)
        )
    order.tif = spec.time_in_force.upper()
    order.outsideRth = spec.extended_hours
    order.orderRef = spec.client_order_id
    order.account = spec.account
    return order


def _settle(trades: list[Trade], completed: list[Trade]) -> None:
    """Give this session's trades the end IB reports in its completed orders.

    ib_async keeps the Trade it already holds for a permId and drops IB's completed order, so
    an order that ended while IB's messages did not reach us would stay working here. This is
    what the orderStatus IB never sent would have done; the average is left to the executions
    (a completed order carries none, and the one held may predate the missed fills).
    """
    ours = {trade.order.permId: trade for trade in trades if trade.order.permId}
    for done in completed:
        trade = ours.get(done.order.permId)
        if trade is None or trade is done or trade.isDone() or not done.isDone():
            continue
        status = trade.orderStatus
        status.status = done.orderStatus.status
        filled = _decimal(done.order.filledQuantity)
        if filled is not None:
            status.filled = float(filled)
            status.remaining = max(float(trade.order.totalQuantity) - status.filled, 0.0)
            status.avgFillPrice = 0.0
        logger.info("order {} ({}) ended while IB's messages did not reach us: {}",
                    trade.order.orderId, trade.order.orderRef, status.status)  # fmt: skip


def _average_price(trade: Trade) -> Decimal | None:
    """The share-weighted average price of the trade's executions."""
    shares = sum(f.execution.shares for f in trade.fills)
    if not shares:
        return None
    return _decimal(sum(f.execution.price * f.execution.shares for f in trade.fills) / shares)


def _decimal(value: Any) -> Decimal | None:
    """IB's numbers as Decimal; its 'unset' sentinels and NaN as None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(number) or math.isinf(number) or number >= 1.7e308:
        return None
    return _quantity(number)


def _quantity(value: float) -> Decimal:
    """A number IB sent as a float, without a spurious '.0' (and never in exponent form)."""
    number = Decimal(str(value))
    return number.quantize(Decimal(1)) if number == number.to_integral_value() else number
