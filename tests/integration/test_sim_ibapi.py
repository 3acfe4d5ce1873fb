"""The simulator against IB's own client, ``ibapi`` 9.81 (server version 157).

Each test runs ``ibapi_client.py`` (a standalone ibapi script) in a subprocess,
because ibapi's ``connect()`` has no timeout and its reader threads cannot be
stopped; the subprocess is killed when the surrounding ``anyio.fail_after`` expires.
The script prints one JSON report on stdout (see its docstring); flows that need
the test to act (inject a fault, move a price) announce ``READY`` / ``WORKING <id>``
on stderr first.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process

pytestmark = pytest.mark.anyio

HARNESS = str(Path(__file__).with_name("ibapi_client.py"))
FAIL_AFTER = 60.0
FARM_NOTICES = {2104, 2106, 2158}
UNSET_DOUBLE = 1.7976931348623157e308


@dataclass
class Report:
    rc: int
    data: dict[str, Any]
    stderr: str

    @property
    def result(self) -> dict[str, Any]:
        return dict(self.data["result"])

    def __str__(self) -> str:  # shown by pytest when an assertion on the report fails
        return f"rc={self.rc} report={json.dumps(self.data, indent=1)} stderr={self.stderr}"


def _command(sim: Any, flow: tuple[str, ...], client_id: int, timeout: float) -> list[str]:
    return [
        sys.executable,
        HARNESS,
        "--host",
        "127.0.0.1",
        "--port",
        str(sim.port),
        "--client-id",
        str(client_id),
        "--timeout",
        str(timeout),
        *flow,
    ]


def _parse(rc: int, stdout: bytes, stderr: bytes) -> Report:
    lines = [line for line in stdout.decode().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line, rc={rc} stdout={stdout!r} stderr={stderr!r}"
    return Report(rc, json.loads(lines[0]), stderr.decode(errors="replace"))


async def run_flow(sim: Any, *flow: str, client_id: int = 1, deadline: float = 10.0) -> Report:
    """Run one harness flow to completion (killed after FAIL_AFTER seconds)."""
    with anyio.fail_after(FAIL_AFTER):
        done = await anyio.run_process(_command(sim, flow, client_id, deadline), check=False)
    return _parse(done.returncode, done.stdout, done.stderr)


async def ok_flow(sim: Any, *flow: str, client_id: int = 1) -> Report:
    """Run a flow that must complete cleanly (exit 0, no decoding trouble in ibapi)."""
    report = await run_flow(sim, *flow, client_id=client_id)
    assert report.rc == 0, report
    assert_clean(report)
    return report


def assert_clean(report: Report) -> None:
    """ibapi decoded everything: no dropped messages, no dead reader loop."""
    assert report.data["ibapi_log_errors"] == [], report
    assert report.data["run_exception"] is None, report
    assert "harness_exception" not in report.data, report


@dataclass
class Live:
    """A harness subprocess the test talks to while it runs (reads stderr lines)."""

    proc: Process
    _stderr: bytearray = field(default_factory=bytearray)
    _seen: int = 0

    async def wait_line(self, prefix: str) -> str:
        """Next stderr line starting with prefix (the caller bounds the wait)."""
        assert self.proc.stderr is not None
        while True:
            lines = bytes(self._stderr).decode(errors="replace").split("\n")
            for index in range(self._seen, len(lines) - 1):
                if lines[index].startswith(prefix):
                    self._seen = index + 1
                    return lines[index]
            try:
                self._stderr += await self.proc.stderr.receive()
            except anyio.EndOfStream:
                raise AssertionError(
                    f"harness exited before {prefix!r}; stderr={bytes(self._stderr)!r}"
                ) from None

    async def finish(self) -> Report:
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        stdout = bytearray()
        async for chunk in self.proc.stdout:
            stdout += chunk
        async for chunk in self.proc.stderr:
            self._stderr += chunk
        rc = await self.proc.wait()
        return _parse(rc, bytes(stdout), bytes(self._stderr))


@asynccontextmanager
async def live_flow(
    sim: Any, *flow: str, client_id: int = 1, deadline: float = 10.0
) -> AsyncIterator[Live]:
    """Start a flow; kill it on the way out if it is still running."""
    proc = await anyio.open_process(_command(sim, flow, client_id, deadline))
    try:
        yield Live(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        with anyio.CancelScope(shield=True):
            await proc.aclose()


def codes(errors: list[dict[str, Any]], req_id: int | None = None) -> list[int]:
    return [int(e["code"]) for e in errors if req_id is None or e["id"] == req_id]


def position_of(positions: list[dict[str, Any]], symbol: str) -> float:
    return sum(p["position"] for p in positions if p["symbol"] == symbol)


def account_value(values: list[dict[str, Any]], key: str, currency: str = "USD") -> float:
    found = [v["value"] for v in values if v["key"] == key and v["currency"] == currency]
    assert found, f"no {key}/{currency} in {values}"
    return float(found[-1])


# --------------------------------------------------------------------------- connect


async def test_connect_negotiates_157_and_sends_farm_notices(sim: Any) -> None:
    report = await ok_flow(sim, "connect")
    data = report.data
    assert data["connected"] is True
    assert data["server_version"] == 157
    assert data["connection_time"]
    assert data["managed_accounts"] == [sim.account]
    assert sim.account.startswith("DU")
    assert isinstance(data["next_valid_id"], int)
    assert data["next_valid_id"] >= 1
    assert set(codes(data["errors"], -1)) >= FARM_NOTICES
    assert set(report.result["farm_notices"]) == FARM_NOTICES
    notices = [e for e in data["errors"] if e["code"] in FARM_NOTICES]
    assert all(e["id"] == -1 and "farm connection is OK" in e["msg"] for e in notices), notices
    # Nothing but farm notices at connect.
    assert set(codes(data["errors"])) == FARM_NOTICES


async def test_current_time_is_now(sim: Any) -> None:
    report = await ok_flow(sim, "current_time")
    assert abs(report.result["server_time"] - report.result["local_time"]) <= 5


# ------------------------------------------------------------------------------ sync


async def test_sync_answers_every_startup_request(sim: Any) -> None:
    report = await ok_flow(sim, "sync")
    r = report.result
    assert r["positions"]["end"] is True
    for p in r["positions"]["items"]:
        assert p["account"] == sim.account
    assert r["open_orders"]["end"] is True
    assert r["open_orders"]["open_orders"] == []
    assert r["completed_orders"]["end"] is True
    assert r["completed_orders"]["items"] == []

    updates = r["account_updates"]
    assert updates["download_end"] == sim.account
    keys = {v["key"] for v in updates["values"]}
    assert {"NetLiquidation", "TotalCashValue", "BuyingPower", "AvailableFunds"} <= keys
    assert all(v["account"] == sim.account for v in updates["values"])
    assert account_value(updates["values"], "NetLiquidation") > 0
    assert len(updates["times"]) >= 1
    held = {p["symbol"] for p in r["positions"]["items"] if p["position"]}
    assert {p["symbol"] for p in updates["portfolio"] if p["position"]} == held

    multi = r["account_updates_multi"]
    assert multi["end"] is True
    assert multi["errors"] == []
    assert multi["items"], "accountUpdateMulti sent no values"
    assert all(i["account"] == sim.account for i in multi["items"])
    assert "NetLiquidation" in {i["key"] for i in multi["items"]}

    execs = r["executions"]
    assert execs["end"] is True
    assert execs["executions"] == []
    assert execs["errors"] == []


async def test_account_summary(sim: Any) -> None:
    tags = "AccountType,NetLiquidation,TotalCashValue,BuyingPower,AvailableFunds"
    report = await ok_flow(sim, "account_summary", "--tags", tags)
    r = report.result
    assert r["end"] is True
    assert r["errors"] == []
    by_tag = {i["tag"]: i for i in r["items"]}
    assert set(by_tag) == set(tags.split(","))
    assert all(i["account"] == sim.account for i in r["items"])
    assert float(by_tag["NetLiquidation"]["value"]) > 0
    assert by_tag["NetLiquidation"]["currency"] == "USD"


async def test_pnl_delivers_a_first_update(sim: Any) -> None:
    report = await ok_flow(sim, "pnl")
    r = report.result
    assert r["errors"] == []
    pnl = r["pnl"]
    assert pnl is not None
    for key in ("dailyPnL", "unrealizedPnL", "realizedPnL"):
        assert isinstance(pnl[key], float), pnl


# ------------------------------------------------------------------------- contracts


async def test_contract_details_of_a_known_stock(sim: Any) -> None:
    report = await ok_flow(sim, "contract_details", "AAPL")
    r = report.result
    assert r["end"] is True
    assert r["errors"] == []
    assert len(r["details"]) == 1
    details = r["details"][0]
    contract = details["contract"]
    assert contract["conId"] == 265598
    assert contract["symbol"] == "AAPL"
    assert contract["secType"] == "STK"
    assert contract["exchange"] == "SMART"
    assert contract["primaryExchange"] == "NASDAQ"
    assert contract["currency"] == "USD"
    assert details["minTick"] == 0.01
    assert "LMT" in details["orderTypes"].split(",")
    assert details["longName"] == "APPLE INC"
    assert details["validExchanges"] == "SMART,NASDAQ"
    assert details["timeZoneId"] == "US/Eastern"
    assert details["stockType"] == "COMMON"
    assert details["marketRuleIds"] == "26,26"


async def test_contract_details_of_an_unknown_symbol_is_error_200(sim: Any) -> None:
    report = await ok_flow(sim, "contract_details", "NOSUCHSYM")
    r = report.result
    assert r["details"] == []
    assert r["end"] is False
    assert codes(r["errors"]) == [200]
    assert r["errors"][0]["id"] == r["req_id"]
    assert "No security definition" in r["errors"][0]["msg"]


# ----------------------------------------------------------------------- market data


async def test_snapshot_delivers_quote_and_end(sim: Any) -> None:
    report = await ok_flow(sim, "snapshot", "MSFT")
    r = report.result
    assert r["snapshot_end"] is True
    assert r["errors"] == []
    assert r["market_data_types"] in ([1], [3])
    prices = {p["tickType"]: p["price"] for p in r["prices"]}
    live = r["market_data_types"] == [1]
    bid, ask, last = (1, 2, 4) if live else (66, 67, 68)
    assert {bid, ask, last} <= set(prices), prices
    assert 0 < prices[bid] <= prices[ask]
    sizes = {s["tickType"]: s["size"] for s in r["sizes"]}
    bid_size, ask_size = (0, 3) if live else (69, 70)
    assert sizes[bid_size] > 0
    assert sizes[ask_size] > 0
    assert all(isinstance(s["size"], int) for s in r["sizes"])


async def test_snapshot_of_an_unknown_symbol_is_error_200(sim: Any) -> None:
    r = (await ok_flow(sim, "snapshot", "NOSUCHSYM")).result
    assert [(e["id"], e["code"]) for e in r["errors"]] == [(r["req_id"], 200)]
    assert r["prices"] == []
    assert r["snapshot_end"] is False


async def test_stream_delivers_ticks_until_cancelled(sim: Any) -> None:
    # The subscription starts with a full quote (bid, ask, last, high, low, close, open:
    # 7 tickPrice); each price move then streams bid, ask and last (3 tickPrice).
    async with live_flow(sim, "stream", "AAPL", "13") as live:
        with anyio.fail_after(FAIL_AFTER):
            await live.wait_line("STREAMING")
            sim.set_price("AAPL", 200.0)
            sim.set_price("AAPL", 201.0)
            report = await live.finish()
    assert report.rc == 0, report
    assert_clean(report)
    r = report.result
    assert r["errors"] == []
    assert r["market_data_types"] == [1]
    assert r["snapshot_end"] is False
    assert len(r["prices"]) >= 13
    assert {p["tickType"] for p in r["prices"][:7]} == {1, 2, 4, 6, 7, 9, 14}
    lasts = [p["price"] for p in r["prices"] if p["tickType"] == 4]
    assert lasts[-2:] == [200.0, 201.0]
    bids = [p["price"] for p in r["prices"] if p["tickType"] == 1]
    asks = [p["price"] for p in r["prices"] if p["tickType"] == 2]
    assert bids[-1] <= 201.0 <= asks[-1]


# ---------------------------------------------------------------------------- orders


async def test_market_order_fills_and_updates_positions_and_account(sim: Any) -> None:
    before = (await ok_flow(sim, "sync")).result
    fill = await ok_flow(sim, "market_order", "AAPL", "BUY", "10", "mkt-ref-1")
    r = fill.result
    oid = r["order_id"]
    assert oid == fill.data["next_valid_id"]
    assert r["statuses"][-1] == "Filled"
    assert r["errors"] == []
    final = r["order_statuses"][-1]
    assert final["filled"] == 10
    assert final["remaining"] == 0
    assert final["clientId"] == 1
    assert final["avgFillPrice"] > 0
    assert len(r["executions"]) == 1
    execution = r["executions"][0]
    assert execution["reqId"] == -1
    assert execution["side"] == "BOT"
    assert execution["shares"] == 10
    assert execution["orderRef"] == "mkt-ref-1"
    assert execution["acctNumber"] == sim.account
    assert execution["price"] == final["avgFillPrice"]
    assert execution["permId"] == final["permId"] != 0
    assert {o["order"]["permId"] for o in r["open_orders"]} == {final["permId"]}
    assert len(r["commissions"]) == 1
    commission = r["commissions"][0]
    assert commission["execId"] == execution["execId"]
    assert commission["commission"] == 1.0  # 10 sh x 0.005 is below the 1.00 minimum
    assert commission["currency"] == "USD"
    # The commission report comes after the execution it belongs to.
    assert r["sequence"].index("execDetails:") < r["sequence"].index("commissionReport")

    after = (await ok_flow(sim, "sync", client_id=2)).result
    delta = position_of(after["positions"]["items"], "AAPL") - position_of(
        before["positions"]["items"], "AAPL"
    )
    assert delta == 10
    cash_before = account_value(before["account_updates"]["values"], "TotalCashValue")
    cash_after = account_value(after["account_updates"]["values"], "TotalCashValue")
    assert cash_after == pytest.approx(cash_before - 10 * execution["price"] - 1.0, abs=0.01)
    portfolio = [p for p in after["account_updates"]["portfolio"] if p["symbol"] == "AAPL"]
    assert portfolio[0]["position"] == position_of(after["positions"]["items"], "AAPL")
    # Another client sees the fill through reqExecutions and reqCompletedOrders.
    execs = after["executions"]["executions"]
    assert [e["execId"] for e in execs] == [execution["execId"]]
    assert execs[0]["reqId"] == after["executions"]["req_id"]
    assert [c["execId"] for c in after["executions"]["commissions"]] == [execution["execId"]]
    completed = after["completed_orders"]["items"]
    assert [(c["symbol"], c["status"], c["permId"]) for c in completed] == [
        ("AAPL", "Filled", final["permId"])
    ]
    assert after["open_orders"]["open_orders"] == []
    # The plain reqExecutions query gives the same execution and its commission.
    plain = (await ok_flow(sim, "executions", client_id=3)).result
    assert plain["end"] is True
    assert [(e["execId"], e["orderId"], e["clientId"]) for e in plain["executions"]] == [
        (execution["execId"], oid, 1)
    ]
    assert [c["commission"] for c in plain["commissions"]] == [1.0]


async def test_sell_market_order_reduces_the_position(sim: Any) -> None:
    bought = (await ok_flow(sim, "market_order", "MSFT", "BUY", "7", "open")).result
    sold = (await ok_flow(sim, "market_order", "MSFT", "SELL", "3", "close")).result
    # A new session of the same client id is told the next unused order id.
    assert sold["order_id"] == bought["order_id"] + 1
    assert sold["statuses"][-1] == "Filled"
    assert [e["side"] for e in sold["executions"]] == ["SLD"]
    positions = (await ok_flow(sim, "positions")).result["items"]
    assert position_of(positions, "MSFT") == 4
    # Closing part of a position realizes PnL: (price - avgCost) x qty - commission.
    avg_cost = bought["executions"][0]["price"] + 1.0 / 7  # avgCost includes commission
    expected = (sold["executions"][0]["price"] - avg_cost) * 3 - 1.0
    assert sold["commissions"][0]["realizedPNL"] == pytest.approx(expected, abs=0.01)


async def test_portfolio_realized_pnl_is_per_position(sim: Any) -> None:
    await ok_flow(sim, "market_order", "AAPL", "BUY", "10", "keep")
    await ok_flow(sim, "market_order", "MSFT", "BUY", "7", "open")
    sold = (await ok_flow(sim, "market_order", "MSFT", "SELL", "3", "close")).result
    realized = sold["commissions"][0]["realizedPNL"]
    assert realized is not None
    assert realized != 0
    updates = (await ok_flow(sim, "account_updates")).result
    rows = {p["symbol"]: p for p in updates["portfolio"]}
    assert rows["MSFT"]["realizedPNL"] == pytest.approx(realized, abs=0.01)
    assert rows["AAPL"]["realizedPNL"] == 0.0  # nothing of AAPL was ever closed
    assert account_value(updates["values"], "RealizedPnL") == pytest.approx(realized, abs=0.01)


async def test_limit_order_rests_is_modified_and_cancelled(sim: Any) -> None:
    report = await ok_flow(
        sim, "limit_order", "AAPL", "BUY", "5", "100.00", "lmt-ref", "--modify", "101.5", "--cancel"
    )
    r = report.result
    oid = r["order_id"]
    assert r["initial_status"] in ("Submitted", "PreSubmitted")
    assert r["statuses"][-1] == "Cancelled"
    assert "Filled" not in r["statuses"]
    assert r["executions"] == []
    modified = r["modified"]["open_orders"]
    assert modified[-1]["lmtPrice"] == 101.5
    assert modified[-1]["order"]["totalQuantity"] == 5
    assert modified[-1]["order"]["orderRef"] == "lmt-ref"
    first_open = r["open_orders"][0]
    assert first_open["lmtPrice"] == 100.0
    assert first_open["order"]["orderType"] == "LMT"
    assert first_open["order"]["action"] == "BUY"
    assert first_open["order"]["account"] == sim.account
    # One permId for the order's whole life.
    assert len({s["permId"] for s in r["order_statuses"]}) == 1
    assert codes(r["errors"], oid) == [202]
    cancelled = [s for s in r["order_statuses"] if s["status"] == "Cancelled"][-1]
    assert cancelled["filled"] == 0
    assert cancelled["remaining"] == 5

    # Nothing is left open; the cancelled order is a completed order.
    assert (await ok_flow(sim, "open_orders")).result["open_orders"] == []
    completed = (await ok_flow(sim, "completed_orders", client_id=3)).result["items"]
    assert [(c["status"], c["order"]["lmtPrice"]) for c in completed] == [("Cancelled", 101.5)]


async def test_resting_limit_order_is_listed_per_client(sim: Any) -> None:
    placed = (await ok_flow(sim, "limit_order", "AAPL", "BUY", "2", "50.00", "rest")).result
    oid = placed["order_id"]
    # The flow returns at the first working status; Submitted may or may not be in yet.
    assert placed["statuses"] in (["PreSubmitted"], ["PreSubmitted", "Submitted"])

    own = (await ok_flow(sim, "open_orders", client_id=1)).result
    assert [o["orderId"] for o in own["open_orders"]] == [oid]
    assert own["open_orders"][0]["status"] == "Submitted"
    assert own["open_orders"][0]["order"]["orderRef"] == "rest"
    assert [s["status"] for s in own["order_statuses"]] == ["Submitted"]

    other = (await ok_flow(sim, "open_orders", client_id=2)).result
    assert other["open_orders"] == []

    everyone = (await ok_flow(sim, "all_open_orders", client_id=2)).result
    assert [(o["orderId"], o["order"]["clientId"]) for o in everyone["open_orders"]] == [(oid, 1)]


async def test_limit_order_fills_when_the_price_crosses_it(sim: Any) -> None:
    sim.set_price("NVDA", 120.0)
    async with live_flow(
        sim, "limit_order", "NVDA", "BUY", "5", "115.00", "cross", "--wait-fill"
    ) as live:
        with anyio.fail_after(FAIL_AFTER):
            line = await live.wait_line("WORKING")
            sim.set_price("NVDA", 114.0)
            report = await live.finish()
    assert report.rc == 0, report
    assert_clean(report)
    r = report.result
    assert line == f"WORKING {r['order_id']}"
    assert r["initial_status"] in ("PreSubmitted", "Submitted")
    assert r["statuses"][-2:] == ["Submitted", "Filled"]
    assert len(r["executions"]) == 1
    execution = r["executions"][0]
    assert execution["shares"] == 5
    assert execution["price"] <= 115.0
    assert execution["orderRef"] == "cross"
    assert len(r["commissions"]) == 1


async def test_stop_order_is_held_until_triggered(sim: Any) -> None:
    sim.set_price("TSLA", 240.0)
    report = await ok_flow(sim, "stop_order", "TSLA", "BUY", "3", "260.00", "stp", "--cancel")
    r = report.result
    assert r["initial_status"] == "PreSubmitted"
    assert r["open_orders"][0]["order"]["orderType"] == "STP"
    assert r["open_orders"][0]["auxPrice"] == 260.0
    # Held (never Submitted) until cancelled.
    assert r["statuses"] == ["PreSubmitted", "Cancelled"]
    assert codes(r["errors"], r["order_id"]) == [202]


async def test_stop_limit_order_is_held_until_triggered(sim: Any) -> None:
    sim.set_price("TSLA", 240.0)
    report = await ok_flow(
        sim, "stop_limit_order", "TSLA", "SELL", "3", "219.00", "220.00", "stplmt"
    )
    r = report.result
    assert r["initial_status"] == "PreSubmitted"
    assert r["statuses"] == ["PreSubmitted"]
    opened = r["open_orders"][0]
    assert opened["order"]["orderType"] == "STP LMT"
    assert opened["lmtPrice"] == 219.0
    assert opened["auxPrice"] == 220.0
    assert r["executions"] == []


async def test_whatif_reports_margin_and_places_nothing(sim: Any) -> None:
    report = await ok_flow(sim, "whatif", "AAPL", "BUY", "10")
    r = report.result
    assert r["no_order_status"] is True
    assert r["order_statuses"] == []
    assert r["errors"] == []
    assert r["what_if_flag"] is True
    state = r["state"]
    for key in ("initMarginBefore", "maintMarginBefore", "initMarginChange", "maintMarginChange"):
        assert state[key] not in ("", None), state
        float(state[key])
    assert float(state["initMarginChange"]) > 0
    assert state["commission"] == 1.0
    assert state["commissionCurrency"] == "USD"

    after = (await ok_flow(sim, "sync", client_id=1)).result
    assert after["open_orders"]["open_orders"] == []
    assert after["completed_orders"]["items"] == []
    assert after["executions"]["executions"] == []
    assert position_of(after["positions"]["items"], "AAPL") == 0


async def test_injected_reject_reaches_the_client(sim: Any) -> None:
    sim.faults.reject_next(201, "Order rejected - reason:simulated margin shortfall")
    report = await ok_flow(sim, "place_expect_error", "AAPL", "MKT", "BUY", "1")
    r = report.result
    assert r["error"] == {
        "id": r["order_id"],
        "code": 201,
        "msg": "Order rejected - reason:simulated margin shortfall",
    }
    assert r["executions"] == []
    # Real TWS may or may not follow a reject with orderStatus Inactive.
    assert r["statuses"] in ([], ["Inactive"])
    # The reject is one-shot: the next order goes through.
    fill = (await ok_flow(sim, "market_order", "AAPL", "BUY", "1", "after-reject")).result
    assert fill["statuses"][-1] == "Filled"


async def test_unsupported_order_type_is_refused(sim: Any) -> None:
    report = await ok_flow(sim, "place_expect_error", "AAPL", "TRAIL", "BUY", "1", "--aux", "1")
    r = report.result
    assert r["error"]["id"] == r["order_id"]
    assert r["error"]["code"] == 387
    assert r["executions"] == []


async def test_order_for_unknown_symbol_is_error_200(sim: Any) -> None:
    report = await ok_flow(sim, "place_expect_error", "NOSUCHSYM", "MKT", "BUY", "1")
    r = report.result
    assert r["error"]["code"] == 200
    assert r["open_orders"] == []


# Field counts (message id included) of every message ibapi 9.81 decodes at server
# version 157, for plain STK orders and contracts without secIds (tws-protocol.md §3 and
# ibapi's decoder.py/orderdecoder.py). ibapi drops exact-count messages with a wrong
# count, and its procedural decoders silently ignore trailing extra fields, so the
# trace catches layouts that ibapi itself would swallow.
FIELD_COUNTS_157 = {
    "1": 7,  # tickPrice
    "2": 5,  # tickSize
    "3": 12,  # orderStatus
    "4": 5,  # error
    "5": 120,  # openOrder
    "6": 6,  # updateAccountValue
    "7": 20,  # updatePortfolio
    "8": 3,  # updateAccountTime
    "9": 3,  # nextValidId
    "10": 39,  # contractData (version 8, no secIds)
    "11": 31,  # execDetails
    "15": 3,  # managedAccounts
    "46": 5,  # tickString
    "49": 3,  # currentTime
    "52": 3,  # contractDataEnd
    "53": 2,  # openOrderEnd
    "54": 3,  # accountDownloadEnd
    "55": 3,  # execDetailsEnd
    "57": 3,  # tickSnapshotEnd
    "58": 4,  # marketDataType
    "59": 8,  # commissionReport
    "61": 16,  # position
    "62": 2,  # positionEnd
    "63": 7,  # accountSummary
    "64": 3,  # accountSummaryEnd
    "73": 8,  # accountUpdateMulti
    "74": 3,  # accountUpdateMultiEnd
    "94": 5,  # pnl
    "101": 92,  # completedOrder
    "102": 1,  # completedOrdersEnd
}


async def test_every_message_has_the_157_field_count(sim: Any) -> None:
    await ok_flow(sim, "market_order", "AAPL", "BUY", "10", "wire")
    await ok_flow(sim, "limit_order", "AAPL", "BUY", "1", "100", "gone", "--cancel")
    await ok_flow(sim, "limit_order", "MSFT", "SELL", "1", "9999", "resting")
    wire: list[list[Any]] = []
    for flow in (
        ("sync",),
        ("contract_details", "AAPL"),
        ("snapshot", "AAPL"),
        ("account_summary",),
        ("pnl",),
    ):
        wire += (await ok_flow(sim, "--trace", *flow)).data["wire"]
    seen = {msg_id for msg_id, _, _ in wire}
    assert set(FIELD_COUNTS_157) <= seen, sorted(set(FIELD_COUNTS_157) - seen)
    wrong = [
        (msg_id, count, fields)
        for msg_id, count, fields in wire
        if FIELD_COUNTS_157.get(msg_id, count) != count
    ]
    assert wrong == [], wrong


# ---------------------------------------------------------------------------- faults


async def test_connectivity_notices_reach_the_client(sim: Any) -> None:
    async with live_flow(sim, "wait_errors", "2") as live:
        with anyio.fail_after(FAIL_AFTER):
            await live.wait_line("READY")
            sim.faults.send_notice(1100)
            sim.faults.send_notice(1102)
            report = await live.finish()
    assert report.rc == 0, report
    assert_clean(report)
    errors = report.result["errors"]
    assert [(e["id"], e["code"]) for e in errors] == [(-1, 1100), (-1, 1102)]
    assert all(e["msg"] for e in errors)
    assert "Connectivity between IB and" in errors[0]["msg"]


async def test_farm_notice_can_be_injected(sim: Any) -> None:
    async with live_flow(sim, "wait_errors", "1") as live:
        with anyio.fail_after(FAIL_AFTER):
            await live.wait_line("READY")
            sim.faults.send_notice(2103)
            report = await live.finish()
    assert report.rc == 0, report
    assert [(e["id"], e["code"]) for e in report.result["errors"]] == [(-1, 2103)]


async def test_drop_all_closes_the_connection(sim: Any) -> None:
    async with live_flow(sim, "wait_disconnect") as live:
        with anyio.fail_after(FAIL_AFTER):
            await live.wait_line("READY")
            sim.faults.drop_all()
            report = await live.finish()
    assert report.rc == 0, report
    assert report.data["connection_closed"] is True
    assert report.result["connection_closed"] is True
    assert report.data["callbacks"].get("connectionClosed", 0) >= 1


async def test_duplicate_client_id_is_refused_with_326(sim: Any) -> None:
    async with live_flow(sim, "wait_disconnect", client_id=5) as first:
        with anyio.fail_after(FAIL_AFTER):
            await first.wait_line("READY")
            second = await run_flow(sim, "connect", client_id=5)
            assert second.rc == 0, second
            assert second.data["connected"] is False
            assert second.data["next_valid_id"] is None
            assert second.data["connection_closed"] is True
            assert [(e["id"], e["code"]) for e in second.data["errors"]] == [(-1, 326)]
            assert "already in use" in second.data["errors"][0]["msg"]
            # The first connection was not disturbed: it is still there to be dropped.
            sim.faults.drop_all()
            first_report = await first.finish()
    assert first_report.rc == 0, first_report
    assert first_report.data["errors_after_ready"] == []

    # Once the first connection is gone the id is free again.
    again = await ok_flow(sim, "connect", client_id=5)
    assert again.data["connected"] is True


async def test_handshake_stall_never_completes_connect(sim: Any) -> None:
    sim.faults.set_handshake_stall(True)
    async with live_flow(sim, "connect", deadline=30.0) as live:
        # Absence check: READY must not come; 3 s is far above a normal handshake.
        with anyio.move_on_after(3.0) as scope:
            await live.wait_line("READY")
        assert scope.cancelled_caught, "connect completed although the handshake stalls"
        assert live.proc.returncode is None
        live.proc.terminate()
        with anyio.fail_after(10):
            rc = await live.proc.wait()
    assert rc == -signal.SIGTERM


async def test_silent_server_never_answers_a_new_handshake(sim: Any) -> None:
    sim.faults.set_silent(True)
    report = await run_flow(sim, "current_time", deadline=2.0)
    assert report.rc == 3, report
    assert report.data["timeout"] == "handshake (server version reply)"
    assert report.data["connected"] is False


async def test_silent_server_swallows_everything_on_a_live_connection(sim: Any) -> None:
    async with live_flow(sim, "wait_errors", "1", "--wait-timeout", "2") as live:
        with anyio.fail_after(FAIL_AFTER):
            await live.wait_line("READY")
            sim.faults.set_silent(True)
            sim.faults.send_notice(1100)
            report = await live.finish()
    assert report.rc == 3, report
    assert report.data["timeout"] == "1 errors with id -1"
    assert report.result["errors"] == []
    assert report.data["connection_closed"] is False


async def test_latency_delays_but_does_not_break(sim: Any) -> None:
    sim.faults.set_latency(0.2)
    report = await ok_flow(sim, "contract_details", "SPY")
    assert report.result["details"][0]["contract"]["conId"] == 756733


async def test_partial_fills_add_up(sim: Any) -> None:
    sim.set_partial_fill(4)
    async with live_flow(sim, "market_order", "KO", "BUY", "10", "partial") as live:
        with anyio.fail_after(FAIL_AFTER):
            await live.wait_line("FIRST_FILL")
            # Each market move lets the engine fill one more chunk of at most 4 shares.
            sim.set_price("KO", 62.0)
            sim.set_price("KO", 62.5)
            report = await live.finish()
    assert report.rc == 0, report
    assert_clean(report)
    r = report.result
    assert [e["shares"] for e in r["executions"]] == [4, 4, 2]
    assert [e["cumQty"] for e in r["executions"]] == [4, 8, 10]
    assert len({e["execId"] for e in r["executions"]}) == 3
    assert r["statuses"][-1] == "Filled"
    fills = [(s["filled"], s["remaining"]) for s in r["order_statuses"] if s["filled"]]
    assert fills == [(4, 6), (8, 2), (10, 0)]
    assert sorted(c["execId"] for c in r["commissions"]) == sorted(
        e["execId"] for e in r["executions"]
    )


# --------------------------------------------------------------------------- child simulator


async def test_exit_fault_closes_the_connection_of_a_child_simulator(spawn_sim: Any) -> None:
    async with spawn_sim() as child, live_flow(child, "wait_disconnect") as live:
        with anyio.fail_after(FAIL_AFTER):
            await live.wait_line("READY")
            with pytest.raises((anyio.EndOfStream, anyio.IncompleteRead, OSError)):
                await child.control("exit 7")  # dies before it can answer
            assert await child.wait_exit() == 7
            report = await live.finish()
    assert report.rc == 0, report
    assert report.result["connection_closed"] is True


async def test_state_file_keeps_orders_and_fills_across_kill_9(
    spawn_sim: Any, state_file: Path
) -> None:
    async with spawn_sim("--state-file", str(state_file)) as child:
        filled = await ok_flow(child, "market_order", "XOM", "BUY", "6", "kept-fill")
        resting = await ok_flow(child, "limit_order", "XOM", "BUY", "2", "50", "kept-rest")
        child.process.kill()
        await child.wait_exit()

    async with spawn_sim("--state-file", str(state_file)) as child:
        r = (await ok_flow(child, "sync")).result
    assert position_of(r["positions"]["items"], "XOM") == 6
    assert [o["order"]["orderRef"] for o in r["open_orders"]["open_orders"]] == ["kept-rest"]
    assert [c["status"] for c in r["completed_orders"]["items"]] == ["Filled"]
    [execution] = r["executions"]["executions"]
    assert execution["orderRef"] == "kept-fill"
    assert execution["execId"] == filled.result["executions"][0]["execId"]
    assert resting.result["order_id"] > filled.result["order_id"]
