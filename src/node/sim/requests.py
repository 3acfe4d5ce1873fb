"""Parsing of incoming requests whose layout is more than a few fixed fields."""

from __future__ import annotations

from dataclasses import dataclass

from node.sim.engine import OrderRequest
from node.sim.wire import UNSET_DOUBLE, parse_bool, parse_float, parse_int


class RequestError(Exception):
    """A request the simulator cannot read; answered with error 320."""


class Cursor:
    """Reads fields one after another, raising RequestError when they run out."""

    def __init__(self, fields: list[str], start: int = 1) -> None:
        self.fields = fields
        self.index = start

    def text(self) -> str:
        if self.index >= len(self.fields):
            raise RequestError(f"message {self.fields[0]} ended after {len(self.fields)} fields")
        value = self.fields[self.index]
        self.index += 1
        return value

    def integer(self, default: int = 0) -> int:
        raw = self.text()
        try:
            return parse_int(raw, default)
        except ValueError as exc:
            raise RequestError(f"field {self.index - 1} is not a number: {raw!r}") from exc

    def number(self) -> float | None:
        raw = self.text()
        try:
            return parse_float(raw)
        except ValueError as exc:
            raise RequestError(f"field {self.index - 1} is not a number: {raw!r}") from exc

    def flag(self) -> bool:
        raw = self.text()
        try:
            return parse_bool(raw)
        except ValueError as exc:
            raise RequestError(f"field {self.index - 1} is not a flag: {raw!r}") from exc

    def skip(self, count: int) -> None:
        for _ in range(count):
            self.text()


@dataclass(frozen=True)
class ContractRef:
    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    primary_exchange: str
    currency: str


def read_contract(cursor: Cursor) -> ContractRef:
    """The 12-field contract block clients send in requests."""
    con_id = cursor.integer()
    symbol = cursor.text()
    sec_type = cursor.text()
    cursor.skip(4)  # lastTradeDateOrContractMonth, strike, right, multiplier
    exchange = cursor.text()
    primary = cursor.text()
    currency = cursor.text()
    cursor.skip(2)  # localSymbol, tradingClass
    return ContractRef(con_id, symbol, sec_type, exchange, primary, currency)


def parse_place_order(fields: list[str], version: int, client_id: int) -> OrderRequest:
    """Read a placeOrder (tws-protocol.md §3.8) as far as the simulator acts on it."""
    c = Cursor(fields)
    order_id = c.integer()
    contract = read_contract(c)
    c.skip(2)  # secIdType, secId
    action = c.text().upper()
    quantity = c.number() or 0.0
    order_type = c.text().upper()
    lmt_price = c.number()
    aux_price = c.number()
    tif = c.text().upper() or "DAY"
    c.skip(1)  # ocaGroup
    account = c.text()
    c.skip(2)  # openClose, origin
    order_ref = c.text()
    c.skip(6)  # transmit, parentId, blockOrder, sweepToFill, displaySize, triggerMethod
    outside_rth = c.flag()
    c.skip(1)  # hidden
    request = OrderRequest(
        client_id=client_id,
        order_id=order_id,
        symbol=contract.symbol,
        con_id=contract.con_id,
        sec_type=contract.sec_type.upper(),
        currency=contract.currency.upper(),
        exchange=contract.exchange,
        action=action,
        total_quantity=quantity,
        order_type=order_type,
        lmt_price=lmt_price,
        aux_price=aux_price,
        tif=tif,
        account=account,
        order_ref=order_ref,
        outside_rth=outside_rth,
    )
    if request.sec_type == "BAG":
        request.unsupported = "combo (BAG) order"
        return request
    c.skip(3)  # sharesAllocation, discretionaryAmt, goodAfterTime
    request.good_till_date = c.text()
    c.skip(3 if version >= 177 else 4)  # faGroup, faMethod, faPercentage, (faProfile)
    # modelCode .. deltaNeutralOrderType: 22 fields, then deltaNeutralAuxPrice
    c.skip(22)
    dn_order_type = c.text()
    c.skip(1)
    if dn_order_type:
        c.skip(8)
    c.skip(6)  # continuousUpdate .. scaleSubsLevelSize
    scale_increment = c.number()
    if scale_increment is not None and 0 < scale_increment < UNSET_DOUBLE:
        c.skip(7)
    c.skip(3)  # scaleTable, activeStartTime, activeStopTime
    if c.text():  # hedgeType
        c.skip(1)
        request.unsupported = "hedge order"
    c.skip(4)  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld
    if c.flag():  # deltaNeutralContract
        c.skip(3)
    if c.text():  # algoStrategy
        c.skip(2 * c.integer())
        request.unsupported = request.unsupported or "algo order"
    c.skip(1)  # algoId
    request.what_if = c.flag()
    c.skip(4)  # orderMiscOptions, solicited, randomizeSize, randomizePrice
    if order_type in ("PEG BENCH", "PEGBENCH"):
        return request  # refused as an unsupported order type before conditions matter
    if c.integer() > 0:
        request.unsupported = request.unsupported or "conditional order"
    return request
