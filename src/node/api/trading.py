"""The Pi's trading routes: orders, cancels, the kill switch, account, positions, quotes.

Thin: every decision is the order service's or the gate's; a route reads the request,
calls one service method and renders the result or a problem.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from node.api.problems import problem
from node.api.schemas import OrderRequest, validation_errors
from node.audit import AuditStore, OrderRecord, rfc3339
from node.broker import Broker, BrokerError, UnknownSymbol
from node.order_status import OPEN, TERMINAL
from node.orders import OrderProblem, OrderService, cancel_results

MAX_BODY = 64 * 1024
MAX_QUOTE_SYMBOLS = 20
DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT = 50, 500


class TradingNode(Protocol):
    """What the trading routes need from the daemon."""

    @property
    def state(self) -> str: ...

    @property
    def orders(self) -> OrderService: ...

    @property
    def store(self) -> AuditStore: ...

    @property
    def broker(self) -> Broker: ...

    def retry_after(self) -> float: ...

    async def kill(self, scope: str, request_id: str) -> dict[str, Any]: ...

    def reads_as_of(self) -> datetime | None: ...

    @property
    def trading_mode(self) -> str: ...


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def order_json(record: OrderRecord) -> dict[str, Any]:
    return record.to_api()


def from_problem(exc: OrderProblem, request: Request) -> Response:
    # Rounded up: a client that waits as told must not come back a moment too soon.
    headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))} if exc.retry_after else None
    return problem(exc.slug, exc.status, exc.detail, request_id(request), headers=headers,
                   **exc.extra)  # fmt: skip


async def read_json(request: Request) -> Any:
    """The body as JSON, or an OrderProblem for what a client must fix."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise OrderProblem(
            "unsupported-media-type", 415, "send the body as Content-Type: application/json"
        )
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise OrderProblem("payload-too-large", 413, f"the body may be at most {MAX_BODY} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise OrderProblem(
                "payload-too-large", 413, f"the body may be at most {MAX_BODY} bytes"
            )
    try:
        return json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OrderProblem("malformed-request", 400, f"the body is not JSON: {exc}") from None
    except RecursionError:  # nesting deeper than the parser's stack, well within MAX_BODY
        raise OrderProblem("malformed-request", 400, "the body is nested too deeply") from None


def parse_order(raw: Any) -> OrderRequest:
    if not isinstance(raw, dict):
        raise OrderProblem("malformed-request", 400, "the body must be a JSON object")
    if not raw.get("client_order_id"):
        raise OrderProblem(
            "malformed-request", 400, "client_order_id is required: it makes a retry safe"
        )
    try:
        return OrderRequest.model_validate(raw)
    except ValidationError as exc:
        raise OrderProblem(
            "validation-error", 422, "the order is not valid", errors=validation_errors(exc)
        ) from None


def handler(
    route: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Turn an OrderProblem raised anywhere in a route into its problem response."""

    async def wrapped(request: Request) -> Response:
        try:
            return await route(request)
        except OrderProblem as exc:
            return from_problem(exc, request)

    return wrapped


def trading_routes(node: TradingNode) -> list[Route]:
    def require_connected(reads: bool = False) -> None:
        state = node.state
        if state == "SERVING" or (reads and state == "DEGRADED"):
            return
        raise OrderProblem("not-ready", 503, f"the node is {state}", node.retry_after(),
                           state=state)  # fmt: skip

    async def place(request: Request) -> Response:
        order = parse_order(await read_json(request))
        placed = await node.orders.place(order, request_id(request))
        body = order_json(placed.record)
        if placed.replayed:
            return JSONResponse(body, headers={"Idempotent-Replayed": "true"})
        return JSONResponse(
            body, status_code=201, headers={"Location": f"/v1/orders/{placed.record.id}"}
        )

    async def preview(request: Request) -> Response:
        order = parse_order(await read_json(request))
        require_connected()
        blocks = await node.orders.preview_gates(order)
        try:
            report = await node.orders.what_if(order)
        except UnknownSymbol as exc:
            raise OrderProblem("unknown-symbol", 422, str(exc)) from None
        except BrokerError as exc:
            raise OrderProblem("gateway-unavailable", 503, str(exc), 5.0) from None
        return JSONResponse({
            "order": order.model_dump(mode="json"),
            "commission": _text(report.commission),
            "init_margin_change": _text(report.init_margin_change),
            "maint_margin_change": _text(report.maint_margin_change),
            "equity_with_loan_after": _text(report.equity_with_loan_after),
            "warnings": [report.warning] if report.warning else [],
            "gates": {"would_block_by": [b.slug for b in blocks]},
        })  # fmt: skip

    async def list_orders(request: Request) -> Response:
        params = request.query_params
        status = params.get("status", "open")
        statuses = {"open": OPEN, "closed": TERMINAL, "all": None}.get(status, "?")
        if statuses == "?":
            raise OrderProblem(
                "validation-error",
                422,
                "status must be open, closed or all",
                errors=[{"pointer": "/status", "detail": "open|closed|all"}],
            )
        try:
            limit = int(params.get("limit", DEFAULT_LIST_LIMIT))
            after = _time(params.get("after"))
            until = _time(params.get("until"))
        except ValueError as exc:
            raise OrderProblem("validation-error", 422, str(exc)) from None
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise OrderProblem("validation-error", 422, f"limit must be 1 to {MAX_LIST_LIMIT}")
        symbols = [s.strip().upper() for s in params.get("symbols", "").split(",") if s.strip()]
        records = await node.store.list_orders(
            statuses=statuses if isinstance(statuses, frozenset) else None,
            symbols=symbols or None, after=after, until=until, limit=limit,
        )  # fmt: skip
        return JSONResponse({"items": [order_json(r) for r in records], "next": None})

    async def get_order(request: Request) -> Response:
        record = await node.store.get_order_by_id(request.path_params["id"])
        if record is None:
            raise OrderProblem("not-found", 404, f"no order {request.path_params['id']}")
        return JSONResponse(order_json(record))

    async def by_client_id(request: Request) -> Response:
        cid = request.path_params["cid"]
        record = await node.store.get_order(cid)
        if record is None:
            raise OrderProblem("not-found", 404, f"no order was accepted with client_order_id "
                               f"{cid}; it is safe to send it again")  # fmt: skip
        return JSONResponse(order_json(record))

    async def cancel_one(request: Request) -> Response:
        record = await node.store.get_order_by_id(request.path_params["id"])
        if record is None:
            raise OrderProblem("not-found", 404, f"no order {request.path_params['id']}")
        updated = await node.orders.cancel(record, request_id(request))
        return JSONResponse(order_json(updated), status_code=202)

    async def cancel_all(request: Request) -> Response:
        if not node.broker.connected:
            raise OrderProblem("gateway-unavailable", 503, "the gateway is not connected", 5.0)
        results = await node.orders.cancel_open(request_id(request))
        items = cancel_results(results, request_id(request))
        return JSONResponse({"items": items}, status_code=207)

    async def kill(request: Request) -> Response:
        scope = request.query_params.get("scope", "node")
        if scope not in ("node", "account"):
            raise OrderProblem("validation-error", 422, "scope must be node or account")
        result = await node.kill(scope, request_id(request))
        return JSONResponse(result, status_code=202)

    async def account(request: Request) -> Response:
        require_connected(reads=True)
        values = node.broker.account_values()
        return JSONResponse({
            "account_id": values.get("AccountCode") or "",
            "trading_mode": node.trading_mode,
            "currency": "USD",
            "equity": values.get("NetLiquidation"),
            "cash": values.get("TotalCashValue"),
            "buying_power": values.get("BuyingPower"),
            "available_funds": values.get("AvailableFunds"),
            "excess_liquidity": values.get("ExcessLiquidity"),
            "initial_margin": values.get("InitMarginReq"),
            "maintenance_margin": values.get("MaintMarginReq"),
            "updated_at": _now(),
            **_staleness(node),
        })  # fmt: skip

    async def positions(request: Request) -> Response:
        require_connected(reads=True)
        items = [
            {"symbol": p.symbol, "con_id": p.con_id, "sec_type": "STK", "currency": "USD",
             "qty": _text(p.qty), "side": "long" if p.qty > 0 else "short",
             "avg_entry_price": _text(p.avg_cost), "market_price": _text(p.market_price),
             "market_value": _text(p.market_value), "unrealized_pl": _text(p.unrealized_pl),
             "realized_pl": _text(p.realized_pl), "updated_at": _now()}
            for p in node.broker.positions()
        ]  # fmt: skip
        return JSONResponse({"items": items, **_staleness(node)})

    async def quotes(request: Request) -> Response:
        require_connected(reads=True)
        symbols = [s.strip().upper() for s in request.query_params.get("symbols", "").split(",")
                   if s.strip()]  # fmt: skip
        if not symbols:
            raise OrderProblem("validation-error", 422, "give ?symbols=AAPL,MSFT")
        if len(symbols) > MAX_QUOTE_SYMBOLS:
            raise OrderProblem(
                "validation-error", 422, f"at most {MAX_QUOTE_SYMBOLS} symbols per call"
            )
        if node.state == "DEGRADED":
            return JSONResponse({"items": _cached_quotes(node, symbols)})
        try:
            reports = await node.broker.quotes(symbols)
        except UnknownSymbol as exc:
            raise OrderProblem("unknown-symbol", 422, str(exc)) from None
        except BrokerError as exc:
            raise OrderProblem("gateway-unavailable", 503, str(exc), 5.0) from None
        market_data = node.broker.market_data
        items = [
            {"symbol": q.symbol, "bid": _text(q.bid), "ask": _text(q.ask), "last": _text(q.last),
             "bid_size": _text(q.bid_size), "ask_size": _text(q.ask_size),
             "volume": _text(q.volume), "data_type": q.data_type, "market_data": market_data,
             "timestamp": None, "stale": False, "as_of": _now()}
            for q in reports
        ]  # fmt: skip
        return JSONResponse({"items": items})

    return [
        Route("/v1/orders", handler(place), methods=["POST"]),
        Route("/v1/orders", handler(list_orders), methods=["GET"]),
        Route("/v1/orders", handler(cancel_all), methods=["DELETE"]),
        Route("/v1/orders/preview", handler(preview), methods=["POST"]),
        Route("/v1/orders/by-client-id/{cid}", handler(by_client_id), methods=["GET"]),
        Route("/v1/orders/{id}", handler(get_order), methods=["GET"]),
        Route("/v1/orders/{id}", handler(cancel_one), methods=["DELETE"]),
        Route("/v1/kill", handler(kill), methods=["POST"]),
        Route("/v1/account", handler(account), methods=["GET"]),
        Route("/v1/positions", handler(positions), methods=["GET"]),
        Route("/v1/quotes", handler(quotes), methods=["GET"]),
    ]


def _cached_quotes(node: TradingNode, symbols: list[str]) -> list[dict[str, Any]]:
    """DEGRADED: the last snapshot of each symbol, marked stale with when it was taken."""
    missing = [s for s in symbols if s not in node.broker.last_quotes]
    if missing:
        raise OrderProblem("not-ready", 503, f"the node is DEGRADED and has no earlier quote "
                           f"for {', '.join(missing)}", node.retry_after(),
                           state=node.state)  # fmt: skip
    items = []
    for symbol in symbols:
        q, at = node.broker.last_quotes[symbol]
        items.append({
            "symbol": q.symbol, "bid": _text(q.bid), "ask": _text(q.ask), "last": _text(q.last),
            "bid_size": _text(q.bid_size), "ask_size": _text(q.ask_size),
            "volume": _text(q.volume), "data_type": q.data_type,
            "market_data": node.broker.market_data, "timestamp": None, "stale": True,
            "as_of": rfc3339(at),
        })  # fmt: skip
    return items


def _now() -> str:
    return rfc3339(datetime.now(UTC))


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"{value} has no time zone; use RFC 3339 with Z")
    return parsed


def _staleness(node: TradingNode) -> dict[str, Any]:
    """In DEGRADED the data is IB's last word, marked stale with when it was true."""
    if node.state != "DEGRADED":
        return {"stale": False, "as_of": None}
    as_of = node.reads_as_of()
    return {"stale": True, "as_of": rfc3339(as_of) if as_of else None}
