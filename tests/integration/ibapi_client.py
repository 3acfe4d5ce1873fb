"""Drive one TWS-API flow with IB's own ``ibapi`` 9.81 client and report it as JSON.

Standalone script (it must not import ``node``); the simulator tests run it in a
subprocess because ``EClient.connect()`` has no timeout and ibapi's reader runs in
threads that cannot be stopped from outside::

    python tests/integration/ibapi_client.py --host 127.0.0.1 --port P --client-id N \\
        FLOW [flow args]

Protocol of the script:

* It connects (``connect()`` runs in a helper thread so that a stalled handshake
  hits an internal deadline), starts ``EClient.run()`` in a daemon thread and waits
  for ``nextValidId`` + ``managedAccounts``.
* Barrier: it then asks ``reqCurrentTime`` and waits for the answer, so that every
  message the server sent right after startApi (farm notices) has been delivered.
* It prints ``READY`` on **stderr**. Flows that need the test to act print more
  lines there: ``STREAMING <reqId>`` (stream: first tick in), ``FIRST_FILL <orderId>``
  (market_order: first execution in, e.g. to drive partial fills) and
  ``WORKING <orderId>`` (limit_order --wait-fill: the order rests, move the price).
* It runs FLOW, prints exactly ONE JSON object on stdout, disconnects, exits.

The report always has: flow, client_id, connected, server_version, connection_time,
managed_accounts, next_valid_id, errors (every error(reqId, code, msg) as
{"id", "code", "msg"}), errors_after_ready, connection_closed, run_exception (a
traceback if ibapi's run() loop died), ibapi_log_errors (ibapi's own ERROR log
lines, e.g. "diff len fields and params" for a dropped message), callbacks (count
per callback) and result (flow specific, filled in even when a wait times out).
``--trace`` adds wire: [msgId, field count, fields] for every decoded message.

Exit codes: 0 = flow completed (for ``connect`` also when the server refused the
connection, ``"connected": false``); 3 = an internal deadline expired
(``"timeout": "<what>"``); 4 = the connection was closed/refused before the flow
could finish (``"closed_during": "<what>"``); 1 = bug in this script
(``harness_exception``); 2 = bad command line.

Every wait is on a ``threading.Condition`` with a deadline.  The only bounded
"nothing more arrives" wait is in ``whatif`` (no orderStatus may follow a what-if
order); it is marked where it happens.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

from ibapi.client import EClient
from ibapi.commission_report import CommissionReport
from ibapi.common import UNSET_DOUBLE, UNSET_INTEGER, TickAttrib
from ibapi.contract import Contract, ContractDetails
from ibapi.decoder import Decoder
from ibapi.execution import Execution, ExecutionFilter
from ibapi.order import Order
from ibapi.order_state import OrderState
from ibapi.wrapper import EWrapper

JSON = dict[str, Any]
Event = tuple[str, JSON]

FARM_NOTICES = frozenset({2104, 2106, 2158})
SUMMARY_TAGS = "AccountType,NetLiquidation,TotalCashValue,BuyingPower,AvailableFunds"
REQ_ID_BASE = 90001  # request ids far away from order ids, so error ids are unambiguous


class HarnessTimeout(Exception):
    """An internal deadline expired while waiting for ``what``."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class HarnessClosed(Exception):
    """The connection closed while waiting for ``what``."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def num(value: Any) -> Any:
    """JSON-friendly number: ibapi's unset markers and non-finite floats become None."""
    if value is None:
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or value == UNSET_DOUBLE:
            return None
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value == UNSET_INTEGER:
        return None
    return value


def text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return value


def contract_json(c: Contract) -> JSON:
    return {
        "conId": c.conId,
        "symbol": c.symbol,
        "secType": c.secType,
        "exchange": c.exchange,
        "primaryExchange": c.primaryExchange,
        "currency": c.currency,
        "localSymbol": c.localSymbol,
        "tradingClass": c.tradingClass,
    }


def order_json(o: Order) -> JSON:
    return {
        "orderId": o.orderId,
        "clientId": o.clientId,
        "permId": o.permId,
        "action": o.action,
        "totalQuantity": num(o.totalQuantity),
        "orderType": o.orderType,
        "lmtPrice": num(o.lmtPrice),
        "auxPrice": num(o.auxPrice),
        "tif": o.tif,
        "account": o.account,
        "orderRef": o.orderRef,
        "whatIf": bool(o.whatIf),
        "parentId": o.parentId,
        "outsideRth": bool(o.outsideRth),
        "filledQuantity": num(o.filledQuantity),
    }


def order_state_json(s: OrderState) -> JSON:
    return {
        "status": s.status,
        "initMarginBefore": s.initMarginBefore,
        "maintMarginBefore": s.maintMarginBefore,
        "equityWithLoanBefore": s.equityWithLoanBefore,
        "initMarginChange": s.initMarginChange,
        "maintMarginChange": s.maintMarginChange,
        "equityWithLoanChange": s.equityWithLoanChange,
        "initMarginAfter": s.initMarginAfter,
        "maintMarginAfter": s.maintMarginAfter,
        "equityWithLoanAfter": s.equityWithLoanAfter,
        "commission": num(s.commission),
        "minCommission": num(s.minCommission),
        "maxCommission": num(s.maxCommission),
        "commissionCurrency": s.commissionCurrency,
        "warningText": s.warningText,
        "completedTime": s.completedTime,
        "completedStatus": s.completedStatus,
    }


def stock(symbol: str) -> Contract:
    c = Contract()
    c.symbol = symbol
    c.secType = "STK"
    c.exchange = "SMART"
    c.currency = "USD"
    return c


def quantity(raw: str) -> float | int:
    value = float(raw)
    return int(value) if value.is_integer() else value


class LogCapture(logging.Handler):
    """Collects ibapi's own ERROR log records (dropped messages, reader crashes)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not hide the record
            message = f"{record.msg!r} {record.args!r}"
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info))
        self.records.append(f"{record.name}: {message}"[:4000])


class Recorder(EWrapper):
    """EWrapper that appends every callback to one ordered log under a Condition."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout
        self.cond = threading.Condition()
        self.log: list[Event] = []
        self.counts: Counter[str] = Counter()
        self.closed = False
        self.next_valid_id: int | None = None
        self.managed_accounts: list[str] | None = None
        self.run_exception: str | None = None
        self.wire: list[list[Any]] | None = None

    # ----------------------------------------------------------------- plumbing
    def _rec(self, name: str, **data: Any) -> None:
        with self.cond:
            self.log.append((name, data))
            self.counts[name] += 1
            self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.log)

    def items(self, start: int, name: str, **match: Any) -> list[JSON]:
        with self.cond:
            return [
                data
                for n, data in self.log[start:]
                if n == name and all(data.get(k) == v for k, v in match.items())
            ]

    def wait_for(
        self,
        predicate: Callable[[], bool],
        what: str,
        timeout: float | None = None,
        allow_closed: bool = False,
    ) -> None:
        """Wait until predicate() holds; HarnessTimeout at the deadline.

        If the connection closes first, HarnessClosed (unless allow_closed): by then
        run() has drained its queue, so nothing more can arrive.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self.cond:
            while not predicate():
                if self.closed and not allow_closed:
                    raise HarnessClosed(what)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise HarnessTimeout(what)
                self.cond.wait(remaining)

    def absent_for(self, predicate: Callable[[], bool], seconds: float) -> bool:
        """Bounded wait for something that must NOT happen; True if it stayed absent."""
        with self.cond:
            return not self.cond.wait_for(predicate, timeout=seconds)

    def set_closed(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # ------------------------------------------------------------- connection
    def connectionClosed(self) -> None:
        self._rec("connectionClosed")
        self.set_closed()

    def connectAck(self) -> None:
        self._rec("connectAck")

    def nextValidId(self, orderId: int) -> None:
        with self.cond:
            self.next_valid_id = orderId
        self._rec("nextValidId", orderId=orderId)

    def managedAccounts(self, accountsList: str) -> None:
        accounts = [a for a in accountsList.split(",") if a]
        with self.cond:
            self.managed_accounts = accounts
        self._rec("managedAccounts", accounts=accounts, raw=accountsList)

    def error(self, reqId: int, errorCode: int, errorString: str) -> None:
        self._rec("error", id=reqId, code=errorCode, msg=text(errorString))

    def currentTime(self, time: int) -> None:
        self._rec("currentTime", time=time)

    # ----------------------------------------------------------------- account
    def position(self, account: str, contract: Contract, position: float, avgCost: float) -> None:
        self._rec(
            "position",
            account=account,
            contract=contract_json(contract),
            symbol=contract.symbol,
            position=num(position),
            avgCost=num(avgCost),
        )

    def positionEnd(self) -> None:
        self._rec("positionEnd")

    def updateAccountValue(self, key: str, val: str, currency: str, accountName: str) -> None:
        self._rec("updateAccountValue", key=key, value=val, currency=currency, account=accountName)

    def updatePortfolio(
        self,
        contract: Contract,
        position: float,
        marketPrice: float,
        marketValue: float,
        averageCost: float,
        unrealizedPNL: float,
        realizedPNL: float,
        accountName: str,
    ) -> None:
        self._rec(
            "updatePortfolio",
            contract=contract_json(contract),
            symbol=contract.symbol,
            position=num(position),
            marketPrice=num(marketPrice),
            marketValue=num(marketValue),
            averageCost=num(averageCost),
            unrealizedPNL=num(unrealizedPNL),
            realizedPNL=num(realizedPNL),
            account=accountName,
        )

    def updateAccountTime(self, timeStamp: str) -> None:
        self._rec("updateAccountTime", time=timeStamp)

    def accountDownloadEnd(self, accountName: str) -> None:
        self._rec("accountDownloadEnd", account=accountName)

    def accountUpdateMulti(
        self, reqId: int, account: str, modelCode: str, key: str, value: str, currency: str
    ) -> None:
        self._rec(
            "accountUpdateMulti",
            reqId=reqId,
            account=account,
            modelCode=modelCode,
            key=key,
            value=value,
            currency=currency,
        )

    def accountUpdateMultiEnd(self, reqId: int) -> None:
        self._rec("accountUpdateMultiEnd", reqId=reqId)

    def accountSummary(self, reqId: int, account: str, tag: str, value: str, currency: str) -> None:
        self._rec(
            "accountSummary", reqId=reqId, account=account, tag=tag, value=value, currency=currency
        )

    def accountSummaryEnd(self, reqId: int) -> None:
        self._rec("accountSummaryEnd", reqId=reqId)

    def pnl(self, reqId: int, dailyPnL: float, unrealizedPnL: float, realizedPnL: float) -> None:
        self._rec(
            "pnl",
            reqId=reqId,
            dailyPnL=num(dailyPnL),
            unrealizedPnL=num(unrealizedPnL),
            realizedPnL=num(realizedPnL),
        )

    # ------------------------------------------------------------------ orders
    def openOrder(
        self, orderId: int, contract: Contract, order: Order, orderState: OrderState
    ) -> None:
        self._rec(
            "openOrder",
            orderId=orderId,
            contract=contract_json(contract),
            order=order_json(order),
            state=order_state_json(orderState),
            status=orderState.status,
            lmtPrice=num(order.lmtPrice),
            auxPrice=num(order.auxPrice),
        )

    def openOrderEnd(self) -> None:
        self._rec("openOrderEnd")

    def orderStatus(
        self,
        orderId: int,
        status: str,
        filled: float,
        remaining: float,
        avgFillPrice: float,
        permId: int,
        parentId: int,
        lastFillPrice: float,
        clientId: int,
        whyHeld: str,
        mktCapPrice: float,
    ) -> None:
        self._rec(
            "orderStatus",
            orderId=orderId,
            status=status,
            filled=num(filled),
            remaining=num(remaining),
            avgFillPrice=num(avgFillPrice),
            permId=permId,
            parentId=parentId,
            lastFillPrice=num(lastFillPrice),
            clientId=clientId,
            whyHeld=whyHeld,
            mktCapPrice=num(mktCapPrice),
        )

    def completedOrder(self, contract: Contract, order: Order, orderState: OrderState) -> None:
        self._rec(
            "completedOrder",
            contract=contract_json(contract),
            order=order_json(order),
            state=order_state_json(orderState),
            symbol=contract.symbol,
            permId=order.permId,
            status=orderState.status,
        )

    def completedOrdersEnd(self) -> None:
        self._rec("completedOrdersEnd")

    def execDetails(self, reqId: int, contract: Contract, execution: Execution) -> None:
        self._rec(
            "execDetails",
            reqId=reqId,
            orderId=execution.orderId,
            contract=contract_json(contract),
            symbol=contract.symbol,
            execId=execution.execId,
            time=execution.time,
            acctNumber=execution.acctNumber,
            exchange=execution.exchange,
            side=execution.side,
            shares=num(execution.shares),
            price=num(execution.price),
            permId=execution.permId,
            clientId=execution.clientId,
            cumQty=num(execution.cumQty),
            avgPrice=num(execution.avgPrice),
            orderRef=execution.orderRef,
            lastLiquidity=execution.lastLiquidity,
        )

    def execDetailsEnd(self, reqId: int) -> None:
        self._rec("execDetailsEnd", reqId=reqId)

    def commissionReport(self, commissionReport: CommissionReport) -> None:
        c = commissionReport
        self._rec(
            "commissionReport",
            execId=c.execId,
            commission=num(c.commission),
            currency=c.currency,
            realizedPNL=num(c.realizedPNL),
            yield_=num(c.yield_),
            yieldRedemptionDate=c.yieldRedemptionDate,
        )

    # -------------------------------------------------------------- contracts
    def contractDetails(self, reqId: int, contractDetails: ContractDetails) -> None:
        d = contractDetails
        self._rec(
            "contractDetails",
            reqId=reqId,
            contract=contract_json(d.contract),
            marketName=d.marketName,
            minTick=num(d.minTick),
            orderTypes=d.orderTypes,
            validExchanges=d.validExchanges,
            longName=d.longName,
            timeZoneId=d.timeZoneId,
            stockType=d.stockType,
            marketRuleIds=d.marketRuleIds,
            secIdList=[[t.tag, t.value] for t in (d.secIdList or [])],
        )

    def contractDetailsEnd(self, reqId: int) -> None:
        self._rec("contractDetailsEnd", reqId=reqId)

    # ------------------------------------------------------------- market data
    def marketDataType(self, reqId: int, marketDataType: int) -> None:
        self._rec("marketDataType", reqId=reqId, type=marketDataType)

    def tickPrice(self, reqId: int, tickType: int, price: float, attrib: TickAttrib) -> None:
        self._rec("tickPrice", reqId=reqId, tickType=tickType, price=num(price))

    def tickSize(self, reqId: int, tickType: int, size: int) -> None:
        self._rec("tickSize", reqId=reqId, tickType=tickType, size=num(size))

    def tickString(self, reqId: int, tickType: int, value: str) -> None:
        self._rec("tickString", reqId=reqId, tickType=tickType, value=value)

    def tickGeneric(self, reqId: int, tickType: int, value: float) -> None:
        self._rec("tickGeneric", reqId=reqId, tickType=tickType, value=num(value))

    def tickSnapshotEnd(self, reqId: int) -> None:
        self._rec("tickSnapshotEnd", reqId=reqId)

    def tickReqParams(
        self, tickerId: int, minTick: float, bboExchange: str, snapshotPermissions: int
    ) -> None:
        self._rec(
            "tickReqParams",
            reqId=tickerId,
            minTick=num(minTick),
            bboExchange=bboExchange,
            snapshotPermissions=snapshotPermissions,
        )


def strip(items: list[JSON], *keys: str) -> list[JSON]:
    return [{k: v for k, v in item.items() if k not in keys} for item in items]


class Session:
    """One connected ibapi client plus the flows."""

    def __init__(self, args: argparse.Namespace, w: Recorder, client: EClient) -> None:
        self.args = args
        self.w = w
        self.client = client
        self.next_req_id = REQ_ID_BASE
        self.next_order_id = 0
        self.ready_mark = 0
        self.result: JSON = {}

    # --------------------------------------------------------------- helpers
    def req_id(self) -> int:
        self.next_req_id += 1
        return self.next_req_id

    def order_id(self) -> int:
        oid = self.next_order_id
        self.next_order_id += 1
        return oid

    @property
    def account(self) -> str:
        accounts = self.w.managed_accounts or [""]
        return accounts[0]

    def errors_for(self, start: int, req_id: int) -> list[JSON]:
        return strip(self.w.items(start, "error", id=req_id))

    def has_error(self, start: int, req_id: int, code: int | None = None) -> bool:
        return any(
            code is None or e["code"] == code for e in self.w.items(start, "error", id=req_id)
        )

    # -------------------------------------------------------------- queries
    def positions(self) -> JSON:
        start = self.w.mark()
        self.client.reqPositions()
        self.w.wait_for(lambda: bool(self.w.items(start, "positionEnd")), "positionEnd")
        out = {"items": self.w.items(start, "position"), "end": True}
        self.client.cancelPositions()
        return out

    def open_orders(self, all_clients: bool = False) -> JSON:
        start = self.w.mark()
        if all_clients:
            self.client.reqAllOpenOrders()
        else:
            self.client.reqOpenOrders()
        self.w.wait_for(lambda: bool(self.w.items(start, "openOrderEnd")), "openOrderEnd")
        return {
            "open_orders": self.w.items(start, "openOrder"),
            "order_statuses": self.w.items(start, "orderStatus"),
            "end": True,
        }

    def completed_orders(self) -> JSON:
        start = self.w.mark()
        self.client.reqCompletedOrders(False)
        self.w.wait_for(
            lambda: bool(self.w.items(start, "completedOrdersEnd")), "completedOrdersEnd"
        )
        return {"items": self.w.items(start, "completedOrder"), "end": True}

    def account_updates(self) -> JSON:
        start = self.w.mark()
        account = self.account
        self.client.reqAccountUpdates(True, account)
        self.w.wait_for(
            lambda: bool(self.w.items(start, "accountDownloadEnd", account=account)),
            "accountDownloadEnd",
        )
        out = {
            "values": self.w.items(start, "updateAccountValue"),
            "portfolio": self.w.items(start, "updatePortfolio"),
            "times": [t["time"] for t in self.w.items(start, "updateAccountTime")],
            "download_end": account,
        }
        self.client.reqAccountUpdates(False, account)
        return out

    def account_updates_multi(self) -> JSON:
        start = self.w.mark()
        rid = self.req_id()
        self.client.reqAccountUpdatesMulti(rid, self.account, "", False)
        self.w.wait_for(
            lambda: (
                bool(self.w.items(start, "accountUpdateMultiEnd", reqId=rid))
                or self.has_error(start, rid)
            ),
            "accountUpdateMultiEnd",
        )
        out = {
            "req_id": rid,
            "items": strip(self.w.items(start, "accountUpdateMulti", reqId=rid), "reqId"),
            "end": bool(self.w.items(start, "accountUpdateMultiEnd", reqId=rid)),
            "errors": self.errors_for(start, rid),
        }
        self.client.cancelAccountUpdatesMulti(rid)
        return out

    def executions(self) -> JSON:
        start = self.w.mark()
        rid = self.req_id()
        self.client.reqExecutions(rid, ExecutionFilter())
        self.w.wait_for(
            lambda: (
                bool(self.w.items(start, "execDetailsEnd", reqId=rid)) or self.has_error(start, rid)
            ),
            "execDetailsEnd",
        )
        execs = self.w.items(start, "execDetails", reqId=rid)
        exec_ids = {e["execId"] for e in execs}

        def commissions_complete() -> bool:
            seen = {c["execId"] for c in self.w.items(start, "commissionReport")}
            return exec_ids <= seen

        self.w.wait_for(commissions_complete, "commissionReport for every execution")
        return {
            "req_id": rid,
            "executions": execs,
            "commissions": [
                c for c in self.w.items(start, "commissionReport") if c["execId"] in exec_ids
            ],
            "end": bool(self.w.items(start, "execDetailsEnd", reqId=rid)),
            "errors": self.errors_for(start, rid),
        }

    def barrier(self) -> int:
        start = self.w.mark()
        self.client.reqCurrentTime()
        self.w.wait_for(lambda: bool(self.w.items(start, "currentTime")), "currentTime")
        return int(self.w.items(start, "currentTime")[0]["time"])

    # ---------------------------------------------------------------- orders
    def make_order(
        self,
        action: str,
        qty: float | int,
        order_type: str,
        lmt: float | None = None,
        aux: float | None = None,
        ref: str = "",
    ) -> Order:
        o = Order()
        o.action = action
        o.totalQuantity = qty
        o.orderType = order_type
        if lmt is not None:
            o.lmtPrice = lmt
        if aux is not None:
            o.auxPrice = aux
        o.tif = "DAY"
        o.orderRef = ref
        o.transmit = True
        # ibapi 9.81 defaults both to True, which real TWS rejects (10268/10269).
        o.eTradeOnly = False
        o.firmQuoteOnly = False
        return o

    def order_report(self, start: int, oid: int) -> JSON:
        """Everything this session saw about one order since ``start``, in order."""
        statuses = self.w.items(start, "orderStatus", orderId=oid)
        execs = [e for e in self.w.items(start, "execDetails") if e["orderId"] == oid]
        exec_ids = {e["execId"] for e in execs}
        commissions = [
            c for c in self.w.items(start, "commissionReport") if c["execId"] in exec_ids
        ]
        sequence: list[str] = []
        with self.w.cond:
            for name, data in self.w.log[start:]:
                if (name in ("openOrder", "orderStatus", "execDetails", "error")) and (
                    data.get("orderId", data.get("id")) == oid
                ):
                    sequence.append(f"{name}:{data.get('status', data.get('code', ''))}")
                elif name == "commissionReport" and data["execId"] in exec_ids:
                    sequence.append(name)
        return {
            "order_id": oid,
            "statuses": [s["status"] for s in statuses],
            "order_statuses": statuses,
            "open_orders": self.w.items(start, "openOrder", orderId=oid),
            "executions": execs,
            "commissions": commissions,
            "errors": self.errors_for(start, oid),
            "sequence": sequence,
        }

    def wait_filled(self, start: int, oid: int, qty: float, timeout: float | None = None) -> None:
        def filled() -> bool:
            if not self.w.items(start, "orderStatus", orderId=oid, status="Filled"):
                return False
            execs = [e for e in self.w.items(start, "execDetails") if e["orderId"] == oid]
            if not execs or abs(sum(e["shares"] or 0 for e in execs) - qty) > 1e-9:
                return False
            seen = {c["execId"] for c in self.w.items(start, "commissionReport")}
            return {e["execId"] for e in execs} <= seen

        self.w.wait_for(filled, "fill (Filled status + executions + commissions)", timeout)

    def wait_status(self, start: int, oid: int, wanted: set[str] | None, what: str) -> None:
        self.w.wait_for(
            lambda: any(
                wanted is None or s["status"] in wanted
                for s in self.w.items(start, "orderStatus", orderId=oid)
            ),
            what,
        )

    def cancel(self, oid: int) -> None:
        start = self.w.mark()
        self.client.cancelOrder(oid)
        self.w.wait_for(
            lambda: (
                bool(self.w.items(start, "orderStatus", orderId=oid, status="Cancelled"))
                and self.has_error(start, oid, 202)
            ),
            "cancel (Cancelled status + error 202)",
        )

    # ----------------------------------------------------------------- flows
    def flow_connect(self) -> None:
        def farm_codes() -> set[int]:
            return {e["code"] for e in self.w.items(0, "error", id=-1)}

        self.w.wait_for(lambda: farm_codes() >= FARM_NOTICES, "farm notices 2104/2106/2158")
        self.result["farm_notices"] = sorted(farm_codes() & FARM_NOTICES)

    def flow_sync(self) -> None:
        r = self.result
        r["positions"] = self.positions()
        r["open_orders"] = self.open_orders()
        r["completed_orders"] = self.completed_orders()
        r["account_updates"] = self.account_updates()
        r["account_updates_multi"] = self.account_updates_multi()
        r["executions"] = self.executions()

    def flow_account_summary(self) -> None:
        start = self.w.mark()
        rid = self.req_id()
        self.result["tags"] = self.args.tags
        self.client.reqAccountSummary(rid, "All", self.args.tags)
        self.w.wait_for(
            lambda: (
                bool(self.w.items(start, "accountSummaryEnd", reqId=rid))
                or self.has_error(start, rid)
            ),
            "accountSummaryEnd",
        )
        self.result.update(
            req_id=rid,
            items=strip(self.w.items(start, "accountSummary", reqId=rid), "reqId"),
            end=bool(self.w.items(start, "accountSummaryEnd", reqId=rid)),
            errors=self.errors_for(start, rid),
        )
        self.client.cancelAccountSummary(rid)

    def flow_pnl(self) -> None:
        start = self.w.mark()
        rid = self.req_id()
        self.client.reqPnL(rid, self.account, "")
        self.w.wait_for(
            lambda: bool(self.w.items(start, "pnl", reqId=rid)) or self.has_error(start, rid),
            "pnl",
        )
        pnl = self.w.items(start, "pnl", reqId=rid)
        self.result.update(
            req_id=rid,
            account=self.account,
            pnl=strip(pnl[:1], "reqId")[0] if pnl else None,
            errors=self.errors_for(start, rid),
        )
        self.client.cancelPnL(rid)

    def flow_current_time(self) -> None:
        server_time = self.barrier()
        self.result.update(server_time=server_time, local_time=int(time.time()))

    def flow_contract_details(self) -> None:
        start = self.w.mark()
        rid = self.req_id()
        self.client.reqContractDetails(rid, stock(self.args.symbol))
        self.w.wait_for(
            lambda: (
                bool(self.w.items(start, "contractDetailsEnd", reqId=rid))
                or self.has_error(start, rid)
            ),
            "contractDetailsEnd or error",
        )
        self.result.update(
            req_id=rid,
            details=strip(self.w.items(start, "contractDetails", reqId=rid), "reqId"),
            end=bool(self.w.items(start, "contractDetailsEnd", reqId=rid)),
            errors=self.errors_for(start, rid),
        )

    def ticks(self, start: int, rid: int) -> JSON:
        types = self.w.items(start, "marketDataType", reqId=rid)
        return {
            "req_id": rid,
            "market_data_types": [t["type"] for t in types],
            "prices": strip(self.w.items(start, "tickPrice", reqId=rid), "reqId"),
            "sizes": strip(self.w.items(start, "tickSize", reqId=rid), "reqId"),
            "strings": strip(self.w.items(start, "tickString", reqId=rid), "reqId"),
            "generics": strip(self.w.items(start, "tickGeneric", reqId=rid), "reqId"),
            "req_params": strip(self.w.items(start, "tickReqParams", reqId=rid), "reqId"),
            "snapshot_end": bool(self.w.items(start, "tickSnapshotEnd", reqId=rid)),
            "errors": self.errors_for(start, rid),
        }

    def flow_snapshot(self) -> None:
        start = self.w.mark()
        rid = self.req_id()
        self.client.reqMktData(rid, stock(self.args.symbol), "", True, False, [])
        self.w.wait_for(
            lambda: (
                bool(self.w.items(start, "tickSnapshotEnd", reqId=rid))
                or self.has_error(start, rid)
            ),
            "tickSnapshotEnd or error",
        )
        self.result.update(self.ticks(start, rid))

    def flow_stream(self) -> None:
        start = self.w.mark()
        rid = self.req_id()
        wanted = self.args.n
        self.client.reqMktData(rid, stock(self.args.symbol), "", False, False, [])
        self.w.wait_for(
            lambda: bool(self.w.items(start, "tickPrice", reqId=rid)) or self.has_error(start, rid),
            "first tickPrice",
        )
        announce(f"STREAMING {rid}")
        self.w.wait_for(
            lambda: (
                len(self.w.items(start, "tickPrice", reqId=rid)) >= wanted
                or self.has_error(start, rid)
            ),
            f"{wanted} tickPrice callbacks",
            self.args.wait_timeout,
        )
        self.client.cancelMktData(rid)
        self.result.update(self.ticks(start, rid))

    def flow_market_order(self) -> None:
        a = self.args
        qty = quantity(a.qty)
        oid = self.order_id()
        start = self.w.mark()
        self.result["order_id"] = oid
        self.client.placeOrder(
            oid, stock(a.symbol), self.make_order(a.action, qty, "MKT", ref=a.ref)
        )
        try:
            self.w.wait_for(
                lambda: (
                    any(e["orderId"] == oid for e in self.w.items(start, "execDetails"))
                    or self.has_error(start, oid)
                ),
                "first execution",
            )
            # Lets a test drive the remaining partial fills (e.g. by stepping the market).
            announce(f"FIRST_FILL {oid}")
            self.wait_filled(start, oid, float(qty))
        finally:
            self.result.update(self.order_report(start, oid))

    def _resting_order(
        self, order_type: str, lmt: float | None, aux: float | None, wanted: set[str] | None
    ) -> None:
        a = self.args
        qty = quantity(a.qty)
        oid = self.order_id()
        start = self.w.mark()
        self.result["order_id"] = oid
        order = self.make_order(a.action, qty, order_type, lmt=lmt, aux=aux, ref=a.ref)
        contract = stock(a.symbol)
        try:
            self.client.placeOrder(oid, contract, order)
            self.wait_status(start, oid, wanted, "first order status")
            self.result["initial_status"] = self.w.items(start, "orderStatus", orderId=oid)[0][
                "status"
            ]
            new_price = getattr(a, "modify", None)
            if new_price is not None:
                mod_start = self.w.mark()
                order.lmtPrice = new_price
                self.client.placeOrder(oid, contract, order)
                self.w.wait_for(
                    lambda: any(
                        o["lmtPrice"] is not None and abs(o["lmtPrice"] - new_price) < 1e-9
                        for o in self.w.items(mod_start, "openOrder", orderId=oid)
                    ),
                    "openOrder with modified lmtPrice",
                )
                self.result["modified"] = {
                    "open_orders": self.w.items(mod_start, "openOrder", orderId=oid),
                    "order_statuses": self.w.items(mod_start, "orderStatus", orderId=oid),
                }
            if getattr(a, "wait_fill", False):
                announce(f"WORKING {oid}")
                self.wait_filled(start, oid, float(qty), a.wait_timeout)
            if a.cancel:
                self.cancel(oid)
        finally:
            self.result.update(self.order_report(start, oid))

    def flow_limit_order(self) -> None:
        self._resting_order("LMT", self.args.price, None, {"Submitted", "PreSubmitted"})

    def flow_stop_order(self) -> None:
        self._resting_order("STP", None, self.args.stop, None)

    def flow_stop_limit_order(self) -> None:
        self._resting_order("STP LMT", self.args.price, self.args.stop, None)

    def flow_whatif(self) -> None:
        a = self.args
        oid = self.order_id()
        start = self.w.mark()
        order = self.make_order(a.action, quantity(a.qty), "MKT")
        order.whatIf = True
        self.result["order_id"] = oid
        try:
            self.client.placeOrder(oid, stock(a.symbol), order)
            self.w.wait_for(
                lambda: (
                    bool(self.w.items(start, "openOrder", orderId=oid))
                    or self.has_error(start, oid)
                ),
                "what-if openOrder",
            )
            # Absence check (bounded on purpose): a what-if order must never produce an
            # orderStatus; give the server a short window to (wrongly) send one.
            self.result["no_order_status"] = self.w.absent_for(
                lambda: bool(self.w.items(start, "orderStatus", orderId=oid)), a.quiet
            )
            opens = self.w.items(start, "openOrder", orderId=oid)
            self.result["state"] = opens[0]["state"] if opens else None
            self.result["what_if_flag"] = opens[0]["order"]["whatIf"] if opens else None
        finally:
            self.result.update(self.order_report(start, oid))

    def flow_open_orders(self) -> None:
        self.result.update(self.open_orders())

    def flow_all_open_orders(self) -> None:
        self.result.update(self.open_orders(all_clients=True))

    def flow_completed_orders(self) -> None:
        self.result.update(self.completed_orders())

    def flow_executions(self) -> None:
        self.result.update(self.executions())

    def flow_positions(self) -> None:
        self.result.update(self.positions())

    def flow_account_updates(self) -> None:
        self.result.update(self.account_updates())

    def flow_place_expect_error(self) -> None:
        a = self.args
        oid = self.order_id()
        start = self.w.mark()
        self.result["order_id"] = oid
        order = self.make_order(
            a.action, quantity(a.qty), a.order_type, lmt=a.lmt, aux=a.aux, ref=a.ref
        )
        try:
            self.client.placeOrder(oid, stock(a.symbol), order)
            self.w.wait_for(lambda: self.has_error(start, oid), "error for the order")
            self.result["error"] = self.errors_for(start, oid)[0]
        finally:
            self.result.update(self.order_report(start, oid))

    def flow_wait_errors(self) -> None:
        wanted = self.args.n
        mark = self.ready_mark

        def got() -> list[JSON]:
            return strip(self.w.items(mark, "error", id=-1))

        try:
            self.w.wait_for(
                lambda: len(got()) >= wanted, f"{wanted} errors with id -1", self.args.wait_timeout
            )
        finally:
            self.result["errors"] = got()

    def flow_wait_disconnect(self) -> None:
        self.w.wait_for(
            lambda: self.w.closed, "connectionClosed", self.args.wait_timeout, allow_closed=True
        )
        self.result["connection_closed"] = True


def announce(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--client-id", type=int, required=True)
    p.add_argument("--timeout", type=float, default=10.0, help="deadline of each internal wait")
    p.add_argument("--trace", action="store_true", help="report every incoming message")
    sub = p.add_subparsers(dest="flow", required=True)

    for name in (
        "connect",
        "sync",
        "pnl",
        "current_time",
        "open_orders",
        "all_open_orders",
        "completed_orders",
        "executions",
        "positions",
        "account_updates",
    ):
        sub.add_parser(name)
    s = sub.add_parser("account_summary")
    s.add_argument("--tags", default=SUMMARY_TAGS)
    for name in ("contract_details", "snapshot"):
        sub.add_parser(name).add_argument("symbol")
    s = sub.add_parser("stream")
    s.add_argument("symbol")
    s.add_argument("n", type=int)
    s.add_argument("--wait-timeout", type=float, default=20.0)

    s = sub.add_parser("market_order")
    s.add_argument("symbol")
    s.add_argument("action", choices=["BUY", "SELL"])
    s.add_argument("qty")
    s.add_argument("ref")

    s = sub.add_parser("limit_order")
    s.add_argument("symbol")
    s.add_argument("action", choices=["BUY", "SELL"])
    s.add_argument("qty")
    s.add_argument("price", type=float)
    s.add_argument("ref")
    s.add_argument("--modify", type=float, default=None, metavar="NEWPRICE")
    s.add_argument("--cancel", action="store_true")
    s.add_argument("--wait-fill", action="store_true", help="print WORKING <id>, wait for fill")
    s.add_argument("--wait-timeout", type=float, default=20.0)

    s = sub.add_parser("stop_order")
    s.add_argument("symbol")
    s.add_argument("action", choices=["BUY", "SELL"])
    s.add_argument("qty")
    s.add_argument("stop", type=float)
    s.add_argument("ref")
    s.add_argument("--cancel", action="store_true")

    s = sub.add_parser("stop_limit_order")
    s.add_argument("symbol")
    s.add_argument("action", choices=["BUY", "SELL"])
    s.add_argument("qty")
    s.add_argument("price", type=float, help="limit price")
    s.add_argument("stop", type=float, help="stop (aux) price")
    s.add_argument("ref")
    s.add_argument("--cancel", action="store_true")

    s = sub.add_parser("whatif")
    s.add_argument("symbol")
    s.add_argument("action", choices=["BUY", "SELL"])
    s.add_argument("qty")
    s.add_argument("--quiet", type=float, default=1.0, help="absence window for orderStatus")

    s = sub.add_parser("place_expect_error")
    s.add_argument("symbol")
    s.add_argument("order_type", help="e.g. MKT, LMT, TRAIL")
    s.add_argument("action", nargs="?", default="BUY", choices=["BUY", "SELL"])
    s.add_argument("qty", nargs="?", default="1")
    s.add_argument("--lmt", type=float, default=None)
    s.add_argument("--aux", type=float, default=None)
    s.add_argument("--ref", default="")

    s = sub.add_parser("wait_errors")
    s.add_argument("n", type=int)
    s.add_argument("--wait-timeout", type=float, default=30.0)

    s = sub.add_parser("wait_disconnect")
    s.add_argument("--wait-timeout", type=float, default=30.0)
    return p


def install_trace(w: Recorder) -> None:
    """Record (msgId, field count, fields) of every decoded message (``--trace``)."""
    original = Decoder.interpret
    w.wire = []

    def interpret(self: Decoder, fields: Any) -> Any:
        if fields and w.wire is not None:
            decoded = [text(f) for f in fields]
            with w.cond:
                w.wire.append([decoded[0], len(decoded), decoded[:140]])
        return original(self, fields)

    Decoder.interpret = interpret  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    capture = LogCapture()
    ibapi_logger = logging.getLogger("ibapi")
    ibapi_logger.setLevel(logging.ERROR)
    ibapi_logger.addHandler(capture)
    ibapi_logger.propagate = False

    w = Recorder(args.timeout)
    client = EClient(w)
    session = Session(args, w, client)
    if args.trace:
        install_trace(w)
    out: JSON = {"flow": args.flow, "client_id": args.client_id, "connected": False}
    code = 0

    def run_loop() -> None:
        try:
            client.run()
        except BaseException:
            with w.cond:
                w.run_exception = traceback.format_exc()[-4000:]
        finally:
            w.set_closed()

    try:
        connect_done = threading.Event()

        def do_connect() -> None:
            try:
                client.connect(args.host, args.port, args.client_id)
            finally:
                connect_done.set()

        threading.Thread(target=do_connect, name="ibapi-connect", daemon=True).start()
        if not connect_done.wait(args.timeout):
            raise HarnessTimeout("handshake (server version reply)")
        if client.serverVersion() is None:  # refused, or closed before the version reply
            w.set_closed()
            raise HarnessClosed("handshake (socket)")
        out["server_version"] = client.serverVersion()
        out["connection_time"] = text(client.twsConnectionTime())
        # Start the message loop even if the socket is already gone (e.g. 326 + close
        # right after startApi): run() drains what the reader queued, then reports
        # connectionClosed.
        threading.Thread(target=run_loop, name="ibapi-run", daemon=True).start()

        w.wait_for(
            lambda: w.closed or (w.next_valid_id is not None and w.managed_accounts is not None),
            "nextValidId and managedAccounts",
            allow_closed=True,
        )
        if w.next_valid_id is None or w.managed_accounts is None:
            raise HarnessClosed("nextValidId and managedAccounts")
        session.next_order_id = w.next_valid_id
        session.barrier()
        out["connected"] = True
        session.ready_mark = w.mark()
        announce("READY")
        getattr(session, f"flow_{args.flow}")()
    except HarnessTimeout as exc:
        out["timeout"] = exc.what
        code = 3
    except HarnessClosed as exc:
        # A refused connection (e.g. 326) is a legitimate outcome of the connect flow.
        code = 0 if args.flow == "connect" and not out["connected"] else 4
        out["closed_during"] = exc.what
    except Exception:
        out["harness_exception"] = traceback.format_exc()[-4000:]
        code = 1

    with w.cond:
        out.update(
            next_valid_id=w.next_valid_id,
            managed_accounts=w.managed_accounts,
            errors=strip([d for n, d in w.log if n == "error"]),
            errors_after_ready=strip(
                [d for n, d in w.log[session.ready_mark :] if n == "error"]
                if out["connected"]
                else []
            ),
            connection_closed=w.closed,
            run_exception=w.run_exception,
            ibapi_log_errors=list(capture.records),
            callbacks=dict(w.counts),
            result=session.result,
        )
        if w.wire is not None:
            out["wire"] = list(w.wire)
    sys.stdout.write(json.dumps(out, default=repr) + "\n")
    sys.stdout.flush()
    try:
        if client.isConnected():
            client.disconnect()
    except Exception:
        pass
    # ibapi's EReader is a non-daemon thread; do not let it (or a hung connect) keep
    # the process alive once the report is out.
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
