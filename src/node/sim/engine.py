"""The order engine: validates, rests, matches and fills orders against the price model.

It knows nothing of sockets. Every change is committed (persisted, then published
to the listener as events) so clients are only told what the state file already
holds, as IB's servers would.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from node.sim.account import Account
from node.sim.market import Market
from node.sim.universe import lookup

SUPPORTED_ORDER_TYPES = ("MKT", "LMT", "STP", "STP LMT")
SUPPORTED_TIFS = ("DAY", "GTC", "IOC", "OPG")
OPEN_STATUSES = ("PendingSubmit", "PreSubmitted", "Submitted", "PendingCancel")

COMMISSION_PER_SHARE = 0.005
COMMISSION_MIN = 1.0
COMMISSION_MAX_RATE = 0.01


def commission_for(quantity: float, price: float) -> float:
    """IB's fixed pricing for US stocks: 0.005/share, at least 1.00, at most 1% of value."""
    raw = abs(quantity) * COMMISSION_PER_SHARE
    return round(min(max(raw, COMMISSION_MIN), abs(quantity) * price * COMMISSION_MAX_RATE), 4)


def ib_time(epoch: float) -> str:
    return time.strftime("%Y%m%d %H:%M:%S", time.gmtime(epoch)) + " UTC"


@dataclass
class OrderRequest:
    """The parts of a placeOrder the simulator acts on."""

    client_id: int
    order_id: int
    symbol: str
    con_id: int
    sec_type: str
    currency: str
    exchange: str
    action: str
    total_quantity: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str
    account: str
    order_ref: str
    outside_rth: bool = False
    good_till_date: str = ""
    what_if: bool = False
    unsupported: str = ""  # a feature the simulator refuses (combo legs, algos, conditions)


@dataclass
class SimOrder:
    client_id: int
    order_id: int
    perm_id: int
    symbol: str
    con_id: int
    exchange: str
    action: str
    total_quantity: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str
    account: str
    order_ref: str
    outside_rth: bool
    good_till_date: str
    status: str = "PreSubmitted"
    filled: float = 0.0
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    triggered: bool = False
    why_held: str = ""
    submitted_at: float = 0.0
    completed_time: str = ""
    completed_status: str = ""

    @property
    def remaining(self) -> float:
        return max(0.0, self.total_quantity - self.filled)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def is_buy(self) -> bool:
        return self.action == "BUY"


@dataclass
class Execution:
    exec_id: str
    client_id: int
    order_id: int
    perm_id: int
    symbol: str
    con_id: int
    exchange: str
    account: str
    side: str  # BOT or SLD
    shares: float
    price: float
    cum_qty: float
    avg_price: float
    order_ref: str
    time: float
    commission: float
    realized_pnl: float | None

    @property
    def time_text(self) -> str:
        return ib_time(self.time)


@dataclass
class WhatIf:
    init_margin_before: float
    maint_margin_before: float
    equity_before: float
    init_margin_change: float
    maint_margin_change: float
    equity_change: float
    commission: float


# Events the engine publishes, in the order clients must see them.
@dataclass(frozen=True)
class OrderChanged:
    order: SimOrder


@dataclass(frozen=True)
class OrderFilled:
    order: SimOrder
    execution: Execution


@dataclass(frozen=True)
class OrderError:
    client_id: int
    order_id: int
    code: int
    text: str


@dataclass(frozen=True)
class AccountChanged:
    symbols: tuple[str, ...]


Event = OrderChanged | OrderFilled | OrderError | AccountChanged

# Makes one commit durable before its events are published: called with the commit's delta
# (see _delta) and a way to take a whole snapshot, should the store rewrite its file.
Persist = Callable[[dict[str, Any], Callable[[], dict[str, Any]]], None]


@dataclass
class EngineSettings:
    partial_fill_size: float | None = None  # max shares per execution; None = fill at once


class OrderEngine:
    def __init__(
        self,
        account: Account,
        market: Market,
        listener: Callable[[Event], None] = lambda event: None,
        persist: Persist | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.account = account
        self.market = market
        self.listener = listener
        self.persist = persist
        self.clock = clock
        self.settings = EngineSettings()
        self.orders: dict[tuple[int, int], SimOrder] = {}
        self.executions: list[Execution] = []
        self.next_order_ids: dict[int, int] = {}
        self.next_perm_id = 1_000_001
        self.next_exec_seq = 1
        self._reject_next: tuple[int, str] | None = None

    # ------------------------------------------------------------------ commit

    def _commit(self, events: Iterable[Event]) -> None:
        events = list(events)
        if self.persist is not None and events:
            self.persist(self._delta(events), self.snapshot)
        for event in events:
            self.listener(event)

    def _delta(self, events: list[Event]) -> dict[str, Any]:
        """What this commit changed, found from its events (the store's format 2 delta).

        The orders the events name, as they are now; the executions they report; the
        account when it moved; the id counters always (a refusal moves them with no order).
        """
        keys: dict[tuple[int, int], None] = {}
        executions: list[dict[str, Any]] = []
        account_changed = False
        for event in events:
            if isinstance(event, OrderChanged | OrderFilled):
                keys[(event.order.client_id, event.order.order_id)] = None
            if isinstance(event, OrderFilled):
                executions.append(dict(vars(event.execution)))
            elif isinstance(event, AccountChanged):
                account_changed = True
        delta: dict[str, Any] = {
            "orders": [dict(vars(self.orders[key])) for key in keys if key in self.orders],
            "executions": executions,
            "next_order_ids": {str(k): v for k, v in self.next_order_ids.items()},
            "next_perm_id": self.next_perm_id,
            "next_exec_seq": self.next_exec_seq,
        }
        if account_changed:
            delta["account"] = self.account.to_dict()
        return delta

    # ------------------------------------------------------------------ ids

    def next_valid_id(self, client_id: int) -> int:
        return self.next_order_ids.get(client_id, 1)

    def _use_order_id(self, client_id: int, order_id: int) -> None:
        self.next_order_ids[client_id] = max(self.next_valid_id(client_id), order_id + 1)

    # ------------------------------------------------------------------ faults

    def reject_next(self, code: int, text: str) -> None:
        self._reject_next = (code, text)

    # ------------------------------------------------------------------ queries

    def open_orders(self, client_id: int | None = None) -> list[SimOrder]:
        return [
            o
            for o in self.orders.values()
            if o.is_open and (client_id is None or o.client_id == client_id)
        ]

    def completed_orders(self) -> list[SimOrder]:
        return [o for o in self.orders.values() if not o.is_open]

    def what_if(self, request: OrderRequest) -> WhatIf:
        quote = self.market.quote(request.symbol)
        price = request.lmt_price or (quote.ask if request.action == "BUY" else quote.bid)
        notional = request.total_quantity * price
        values = dict((k, v) for k, v, _ in self.account.values(self.market))
        init_before = float(values["InitMarginReq"])
        maint_before = float(values["MaintMarginReq"])
        equity = float(values["EquityWithLoanValue"])
        commission = commission_for(request.total_quantity, price)
        return WhatIf(
            init_margin_before=init_before,
            maint_margin_before=maint_before,
            equity_before=equity,
            init_margin_change=notional * 0.25,
            maint_margin_change=notional * 0.25,
            equity_change=-commission,
            commission=commission,
        )

    # ------------------------------------------------------------------ commands

    def validate(self, request: OrderRequest) -> tuple[int, str] | None:
        """The error a real gateway sends for this request, or None when it is acceptable."""
        if lookup(request.symbol, request.con_id, request.sec_type, request.currency) is None:
            return 200, "No security definition has been found for the request"
        if request.unsupported:
            return 201, f"Order rejected - reason:{request.unsupported} is not supported"
        if request.order_type not in SUPPORTED_ORDER_TYPES:
            return 387, "Unsupported order type for this exchange and security type."
        if request.action not in ("BUY", "SELL", "SSHORT"):
            return 201, f"Order rejected - reason:Invalid action {request.action!r}"
        if request.tif not in SUPPORTED_TIFS:
            return 201, f"Order rejected - reason:Invalid time in force {request.tif!r}"
        if request.total_quantity <= 0:
            return 434, "The order size cannot be zero."
        if not float(request.total_quantity).is_integer():
            return 10243, "Fractional-sized order cannot be placed via API."
        if request.order_type in ("LMT", "STP LMT") and not (request.lmt_price or 0) > 0:
            return 201, "Order rejected - reason:A limit price is required for this order type"
        if request.order_type in ("STP", "STP LMT") and not (request.aux_price or 0) > 0:
            return 201, "Order rejected - reason:A stop price is required for this order type"
        if request.account and request.account != self.account.account_id:
            return 201, f"Order rejected - reason:Account {request.account} is not managed here"
        return None

    def place(self, request: OrderRequest) -> None:
        """A new order or, for the id of a live order of the same client, a modification."""
        key = (request.client_id, request.order_id)
        existing = self.orders.get(key)
        problem = self.validate(request)
        if problem is None and existing is not None and not existing.is_open:
            problem = (
                (104, "Cannot modify a filled order.")
                if existing.status == "Filled"
                else (103, "Duplicate order id")
            )
        if problem is None and existing is not None and existing.symbol != request.symbol:
            problem = (201, "Order rejected - reason:The contract of a live order cannot change")
        if problem is None and self._reject_next is not None:
            problem, self._reject_next = self._reject_next, None
        if problem is not None:
            self._refuse(request, existing, *problem)
            return
        if existing is not None:
            self._modify(existing, request)
        else:
            self._open(request)

    def _refuse(
        self, request: OrderRequest, existing: SimOrder | None, code: int, text: str
    ) -> None:
        self._use_order_id(request.client_id, request.order_id)
        if existing is not None or code == 200:
            # A bad modification leaves the live order alone; an unknown contract never
            # becomes an order at all.
            self._commit([OrderError(request.client_id, request.order_id, code, text)])
            return
        order = self._new_order(request)
        order.status = "Inactive"
        order.completed_time = ib_time(self.clock())
        order.completed_status = text
        self.orders[(order.client_id, order.order_id)] = order
        self._commit([OrderError(order.client_id, order.order_id, code, text), OrderChanged(order)])

    def _new_order(self, request: OrderRequest) -> SimOrder:
        instrument = lookup(request.symbol, request.con_id)
        assert instrument is not None
        perm_id = self.next_perm_id
        self.next_perm_id += 1
        return SimOrder(
            client_id=request.client_id,
            order_id=request.order_id,
            perm_id=perm_id,
            symbol=instrument.symbol,
            con_id=instrument.con_id,
            exchange=request.exchange or "SMART",
            action="SELL" if request.action == "SSHORT" else request.action,
            total_quantity=request.total_quantity,
            order_type=request.order_type,
            lmt_price=request.lmt_price,
            aux_price=request.aux_price,
            tif=request.tif,
            account=self.account.account_id,
            order_ref=request.order_ref,
            outside_rth=request.outside_rth,
            good_till_date=request.good_till_date,
            submitted_at=self.clock(),
        )

    def _open(self, request: OrderRequest) -> None:
        self._use_order_id(request.client_id, request.order_id)
        order = self._new_order(request)
        self.orders[(order.client_id, order.order_id)] = order
        events: list[Event] = [OrderChanged(_copy(order))]
        if not self._held(order):
            order.status = "Submitted"
            events.append(OrderChanged(_copy(order)))
        events += self._match(order, at_placement=True)
        self._commit(events)

    def _modify(self, order: SimOrder, request: OrderRequest) -> None:
        if request.total_quantity < order.filled:
            self._commit(
                [
                    OrderError(
                        order.client_id,
                        order.order_id,
                        201,
                        "Order rejected - reason:Quantity is below the filled size",
                    )
                ]
            )
            return
        order.total_quantity = request.total_quantity
        order.order_type = request.order_type
        order.lmt_price = request.lmt_price
        order.aux_price = request.aux_price
        order.tif = request.tif
        order.order_ref = request.order_ref or order.order_ref
        order.outside_rth = request.outside_rth
        order.status = "PreSubmitted" if self._held(order) else "Submitted"
        events: list[Event] = [OrderChanged(_copy(order))]
        events += self._match(order, at_placement=True)
        self._commit(events)

    def cancel(self, client_id: int, order_id: int) -> None:
        order = self.orders.get((client_id, order_id))
        if order is None:
            self._commit(
                [
                    OrderError(
                        client_id,
                        order_id,
                        10147,
                        f"OrderId {order_id} that needs to be cancelled is not found.",
                    )
                ]
            )
            return
        if not order.is_open:
            self._commit(
                [
                    OrderError(
                        client_id,
                        order_id,
                        10148,
                        f"OrderId {order_id} that needs to be cancelled cannot be cancelled, "
                        f"state: {order.status}.",
                    )
                ]
            )
            return
        self._commit(self._cancelled(order, "Order Canceled - reason:"))

    def global_cancel(self) -> None:
        events: list[Event] = []
        for order in self.open_orders():
            events += self._cancelled(order, "Order Canceled - reason:Global cancel")
        self._commit(events)

    def _cancelled(self, order: SimOrder, text: str) -> list[Event]:
        order.status = "Cancelled"
        order.completed_time = ib_time(self.clock())
        order.completed_status = f"Cancelled, filled {_qty_text(order.filled)}"
        return [OrderChanged(_copy(order)), OrderError(order.client_id, order.order_id, 202, text)]

    # ------------------------------------------------------------------ market

    def on_market(self, symbols: Iterable[str] | None = None) -> None:
        """Re-examine resting orders after prices moved."""
        wanted = set(symbols) if symbols is not None else None
        events: list[Event] = []
        for order in list(self.orders.values()):
            if order.is_open and (wanted is None or order.symbol in wanted):
                events += self._match(order, at_placement=False)
        self._commit(events)

    def open_auction(self) -> None:
        """Fill every OPG order at the current touch, as the opening auction would."""
        events: list[Event] = []
        for order in self.open_orders():
            if order.tif == "OPG":
                order.tif = "DAY"
                order.status = "Submitted"
                events.append(OrderChanged(_copy(order)))
                events += self._match(order, at_placement=True)
                if order.is_open:  # an OPG order that did not trade in the auction is done
                    events += self._cancelled(order, "Order Canceled - reason:Not filled at open")
        self._commit(events)

    def _held(self, order: SimOrder) -> bool:
        """IB holds OPG orders until the open and stop orders until triggered (PreSubmitted)."""
        return order.tif == "OPG" or (
            order.order_type in ("STP", "STP LMT") and not order.triggered
        )

    def _match(self, order: SimOrder, *, at_placement: bool) -> list[Event]:
        events: list[Event] = []
        if order.tif == "OPG":
            return events
        quote = self.market.quote(order.symbol)
        if order.order_type in ("STP", "STP LMT") and not order.triggered:
            stop = order.aux_price or 0.0
            if (order.is_buy and quote.last >= stop) or (not order.is_buy and quote.last <= stop):
                order.triggered = True
                order.status = "Submitted"
                events.append(OrderChanged(_copy(order)))
        if not self._held(order):
            price = self._executable_price(order)
            if price is not None:
                size = self.settings.partial_fill_size
                quantity = order.remaining if not size else min(order.remaining, size)
                events += self._fill(order, quantity, price)
        if order.tif == "IOC" and at_placement and order.is_open:
            events += self._cancelled(order, "Order Canceled - reason:IOC remainder")
        return events

    def _executable_price(self, order: SimOrder) -> float | None:
        quote = self.market.quote(order.symbol)
        touch = quote.ask if order.is_buy else quote.bid
        if order.order_type in ("MKT", "STP"):
            return touch
        limit = order.lmt_price or 0.0
        if (order.is_buy and touch <= limit) or (not order.is_buy and touch >= limit):
            return touch
        return None

    def _fill(self, order: SimOrder, quantity: float, price: float) -> list[Event]:
        now = self.clock()
        commission = commission_for(quantity, price)
        signed = quantity if order.is_buy else -quantity
        booked = self.account.apply_fill(order.symbol, order.con_id, signed, price, commission)
        order.avg_fill_price = (order.avg_fill_price * order.filled + price * quantity) / (
            order.filled + quantity
        )
        order.filled += quantity
        order.last_fill_price = price
        if order.remaining <= 0:
            order.status = "Filled"
            order.completed_time = ib_time(now)
            order.completed_status = f"Filled Size: {_qty_text(order.filled)}"
        execution = Execution(
            exec_id=f"0000{self.market.seed & 0xFFFF:04x}.{self.next_exec_seq:08x}.01.01",
            client_id=order.client_id,
            order_id=order.order_id,
            perm_id=order.perm_id,
            symbol=order.symbol,
            con_id=order.con_id,
            exchange=_execution_venue(order.symbol),
            account=order.account,
            side="BOT" if order.is_buy else "SLD",
            shares=quantity,
            price=price,
            cum_qty=order.filled,
            avg_price=round(order.avg_fill_price, 6),
            order_ref=order.order_ref,
            time=now,
            commission=commission,
            realized_pnl=booked.realized_pnl,
        )
        self.next_exec_seq += 1
        self.executions.append(execution)
        return [OrderFilled(_copy(order), execution), AccountChanged((order.symbol,))]

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        return {
            "account": self.account.to_dict(),
            # vars() rather than asdict(): both are flat, and asdict's deep copy dominated
            # the cost of every order once a few hundred were on file.
            "orders": [dict(vars(o)) for o in self.orders.values()],
            "executions": [dict(vars(e)) for e in self.executions],
            "next_order_ids": {str(k): v for k, v in self.next_order_ids.items()},
            "next_perm_id": self.next_perm_id,
            "next_exec_seq": self.next_exec_seq,
        }

    def restore(self, data: dict[str, Any]) -> None:
        self.account = Account.from_dict(data["account"])
        self.orders = {}
        for raw in data.get("orders", []):
            order = SimOrder(**raw)
            self.orders[(order.client_id, order.order_id)] = order
        self.executions = [Execution(**raw) for raw in data.get("executions", [])]
        self.next_order_ids = {int(k): int(v) for k, v in data.get("next_order_ids", {}).items()}
        self.next_perm_id = int(data.get("next_perm_id", self.next_perm_id))
        self.next_exec_seq = int(data.get("next_exec_seq", self.next_exec_seq))


def _copy(order: SimOrder) -> SimOrder:
    """Events carry a copy: a later change must not rewrite what an earlier event said."""
    return copy.copy(order)  # every field is immutable, so a shallow copy is a full one


def _qty_text(quantity: float) -> str:
    return str(int(quantity)) if float(quantity).is_integer() else str(quantity)


def _execution_venue(symbol: str) -> str:
    instrument = lookup(symbol)
    return instrument.primary_exchange if instrument is not None else "SMART"
