"""Outgoing TWS messages, laid out field by field for server versions 157 and 178.

Field orders follow tws-protocol.md §3; the differences between the two layouts
are the ``version >= ...`` branches (tws-protocol.md §3.18).
"""

from __future__ import annotations

import time

from node.sim.engine import Execution, SimOrder, WhatIf
from node.sim.market import Quote
from node.sim.universe import Instrument
from node.sim.wire import UNSET_DOUBLE, UNSET_INTEGER, Field

UD = UNSET_DOUBLE
UI = UNSET_INTEGER

# Incoming message ids.
IN_REQ_MKT_DATA = 1
IN_CANCEL_MKT_DATA = 2
IN_PLACE_ORDER = 3
IN_CANCEL_ORDER = 4
IN_REQ_OPEN_ORDERS = 5
IN_REQ_ACCOUNT_UPDATES = 6
IN_REQ_EXECUTIONS = 7
IN_REQ_IDS = 8
IN_REQ_CONTRACT_DETAILS = 9
IN_REQ_AUTO_OPEN_ORDERS = 15
IN_REQ_ALL_OPEN_ORDERS = 16
IN_REQ_MANAGED_ACCTS = 17
IN_REQ_HISTORICAL_DATA = 20
IN_CANCEL_HISTORICAL_DATA = 25
IN_REQ_CURRENT_TIME = 49
IN_REQ_GLOBAL_CANCEL = 58
IN_REQ_MARKET_DATA_TYPE = 59
IN_REQ_POSITIONS = 61
IN_REQ_ACCOUNT_SUMMARY = 62
IN_CANCEL_ACCOUNT_SUMMARY = 63
IN_CANCEL_POSITIONS = 64
IN_START_API = 71
IN_REQ_POSITIONS_MULTI = 74
IN_CANCEL_POSITIONS_MULTI = 75
IN_REQ_ACCOUNT_UPDATES_MULTI = 76
IN_CANCEL_ACCOUNT_UPDATES_MULTI = 77
IN_REQ_PNL = 92
IN_CANCEL_PNL = 93
IN_REQ_PNL_SINGLE = 94
IN_CANCEL_PNL_SINGLE = 95
IN_REQ_COMPLETED_ORDERS = 99

# Tick types (tws-protocol.md §3.14).
TICK_BID_SIZE, TICK_BID, TICK_ASK, TICK_ASK_SIZE = 0, 1, 2, 3
TICK_LAST, TICK_LAST_SIZE, TICK_HIGH, TICK_LOW, TICK_VOLUME, TICK_CLOSE = 4, 5, 6, 7, 8, 9
TICK_OPEN, TICK_LAST_TIMESTAMP = 14, 45
DELAYED_OFFSET = {
    TICK_BID: 66,
    TICK_ASK: 67,
    TICK_LAST: 68,
    TICK_BID_SIZE: 69,
    TICK_ASK_SIZE: 70,
    TICK_LAST_SIZE: 71,
    TICK_HIGH: 72,
    TICK_LOW: 73,
    TICK_VOLUME: 74,
    TICK_CLOSE: 75,
    TICK_OPEN: 76,
    TICK_LAST_TIMESTAMP: 88,
}

Message = list[Field]


def quantity(value: float) -> Field:
    """Whole quantities as digits (ibapi 9.81 reads several sizes with int())."""
    return int(value) if float(value).is_integer() else value


def price(value: float | None) -> float:
    return UD if value is None else value


def error(version: int, req_id: int, code: int, text: str) -> Message:
    fields: Message = [4, 2, req_id, code, text]
    if version >= 166:
        fields.append("")
    return fields


def version_reply(version: int) -> Message:
    return [version, time.strftime("%Y%m%d %H:%M:%S", time.gmtime()) + " UTC"]


def managed_accounts(account: str) -> Message:
    return [15, 1, account]


def next_valid_id(order_id: int) -> Message:
    return [9, 1, order_id]


def current_time(epoch: int) -> Message:
    return [49, 1, epoch]


def _contract11(inst: Instrument, exchange: str) -> Message:
    # conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange,
    # currency, localSymbol, tradingClass
    return [
        inst.con_id,
        inst.symbol,
        "STK",
        "",
        0,
        "",
        "",
        exchange,
        "USD",
        inst.symbol,
        _trading_class(inst),
    ]


def _trading_class(inst: Instrument) -> str:
    return "NMS" if inst.primary_exchange in ("NASDAQ", "NYSE") else inst.symbol


def position(account: str, inst: Instrument, qty: float, avg_cost: float) -> Message:
    return [
        61,
        3,
        account,
        inst.con_id,
        inst.symbol,
        "STK",
        "",
        0,
        "",
        "",
        "SMART",
        "USD",
        inst.symbol,
        _trading_class(inst),
        quantity(qty),
        avg_cost,
    ]


def position_end() -> Message:
    return [62, 1]


def account_value(key: str, value: str, currency: str, account: str) -> Message:
    return [6, 2, key, value, currency, account]


def portfolio_value(
    inst: Instrument,
    qty: float,
    market_price: float,
    avg_cost: float,
    realized: float,
    account: str,
) -> Message:
    market_value = qty * market_price
    unrealized = (market_price - avg_cost) * qty
    return [
        7,
        8,
        inst.con_id,
        inst.symbol,
        "STK",
        "",
        0,
        "",
        "",
        inst.primary_exchange,
        "USD",
        inst.symbol,
        _trading_class(inst),
        quantity(qty),
        market_price,
        round(market_value, 2),
        round(avg_cost, 6),
        round(unrealized, 2),
        round(realized, 2),
        account,
    ]


def account_time(epoch: float) -> Message:
    return [8, 1, time.strftime("%H:%M", time.gmtime(epoch))]


def account_download_end(account: str) -> Message:
    return [54, 1, account]


def account_update_multi(
    req_id: int, account: str, model: str, key: str, value: str, currency: str
) -> Message:
    return [73, 1, req_id, account, model, key, value, currency]


def account_update_multi_end(req_id: int) -> Message:
    return [74, 1, req_id]


def position_multi(
    req_id: int, account: str, inst: Instrument, qty: float, avg_cost: float, model: str
) -> Message:
    return [
        71,
        1,
        req_id,
        account,
        inst.con_id,
        inst.symbol,
        "STK",
        "",
        0,
        "",
        "",
        "SMART",
        "USD",
        inst.symbol,
        _trading_class(inst),
        quantity(qty),
        avg_cost,
        model,
    ]


def position_multi_end(req_id: int) -> Message:
    return [72, 1, req_id]


def account_summary(req_id: int, account: str, tag: str, value: str, currency: str) -> Message:
    return [63, 1, req_id, account, tag, value, currency]


def account_summary_end(req_id: int) -> Message:
    return [64, 1, req_id]


def pnl(req_id: int, daily: float, unrealized: float, realized: float) -> Message:
    return [94, req_id, round(daily, 2), round(unrealized, 2), round(realized, 2)]


def pnl_single(
    req_id: int, pos: float, daily: float, unrealized: float, realized: float, value: float
) -> Message:
    return [
        95,
        req_id,
        quantity(pos),
        round(daily, 2),
        round(unrealized, 2),
        round(realized, 2),
        round(value, 2),
    ]


def order_status(order: SimOrder) -> Message:
    return [
        3,
        order.order_id,
        order.status,
        quantity(order.filled),
        quantity(order.remaining),
        round(order.avg_fill_price, 6),
        order.perm_id,
        0,
        order.last_fill_price,
        order.client_id,
        order.why_held,
        0,
    ]


def _order_state_tail(status: str, what_if: WhatIf | None) -> Message:
    if what_if is None:
        margins: Message = [""] * 9
        commission: Message = [UD, UD, UD, ""]
    else:
        w = what_if

        def money(value: float) -> str:
            return f"{value:.2f}"

        margins = [
            money(w.init_margin_before),
            money(w.maint_margin_before),
            money(w.equity_before),
            money(w.init_margin_change),
            money(w.maint_margin_change),
            money(w.equity_change),
            money(w.init_margin_before + w.init_margin_change),
            money(w.maint_margin_before + w.maint_margin_change),
            money(w.equity_before + w.equity_change),
        ]
        commission = [w.commission, w.commission, w.commission, "USD"]
    return [status, *margins, *commission, ""]


def open_order(
    version: int, inst: Instrument, order: SimOrder, *, what_if: WhatIf | None = None
) -> Message:
    fields: Message = [5, order.order_id, *_contract11(inst, order.exchange)]
    fields += [
        order.action,
        quantity(order.total_quantity),
        order.order_type,
        price(order.lmt_price),
        price(order.aux_price),
        order.tif,
        "",
        order.account,
        "",
        0,
        order.order_ref,
        order.client_id,
        order.perm_id,
        order.outside_rth,
        0,
        0,
        "",
        "",
        "",
        "",
        "",
    ]
    if version < 177:
        fields.append("")  # faProfile
    fields += [
        "",
        order.good_till_date,
        "",
        UD,
        "",
        0,
        "",
        -1,
        0,
        UD,
        UD,
        UD,
        UD,
        UD,
        0,
        0,
        0,
        0,
        UI,
        3,
        0,
        0,
        UD,
        0,
        0,
        UD,
        0,
        "",
        UD,
        0,
        0,
        UD,
        UD,
        UD,
        UI,
        "",
        0,
        0,
        0,
        UI,
        UI,
        UD,
        "",
        0,
        "",
        "",
        0,
        0,
        "",
        0,
        what_if is not None,
    ]
    fields += _order_state_tail(order.status, what_if)
    fields += [0, 0, 0, "", UD, UD, UD, UD, UD, UD, 0, "", "", "", UD, 0, 0, 0, 0]
    if version >= 178:
        fields += [UI, UI, 0, UI, UI, UD, UD, UD]
    return fields


def open_order_end() -> Message:
    return [53, 1]


def completed_order(version: int, inst: Instrument, order: SimOrder) -> Message:
    fields: Message = [101, *_contract11(inst, order.exchange)]
    fields += [
        order.action,
        quantity(order.total_quantity),
        order.order_type,
        price(order.lmt_price),
        price(order.aux_price),
        order.tif,
        "",
        order.account,
        "",
        0,
        order.order_ref,
        order.perm_id,
        order.outside_rth,
        0,
        0,
        "",
        "",
        "",
        "",
    ]
    if version < 177:
        fields.append("")  # faProfile
    fields += [
        "",
        order.good_till_date,
        "",
        UD,
        "",
        0,
        "",
        -1,
        UD,
        UD,
        UD,
        UD,
        UD,
        0,
        0,
        0,
        UI,
        3,
        0,
        UD,
        0,
        "",
        UD,
        0,
        0,
        UD,
        UD,
        "",
        0,
        0,
        0,
        UI,
        UI,
        UD,
        "",
        "",
        "",
        0,
        0,
        "",
        0,
        order.status,
        0,
        0,
        0,
        UD,
        UD,
        UD,
        0,
        0,
        "",
        quantity(order.filled),
        0,
        0,
        "",
        0,
        0,
        UI,
        order.completed_time,
        order.completed_status,
    ]
    if version >= 178:
        fields += [UI, UI, UD, UD, UD]
    return fields


def completed_orders_end() -> Message:
    return [102]


def exec_details(version: int, req_id: int, inst: Instrument, ex: Execution) -> Message:
    fields: Message = [11, req_id, ex.order_id, *_contract11(inst, ex.exchange)]
    fields += [
        ex.exec_id,
        ex.time_text,
        ex.account,
        ex.exchange,
        ex.side,
        quantity(ex.shares),
        ex.price,
        ex.perm_id,
        ex.client_id,
        0,
        quantity(ex.cum_qty),
        ex.avg_price,
        ex.order_ref,
        "",
        "",
        "",
        1,
    ]
    if version >= 178:
        fields.append(0)
    return fields


def exec_details_end(req_id: int) -> Message:
    return [55, 1, req_id]


def commission_report(ex: Execution) -> Message:
    realized = UD if ex.realized_pnl is None else round(ex.realized_pnl, 2)
    return [59, 1, ex.exec_id, ex.commission, "USD", realized, UD, ""]


def contract_data(version: int, req_id: int, inst: Instrument, exchange: str) -> Message:
    fields: Message = [10, 8, req_id] if version < 164 else [10, req_id]
    fields += [
        inst.symbol,
        "STK",
        "",
        0,
        "",
        exchange,
        "USD",
        inst.symbol,
        _trading_class(inst),
        _trading_class(inst),
        inst.con_id,
        0.01,
    ]
    if version < 164:
        fields.append(1)  # mdSizeMultiplier
    today = time.strftime("%Y%m%d", time.gmtime())
    fields += [
        "",
        "ACTIVETIM,AD,ADJUST,ALERT,ALLOC,AVGCOST,BASKET,DAY,GTC,IOC,LMT,MKT,OPG,STP,STPLMT",
        inst.valid_exchanges,
        1,
        0,
        inst.long_name,
        inst.primary_exchange,
        "",
        inst.industry,
        inst.category,
        "",
        "US/Eastern",
        f"{today}:0400-{today}:2000",
        f"{today}:0930-{today}:1600",
        "",
        "",
        0,  # secIdListCount
        1,  # aggGroup
        "",  # underSymbol
        "",  # underSecType
        "26,26",  # marketRuleIds
        "",  # realExpirationDate
        inst.stock_type,
    ]
    if version >= 164:
        fields += [1, 1, 100]
    return fields


def contract_data_end(req_id: int) -> Message:
    return [52, 1, req_id]


def market_data_type(req_id: int, data_type: int) -> Message:
    return [58, 1, req_id, data_type]


def tick_price(req_id: int, tick: int, value: float, size: float, delayed: bool) -> Message:
    tick = DELAYED_OFFSET[tick] if delayed else tick
    return [1, 6, req_id, tick, value, quantity(size), 0]


def tick_size(req_id: int, tick: int, size: float, delayed: bool) -> Message:
    tick = DELAYED_OFFSET[tick] if delayed else tick
    return [2, 6, req_id, tick, quantity(size)]


def tick_string(req_id: int, tick: int, value: str, delayed: bool) -> Message:
    tick = DELAYED_OFFSET[tick] if delayed else tick
    return [46, 6, req_id, tick, value]


def tick_snapshot_end(req_id: int) -> Message:
    return [57, 1, req_id]


def quote_ticks(req_id: int, quote: Quote, delayed: bool, *, full: bool) -> list[Message]:
    """The ticks of one quote: the touch and last, plus the day's range and volume when full."""
    ticks = [
        tick_price(req_id, TICK_BID, quote.bid, quote.bid_size, delayed),
        tick_price(req_id, TICK_ASK, quote.ask, quote.ask_size, delayed),
        tick_price(req_id, TICK_LAST, quote.last, quote.last_size, delayed),
        tick_size(req_id, TICK_VOLUME, quote.volume, delayed),
        tick_string(req_id, TICK_LAST_TIMESTAMP, str(int(time.time())), delayed),
    ]
    if full:
        ticks += [
            tick_price(req_id, TICK_HIGH, quote.high, 0, delayed),
            tick_price(req_id, TICK_LOW, quote.low, 0, delayed),
            tick_price(req_id, TICK_CLOSE, quote.close, 0, delayed),
            tick_price(req_id, TICK_OPEN, quote.open, 0, delayed),
        ]
    return ticks


def historical_data(
    req_id: int, bars: list[tuple[str, float, float, float, float, int]], start: str, end: str
) -> Message:
    fields: Message = [17, req_id, start, end, len(bars)]
    for date, o, h, low, c, volume in bars:
        fields += [date, o, h, low, c, volume, round((o + h + low + c) / 4, 4), 1]
    return fields
