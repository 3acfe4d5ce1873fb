"""The order path over real HTTP against a daemon and its simulator: gates, idempotency,
IB's answers, cancels, the kill switch, reads, SSE and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from node.audit import AuditUnavailable
from node.broker import BrokerError
from node.sim.state import StateFile
from support import drive, until

pytestmark = pytest.mark.anyio

KEY = "test-key"
HEADERS = {"X-API-Key": KEY}


def market(cid: str, qty: str = "1", side: str = "buy", symbol: str = "AAPL") -> dict[str, Any]:
    return {"client_order_id": cid, "symbol": symbol, "side": side, "type": "market", "qty": qty}


def limit(cid: str, price: str, qty: str = "1") -> dict[str, Any]:
    return {"client_order_id": cid, "symbol": "AAPL", "side": "buy", "type": "limit",
            "qty": qty, "limit_price": price}  # fmt: skip


def ib_orders(node: Any) -> list[dict[str, Any]]:
    """What IB's servers hold: the simulator's state file."""
    return list(StateFile(node.settings.STATE_DIR / "sim-state.json").load()["orders"])


@pytest.fixture
async def trading(node_factory: Any, tmp_path: Path) -> Any:
    arm = tmp_path / "arm_orders_confirmed.txt"
    arm.write_text("armed\n", encoding="utf-8")
    node = await node_factory(ORDERS_ENABLED=True, ARM_ORDERS_FILE=arm)
    await until(lambda: node.state == "SERVING")
    return node


def client(node: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.api_port}", headers=HEADERS,
                             timeout=30)  # fmt: skip


async def order_status(http: httpx.AsyncClient, cid: str) -> str:
    return str((await http.get(f"/v1/orders/by-client-id/{cid}")).json()["status"])


# ---------------------------------------------------------------------- placing


async def test_market_order_fills_and_replays(trading: Any) -> None:
    async with client(trading) as http:
        first = await http.post("/v1/orders", json=market("m-1", "10"))
        assert first.status_code == 201
        order = first.json()
        assert first.headers["location"] == f"/v1/orders/{order['id']}"
        assert order["status"] in ("accepted", "new", "filled")
        assert order["broker_order_id"] is not None
        assert order["account_id"] == "DU1234567"
        await until_status(http, "m-1", "filled")
        with anyio.fail_after(20):  # the commission report follows the fill
            while (filled := (await http.get(f"/v1/orders/{order['id']}")).json())[
                "commission"
            ] != "1":
                pass
        assert (filled["filled_qty"], filled["remaining_qty"]) == ("10", "0")
        again = await http.post("/v1/orders", json=market("m-1", "10"))
        assert again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == order["id"]
        other = await http.post("/v1/orders", json=market("m-1", "11"))
        assert other.status_code == 422
        assert other.json()["type"] == "/problems/idempotency-key-reused"
        positions = (await http.get("/v1/positions")).json()["items"]
        assert [(p["symbol"], p["qty"]) for p in positions] == [("AAPL", "10")]
        account = (await http.get("/v1/account")).json()
        assert account["account_id"] == "DU1234567"
        assert account["stale"] is False
    assert [o["order_ref"] for o in ib_orders(trading)] == ["m-1"]


async def until_status(http: httpx.AsyncClient, cid: str, status: str) -> None:
    with anyio.fail_after(20):
        while await order_status(http, cid) != status:
            pass


async def test_identical_posts_at_once_make_one_ib_order(trading: Any) -> None:
    answers: list[httpx.Response] = []
    async with client(trading) as http:

        async def post() -> None:
            answers.append(await http.post("/v1/orders", json=market("race-1", "3")))

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(post)
    codes = sorted(a.status_code for a in answers)
    assert codes.count(201) == 1
    assert set(codes) <= {200, 201, 409}
    assert [o["order_ref"] for o in ib_orders(trading)].count("race-1") == 1


async def test_ib_reject_is_a_rejected_order(trading: Any) -> None:
    await trading.launcher.control("reject 201 Order rejected - reason:margin")
    async with client(trading) as http:
        response = await http.post("/v1/orders", json=market("rej-1"))
        assert response.status_code == 201
        # ib_async reports IB's refusal as Cancelled, then the error: the 201 says rejected.
        assert response.json()["status"] == "rejected", response.json()
        await until_status(http, "rej-1", "rejected")
        order = (await http.get("/v1/orders/by-client-id/rej-1")).json()
        assert "201" in order["status_reason"]
        assert order["failed_at"] is not None
    await until(lambda: "order_rejected" in trading.notifier.kinds())
    [notice] = [n for n in trading.notifier.notices if n.kind == "order_rejected"]
    assert "rej-1" in notice.message
    assert "201" in notice.message


async def test_unknown_symbol_leaves_the_id_free(trading: Any) -> None:
    async with client(trading) as http:
        refused = await http.post("/v1/orders", json=market("u-1", symbol="ZZZZZ"))
        assert refused.status_code == 422
        assert refused.json()["type"] == "/problems/unknown-symbol"
        assert (await http.get("/v1/orders/by-client-id/u-1")).status_code == 404
        assert (await http.post("/v1/orders", json=market("u-1"))).status_code == 201


# ---------------------------------------------------------------------- gates


async def test_disarmed_refuses_and_the_id_stays_free(trading: Any) -> None:
    trading.settings.arm_orders_file.unlink()
    async with client(trading) as http:
        refused = await http.post("/v1/orders", json=market("g-1"))
        assert refused.status_code == 403
        assert refused.json()["type"] == "/problems/not-armed"
        preview = await http.post("/v1/orders/preview", json=market("g-1", "100"))
        assert preview.status_code == 200  # preview works while disarmed
        body = preview.json()
        assert body["gates"]["would_block_by"] == ["not-armed"]
        assert body["commission"] is not None
        assert body["init_margin_change"] is not None
        trading.settings.arm_orders_file.write_text("armed\n")
        assert (await http.post("/v1/orders", json=market("g-1"))).status_code == 201
    assert [o["order_ref"] for o in ib_orders(trading)] == ["g-1"]
    rows = await trading.daemon.store.journal_since(0, kinds=["gate_refusal", "arm_file"])
    assert [r.kind for r in rows][:1] == ["gate_refusal"]
    assert "arm_file" in [r.kind for r in rows]


@pytest.mark.parametrize(
    ("settings", "body", "status", "slug"),
    [
        ({"ORDERS_ENABLED": False}, market("r-1"), 403, "orders-disabled"),
        ({"MAX_ORDER_QTY": 5}, market("r-1", "10"), 403, "risk-limit-exceeded"),
        ({"MAX_ORDER_NOTIONAL": 100}, market("r-1", "10"), 403, "risk-limit-exceeded"),
        ({"SYMBOL_ALLOWLIST": "SPY,QQQ"}, market("r-1"), 403, "risk-limit-exceeded"),
        ({"MAX_OPEN_ORDERS": 0}, market("r-1"), 403, "risk-limit-exceeded"),
    ],
)
async def test_gates_over_http(
    node_factory: Any, tmp_path: Path, settings: dict[str, Any], body: dict[str, Any],
    status: int, slug: str,
) -> None:  # fmt: skip
    arm = tmp_path / "arm.txt"
    arm.write_text("armed\n")
    node = await node_factory(**{"ORDERS_ENABLED": True, "ARM_ORDERS_FILE": arm, **settings})
    await until(lambda: node.state == "SERVING")
    async with client(node) as http:
        refused = await http.post("/v1/orders", json=body)
        assert refused.status_code == status
        assert refused.json()["type"] == f"/problems/{slug}"
        assert refused.headers["content-type"] == "application/problem+json"
        assert (await http.get("/v1/orders/by-client-id/r-1")).status_code == 404
        metrics = (await http.get("/metrics")).text
    assert "ibkr_node_gate_refusals_total" in metrics


async def test_rate_limit_is_429_with_retry_after(node_factory: Any, tmp_path: Path) -> None:
    arm = tmp_path / "arm.txt"
    arm.write_text("armed\n")
    node = await node_factory(ORDERS_ENABLED=True, ARM_ORDERS_FILE=arm, MAX_ORDERS_PER_MINUTE=1)
    await until(lambda: node.state == "SERVING")
    async with client(node) as http:
        assert (await http.post("/v1/orders", json=market("rl-1"))).status_code == 201
        limited = await http.post("/v1/orders", json=market("rl-2"))
        assert limited.status_code == 429
        assert limited.json()["type"] == "/problems/rate-limited"
        assert int(limited.headers["retry-after"]) >= 1


@pytest.mark.parametrize("lost", ["connectivity_lost", "heartbeat_lost"])
async def test_no_order_in_the_instant_before_degraded(trading: Any, lost: str) -> None:
    """IB's 1100 (or the last missed heartbeat) is heard a moment before the state machine
    leaves SERVING: an order in that moment is refused, not sent to an IB that cannot act."""
    setattr(trading.daemon.broker, lost, True)
    async with client(trading) as http:
        refused = await http.post("/v1/orders", json=market("i-1"))
        assert (refused.status_code, refused.json()["type"]) == (503, "/problems/not-ready")
        assert refused.headers["retry-after"]
        assert (await http.get("/v1/state")).json()["gates"]["can_place_orders"] is False
    assert trading.state == "SERVING"
    assert await trading.daemon.store.get_order("i-1") is None  # nothing written, nothing sent


async def test_not_serving_is_503_with_retry_after(node_factory: Any, tmp_path: Path) -> None:
    node = await node_factory(at="2026-11-22T12:00:00-05:00", ORDERS_ENABLED=True)  # Sunday
    await until(lambda: node.daemon.events_handled >= 1)
    async with client(node) as http:
        refused = await http.post("/v1/orders", json=market("n-1"))
        assert refused.status_code == 503
        assert refused.json()["type"] == "/problems/not-ready"
        assert refused.json()["state"] == "OFF"
        assert refused.headers["retry-after"] == "5"
        for path in ("/v1/account", "/v1/positions", "/v1/quotes?symbols=AAPL"):
            assert (await http.get(path)).status_code == 503


async def test_kill_switch_latches_cancels_and_blocks(trading: Any) -> None:
    async with client(trading) as http:
        resting = (await http.post("/v1/orders", json=limit("k-1", "50"))).json()
        assert resting["status"] in ("accepted", "new")
        killed = await http.post("/v1/kill")
        assert killed.status_code == 202
        assert killed.json()["pending"] is False
        await until(lambda: "kill_switch" in trading.notifier.kinds())
        assert [c["id"] for c in killed.json()["canceled"]] == [resting["id"]]
        await until_status(http, "k-1", "canceled")
        refused = await http.post("/v1/orders", json=market("k-2"))
        assert (refused.status_code, refused.json()["type"]) == (
            403,
            "/problems/kill-switch-engaged",
        )
        state = (await http.get("/v1/state")).json()
        assert state["gates"]["kill_switch"] is True
        assert "kill-switch-engaged" in state["gates"]["blocked_by"]
        trading.daemon.command("clear-kill")
        assert (await http.post("/v1/orders", json=market("k-2"))).status_code == 201


async def test_a_kill_the_journal_cannot_record_still_cancels(
    trading: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The latch and the cancels come first: a full disk costs the kill its journal rows,
    not its effect."""
    async with client(trading) as http:
        resting = (await http.post("/v1/orders", json=limit("kj-1", "50"))).json()

        async def disk_full(*args: Any, **kwargs: Any) -> int:
            raise AuditUnavailable("audit store write failed: database or disk is full")

        monkeypatch.setattr(trading.daemon.trading.store, "journal", disk_full)
        killed = await http.post("/v1/kill")
        assert killed.status_code == 202
        assert [c["id"] for c in killed.json()["canceled"]] == [resting["id"]]
        assert killed.json()["pending"] is False
        await until_status(http, "kj-1", "canceled")
        assert trading.daemon.operator.kill_switch is True


async def test_a_kill_whose_cancel_cannot_go_out_stays_pending(
    trading: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway went away between the latch and the cancel: 202, the cancel pending for
    the next CONNECTED, never a 500."""

    def gateway_gone() -> None:
        raise BrokerError("not connected to the gateway")

    monkeypatch.setattr(trading.daemon.broker, "global_cancel", gateway_gone)
    async with client(trading) as http:
        killed = await http.post("/v1/kill?scope=account")
        assert killed.status_code == 202
        assert killed.json()["pending"] is True
    assert trading.daemon.operator.kill_pending == "account"
    assert trading.daemon.operator.kill_switch is True


async def test_a_kill_that_meets_an_order_being_placed_is_carried_out(
    trading: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kill lands while an order's intent commits: the order is stopped before it is
    sent, and the kill's sweep, which saw the unsent intent, is not left pending for it."""
    store = trading.daemon.trading.store
    real_insert = store.insert_order
    kills: list[dict[str, Any]] = []

    async def insert_then_kill(*args: Any) -> Any:
        result = await real_insert(*args)
        kills.append(await trading.daemon.trading.kill("node", "req-kill"))
        return result

    monkeypatch.setattr(store, "insert_order", insert_then_kill)
    async with client(trading) as http:
        refused = await http.post("/v1/orders", json=market("kr-1"))
        assert (refused.status_code, refused.json()["type"]) == (
            403,
            "/problems/kill-switch-engaged",
        )
        assert (await http.get("/v1/orders/by-client-id/kr-1")).status_code == 404
    [kill] = kills
    assert kill["pending"] is False
    assert trading.daemon.operator.kill_pending is None
    assert trading.daemon.operator.kill_switch is True


async def test_a_later_kill_does_not_narrow_a_pending_account_wide_one(
    trading: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An account-wide cancel still pending (IB's global cancel not yet sent) is carried out
    by the next kill, even one for the node's own orders, before the pending is cleared."""
    trading.daemon.operator.engage_kill("account")
    global_cancels: list[str] = []
    monkeypatch.setattr(trading.daemon.broker, "global_cancel",
                        lambda: global_cancels.append("sent"))  # fmt: skip
    async with client(trading) as http:
        killed = (await http.post("/v1/kill")).json()
    assert (killed["scope"], killed["pending"]) == ("account", False)
    assert global_cancels == ["sent"]
    assert trading.daemon.operator.kill_pending is None


async def test_kill_without_a_gateway_is_pending_until_connected(
    node_factory: Any, tmp_path: Path
) -> None:
    node = await node_factory(at="2026-11-22T12:00:00-05:00")  # OFF: Sunday
    await until(lambda: node.daemon.events_handled >= 1)
    async with client(node) as http:
        killed = (await http.post("/v1/kill?scope=account")).json()
        assert killed["pending"] is True
        assert node.daemon.operator.kill_pending == "account"
        node.daemon.command("start", force=True)
        await until(lambda: node.state == "SERVING")
        assert node.daemon.operator.kill_pending is None
        assert node.daemon.operator.kill_switch is True


# ---------------------------------------------------------------------- cancels


async def test_cancel_one_and_all(trading: Any) -> None:
    async with client(trading) as http:
        first = (await http.post("/v1/orders", json=limit("c-1", "50"))).json()
        await http.post("/v1/orders", json=limit("c-2", "51"))
        await http.post("/v1/orders", json=limit("c-3", "52"))
        canceled = await http.delete(f"/v1/orders/{first['id']}")
        assert canceled.status_code == 202
        assert canceled.json()["status"] == "pending_cancel"
        await until_status(http, "c-1", "canceled")
        again = await http.delete(f"/v1/orders/{first['id']}")
        assert (again.status_code, again.json()["type"]) == (409, "/problems/order-not-cancelable")
        everything = await http.delete("/v1/orders")
        assert everything.status_code == 207
        assert sorted(i["client_order_id"] for i in everything.json()["items"]) == ["c-2", "c-3"]
        await until_status(http, "c-3", "canceled")
        listed = (await http.get("/v1/orders?status=closed&symbols=AAPL&limit=10")).json()
        assert {o["client_order_id"] for o in listed["items"]} == {"c-1", "c-2", "c-3"}
        assert (await http.get("/v1/orders?status=open")).json()["items"] == []
        missing = await http.delete("/v1/orders/01NOSUCHORDER0000000000000")
        assert missing.status_code == 404


# ---------------------------------------------------------------------- reads


async def test_quotes(trading: Any) -> None:
    async with client(trading) as http:
        quotes = (await http.get("/v1/quotes?symbols=AAPL,spy")).json()["items"]
        assert [q["symbol"] for q in quotes] == ["AAPL", "SPY"]
        assert all(q["bid"] and q["ask"] and q["market_data"] == "ok" for q in quotes)
        unknown = await http.get("/v1/quotes?symbols=AAPL,ZZZZZ")
        assert (unknown.status_code, unknown.json()["type"]) == (422, "/problems/unknown-symbol")
        many = ",".join(["AAPL"] * 21)
        assert (await http.get(f"/v1/quotes?symbols={many}")).status_code == 422
        assert (await http.get("/v1/quotes")).status_code == 422


async def test_degraded_reads_are_stale_and_orders_refused(trading: Any) -> None:
    async with client(trading) as http:
        fresh = (await http.get("/v1/quotes?symbols=AAPL")).json()["items"][0]
        assert fresh["stale"] is False
    await trading.launcher.control("notice 1100")
    await until(lambda: trading.state == "DEGRADED")
    async with client(trading) as http:
        cached = (await http.get("/v1/quotes?symbols=AAPL")).json()["items"][0]
        assert cached["stale"] is True
        assert (cached["bid"], cached["ask"]) == (fresh["bid"], fresh["ask"])
        never = await http.get("/v1/quotes?symbols=MSFT")
        assert never.status_code == 503
        account = (await http.get("/v1/account")).json()
        assert account["stale"] is True
        assert account["as_of"] is not None
        positions = (await http.get("/v1/positions")).json()
        assert positions["stale"] is True
        refused = await http.post("/v1/orders", json=market("d-1"))
        assert refused.status_code == 503


# ---------------------------------------------------------------------- events


async def test_sse_streams_and_replays_with_last_event_id(trading: Any) -> None:
    async with client(trading) as http:
        seen: list[tuple[int, str, dict[str, Any]]] = []

        async def listen(headers: dict[str, str], stop_after: int) -> None:
            async with http.stream("GET", "/v1/events?types=order", headers=headers) as stream:
                event: dict[str, str] = {}
                async for line in stream.aiter_lines():
                    if line.startswith(("id:", "event:", "data:")):
                        name, _, value = line.partition(":")
                        event[name] = value.strip()
                    elif not line and "data" in event:
                        seen.append((int(event["id"]), event["event"], json.loads(event["data"])))
                        event = {}
                        if len(seen) >= stop_after:
                            return

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen, {}, 2)
            await until(lambda: any(True for _ in trading.daemon.trading.hub._subscribers))
            await http.post("/v1/orders", json=market("sse-1"))
        assert [name for _, name, _ in seen] == ["order", "order"]
        assert seen[0][2]["event"] == "pending_new"
        assert seen[0][0] < seen[1][0]
        first_id = seen[0][0]
        seen.clear()
        with anyio.fail_after(20):
            await listen({"Last-Event-ID": str(first_id)}, 1)
        assert seen[0][0] > first_id
        bad = await http.get("/v1/events", headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 400


async def test_transitions_are_journaled_and_replayed(trading: Any) -> None:
    with anyio.fail_after(20):  # the journal writer is a task of its own
        store = trading.daemon.store
        while len(rows := await store.journal_since(0, kinds=["transition"])) < 3:  # noqa: ASYNC110
            await anyio.sleep(0.01)  # no event marks a journal write
    assert [r.data["to"] for r in rows] == ["STARTING_GATEWAY", "CONNECTED", "SERVING"]


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("content", "content_type", "status", "slug"),
    [
        (b"{not json", "application/json", 400, "malformed-request"),
        (b"[1, 2]", "application/json", 400, "malformed-request"),
        (b'{"symbol": "AAPL"}', "application/json", 400, "malformed-request"),
        (b"[" * 50000, "application/json", 400, "malformed-request"),  # deeper than the parser
        (json.dumps(market("b-1")).encode(), "text/plain", 415, "unsupported-media-type"),
        (b'{"client_order_id": "b-1", "x": "' + b"a" * 70000 + b'"}', "application/json", 413,
         "payload-too-large"),
        (json.dumps({**market("b-1"), "qty": "lots"}).encode(), "application/json", 422,
         "validation-error"),
        (json.dumps({**market("b-1"), "colour": "red"}).encode(), "application/json", 422,
         "validation-error"),
        (json.dumps({**market("b-1"), "limit_price": "5"}).encode(), "application/json", 422,
         "validation-error"),
        (json.dumps({**market("b 1")}).encode(), "application/json", 422, "validation-error"),
        ("{\"client_order_id\": \"\u00e9\"}".encode(), "application/json", 422,
         "validation-error"),
    ],
)  # fmt: skip
async def test_bad_order_bodies_get_specific_problems(
    trading: Any, content: bytes, content_type: str, status: int, slug: str
) -> None:
    async with client(trading) as http:
        response = await http.post("/v1/orders", content=content,
                                   headers={"Content-Type": content_type})  # fmt: skip
    assert response.status_code == status
    body = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["request_id"] == response.headers["x-request-id"]
    if slug == "validation-error":
        assert body["errors"][0]["pointer"].startswith("/")


async def test_bad_queries_and_ids(trading: Any) -> None:
    async with client(trading) as http:
        for path in (
            "/v1/orders?status=weird",
            "/v1/orders?limit=0",
            "/v1/orders?limit=x",
            "/v1/orders?after=yesterday",
            "/v1/orders?after=2026-01-01T00:00:00",
        ):
            response = await http.get(path)
            assert response.status_code == 422, path
        for path in ("/v1/orders/nope", "/v1/orders/by-client-id/nope"):
            assert (await http.get(path)).status_code == 404
        assert (await http.post("/v1/kill?scope=galaxy")).status_code == 422


async def test_journal_holds_ib_errors_auth_failures_and_config(trading: Any) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{trading.api_port}") as http:
        assert (await http.get("/v1/state")).status_code == 401
    store = trading.daemon.store
    with anyio.fail_after(20):
        while not await store.journal_since(0, kinds=["auth_failure"]):  # noqa: ASYNC110
            await anyio.sleep(0.01)  # written by the journal task, which has no event to await
    errors = await store.journal_since(0, kinds=["ib_error"])
    assert {row.data["code"] for row in errors} >= {2104, 2106, 2158}  # farm notices
    [config] = await store.journal_since(0, kinds=["startup_config"])
    assert config.data["API_KEY"] == "***"
    # ib_async keeps every outgoing IB message under 45 per second.
    assert trading.daemon.broker._ib.client.MaxRequests == 45
    assert trading.daemon.broker._ib.client.RequestsInterval == 1


async def test_window_close_cancels_open_orders_when_asked(
    node_factory: Any, tmp_path: Path
) -> None:
    arm = tmp_path / "arm.txt"
    arm.write_text("armed\n")
    node = await node_factory(
        at="2026-11-23T19:59:00-05:00",
        ORDERS_ENABLED=True,
        ARM_ORDERS_FILE=arm,
        WINDOW_CLOSE_ORDERS="cancel_all",
    )
    await until(lambda: node.state == "SERVING")
    async with client(node) as http:
        assert (await http.post("/v1/orders", json=limit("w-1", "50"))).status_code == 201
        await drive(node.clock, lambda: node.state == "OFF", step=10)
        record = await node.daemon.store.get_order("w-1")
        assert record is not None
        assert record.status in ("pending_cancel", "canceled")
    assert [o["status"] for o in ib_orders(node)] == ["Cancelled"]
