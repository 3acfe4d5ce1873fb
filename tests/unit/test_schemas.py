"""The API's pydantic models: every request rule, the wire formats, the idempotency form, and
that each model yields a JSON Schema for OpenAPI 3.1."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pydantic
import pytest

from node.api import schemas
from node.api.schemas import (
    Account,
    CancelResult,
    KillResult,
    Order,
    OrderList,
    OrderRequest,
    Position,
    PositionList,
    Preview,
    PreviewGates,
    Problem,
    Quote,
    QuoteList,
    StateDocument,
    json_pointer,
    validation_errors,
)
from node.order_status import STATUSES

VALID: dict[str, Any] = {
    "client_order_id": "pi-20260114-0007",
    "symbol": "AAPL",
    "side": "buy",
    "type": "limit",
    "qty": "10",
    "limit_price": "187.50",
}


def body(**changes: Any) -> dict[str, Any]:
    data = {**VALID, **changes}
    return {k: v for k, v in data.items() if v is not ...}


def errors_of(data: dict[str, Any]) -> list[dict[str, str]]:
    with pytest.raises(pydantic.ValidationError) as caught:
        OrderRequest.model_validate(data)
    return validation_errors(caught.value)


def pointers(data: dict[str, Any]) -> list[str]:
    return [e["pointer"] for e in errors_of(data)]


# ---------------------------------------------------------------- OrderRequest: valid


def test_minimal_request_gets_the_defaults() -> None:
    r = OrderRequest.model_validate(body())
    assert (r.sec_type, r.exchange, r.currency, r.time_in_force, r.extended_hours) == (
        "STK", "SMART", "USD", "day", False,
    )  # fmt: skip
    assert r.qty == Decimal("10")
    assert r.limit_price == Decimal("187.50")
    assert r.stop_price is None


@pytest.mark.parametrize(
    "changes",
    [
        {"type": "market", "limit_price": ...},
        {"type": "limit"},
        {"type": "stop", "limit_price": ..., "stop_price": "180"},
        {"type": "stop_limit", "stop_price": "180"},
        {"side": "sell"},
        {"qty": 10},
        {"qty": 10.5},
        {"qty": "0.5"},
        {"qty": "1e2"},
        {"limit_price": 187.5},
        {"time_in_force": "gtc"},
        {"time_in_force": "ioc"},
        {"time_in_force": "opg"},
        {"extended_hours": True},
        {"sec_type": "STK", "exchange": "ARCA", "currency": "usd"},
        {"symbol": "BRK.B"},
        {"symbol": "ABCDEFGHIJKL"},
        {"client_order_id": "a"},
        {"client_order_id": "A.b_c:d-9" * 7 + "x"},  # 64 characters
    ],
)
def test_valid_requests(changes: dict[str, Any]) -> None:
    OrderRequest.model_validate(body(**changes))


def test_case_is_normalised() -> None:
    r = OrderRequest.model_validate(body(symbol="aapl", exchange="smart", currency="usd"))
    assert (r.symbol, r.exchange, r.currency) == ("AAPL", "SMART", "USD")


def test_decimals_come_back_as_plain_strings() -> None:
    r = OrderRequest.model_validate(body(qty="1e2", limit_price=187.5))
    dumped = json.loads(r.model_dump_json())
    assert dumped["qty"] == "100"
    assert dumped["limit_price"] == "187.5"


def test_a_json_body_validates() -> None:
    raw = json.dumps(body(qty=3))
    assert OrderRequest.model_validate_json(raw).qty == Decimal(3)


# ---------------------------------------------------------------- OrderRequest: each rule


@pytest.mark.parametrize(
    ("changes", "pointer"),
    [
        # client_order_id: required, pattern
        ({"client_order_id": ...}, "/client_order_id"),
        ({"client_order_id": ""}, "/client_order_id"),
        ({"client_order_id": "x" * 65}, "/client_order_id"),
        ({"client_order_id": "has space"}, "/client_order_id"),
        ({"client_order_id": "slash/no"}, "/client_order_id"),
        ({"client_order_id": "é"}, "/client_order_id"),
        ({"client_order_id": "ok\n"}, "/client_order_id"),
        ({"client_order_id": 7}, "/client_order_id"),
        # symbol
        ({"symbol": ...}, "/symbol"),
        ({"symbol": ""}, "/symbol"),
        ({"symbol": "ABCDEFGHIJKLM"}, "/symbol"),
        ({"symbol": "BRK B"}, "/symbol"),
        ({"symbol": "AAPL$"}, "/symbol"),
        ({"symbol": 5}, "/symbol"),
        # sec_type, exchange, currency
        ({"sec_type": "OPT"}, "/sec_type"),
        ({"exchange": ""}, "/exchange"),
        ({"currency": "US"}, "/currency"),
        ({"currency": "USDX"}, "/currency"),
        # side, type, time_in_force, extended_hours
        ({"side": ...}, "/side"),
        ({"side": "BUY"}, "/side"),
        ({"side": "short"}, "/side"),
        ({"type": "trailing_stop"}, "/type"),
        ({"time_in_force": "fok"}, "/time_in_force"),
        ({"extended_hours": "yes"}, "/extended_hours"),
        ({"extended_hours": 1}, "/extended_hours"),
        # qty
        ({"qty": ...}, "/qty"),
        ({"qty": "0"}, "/qty"),
        ({"qty": -1}, "/qty"),
        ({"qty": "-0"}, "/qty"),
        ({"qty": "NaN"}, "/qty"),
        ({"qty": "Infinity"}, "/qty"),
        ({"qty": float("nan")}, "/qty"),
        ({"qty": float("inf")}, "/qty"),
        ({"qty": "ten"}, "/qty"),
        ({"qty": True}, "/qty"),
        ({"qty": "1e30"}, "/qty"),  # too many digits: could overflow qty x price
        ({"qty": "0.000000001"}, "/qty"),
        # prices: positive, finite, present exactly when the type uses them
        ({"limit_price": "0"}, "/limit_price"),
        ({"limit_price": "-1"}, "/limit_price"),
        ({"limit_price": "NaN"}, "/limit_price"),
        ({"limit_price": ...}, "/limit_price"),
        ({"limit_price": None}, "/limit_price"),
        ({"type": "market"}, "/limit_price"),
        ({"stop_price": "180"}, "/stop_price"),
        ({"type": "stop", "limit_price": ...}, "/stop_price"),
        ({"type": "stop", "stop_price": "180"}, "/limit_price"),
        ({"type": "stop_limit"}, "/stop_price"),
        ({"type": "stop_limit", "stop_price": "0"}, "/stop_price"),
        ({"type": "market", "limit_price": ..., "stop_price": "1"}, "/stop_price"),
        # unknown fields are typos, not extras
        ({"quantity": "10"}, "/quantity"),
        ({"limit": "187.5"}, "/limit"),
    ],
)
def test_each_rule(changes: dict[str, Any], pointer: str) -> None:
    assert pointers(body(**changes)) == [pointer]


def test_price_messages_name_the_rule() -> None:
    [error] = errors_of(body(type="stop_limit"))
    assert error == {
        "pointer": "/stop_price",
        "detail": "stop_price is required for a stop_limit order",
    }
    [error] = errors_of(body(type="market"))
    assert error["detail"] == "limit_price is not allowed for a market order"


def test_a_bad_type_does_not_add_price_errors() -> None:
    assert pointers(body(type="bogus", stop_price="1")) == ["/type"]


def test_several_errors_are_all_reported() -> None:
    got = pointers({"symbol": "??", "side": "up", "type": "limit", "qty": 0, "extra": 1})
    assert sorted(got) == sorted(
        ["/client_order_id", "/symbol", "/side", "/qty", "/limit_price", "/extra"]
    )


def test_a_body_that_is_not_an_object_points_at_the_root() -> None:
    for data in ([], "x", 3, None):
        with pytest.raises(pydantic.ValidationError) as caught:
            OrderRequest.model_validate(data)
        assert [e["pointer"] for e in validation_errors(caught.value)] == [""]


@pytest.mark.parametrize(
    ("loc", "pointer"),
    [
        ((), ""),
        (("qty",), "/qty"),
        (("items", 0, "qty"), "/items/0/qty"),
        (("a/b",), "/a~1b"),
        (("m~n",), "/m~0n"),
        (("~/",), "/~0~1"),
        (("",), "/"),
    ],
)
def test_json_pointer(loc: tuple[int | str, ...], pointer: str) -> None:
    assert json_pointer(loc) == pointer


def test_validation_errors_escape_member_names() -> None:
    [error] = errors_of(body(**{"a/b~c": 1}))
    assert error["pointer"] == "/a~1b~0c"


# ---------------------------------------------------------------- canonical_json


@pytest.mark.parametrize("qty", ["10", 10, "10.0", 10.0, "1e1", "10.000", " 10 "])
def test_canonical_json_is_the_same_for_every_spelling_of_a_number(qty: Any) -> None:
    base = OrderRequest.model_validate(body()).canonical_json()
    assert OrderRequest.model_validate(body(qty=qty)).canonical_json() == base


def test_canonical_json_ignores_key_order_defaults_and_case() -> None:
    a = OrderRequest.model_validate(dict(reversed(list(body().items()))))
    b = OrderRequest.model_validate(
        body(symbol="aapl", limit_price=187.5, sec_type="STK", exchange="SMART",
             time_in_force="day", extended_hours=False)
    )  # fmt: skip
    assert (
        a.canonical_json()
        == b.canonical_json()
        == OrderRequest.model_validate(body()).canonical_json()
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"qty": "11"},
        {"limit_price": "187.51"},
        {"side": "sell"},
        {"symbol": "MSFT"},
        {"time_in_force": "gtc"},
        {"extended_hours": True},
        {"client_order_id": "other"},
    ],
)
def test_canonical_json_differs_when_the_order_differs(changes: dict[str, Any]) -> None:
    base = OrderRequest.model_validate(body()).canonical_json()
    assert OrderRequest.model_validate(body(**changes)).canonical_json() != base


def test_canonical_json_is_compact_sorted_json_with_string_decimals() -> None:
    text = OrderRequest.model_validate(body(qty="100")).canonical_json()
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert data["qty"] == "100"  # normalised, but never written as 1E+2
    assert data["limit_price"] == "187.5"
    assert " " not in text


# ---------------------------------------------------------------- responses

NOW = datetime(2026, 1, 14, 15, 1, 2, 123000, tzinfo=UTC)

ORDER_EXAMPLE: dict[str, Any] = {
    "id": "01J9Z7K3V2M8Q4R6T0W1X2Y3Z4", "client_order_id": "pi-20260114-0007",
    "broker_order_id": 1234, "perm_id": 987654321, "account_id": "DU1234567",
    "trading_mode": "paper", "symbol": "AAPL", "sec_type": "STK", "con_id": 265598,
    "exchange": "SMART", "currency": "USD", "side": "buy", "type": "limit",
    "time_in_force": "day", "extended_hours": False, "qty": "10", "limit_price": "187.50",
    "stop_price": None, "filled_qty": "4", "remaining_qty": "6", "filled_avg_price": "187.49",
    "status": "partially_filled", "broker_status": "Submitted", "status_reason": None,
    "created_at": "2026-01-14T15:01:02.123Z", "submitted_at": "2026-01-14T15:01:02.140Z",
    "updated_at": "2026-01-14T15:01:03.002Z", "filled_at": None, "canceled_at": None,
    "expired_at": None, "failed_at": None, "commission": "0.35", "request_id": "b1c2...",
}  # fmt: skip


def test_order_round_trips_the_api_conventions_example() -> None:
    order = Order.model_validate(ORDER_EXAMPLE)
    assert order.model_dump(mode="json") == ORDER_EXAMPLE
    assert list(order.model_dump(mode="json")) == list(ORDER_EXAMPLE)


def test_order_timestamps_are_utc_with_z() -> None:
    toronto = timezone(timedelta(hours=-5))
    order = Order.model_validate(
        {**ORDER_EXAMPLE, "created_at": datetime(2026, 1, 14, 10, 1, 2, tzinfo=toronto),
         "updated_at": NOW}
    )  # fmt: skip
    dumped = order.model_dump(mode="json")
    assert dumped["created_at"] == "2026-01-14T15:01:02Z"
    assert dumped["updated_at"] == "2026-01-14T15:01:02.123Z"


def test_order_refuses_naive_timestamps() -> None:
    with pytest.raises(pydantic.ValidationError):
        Order.model_validate({**ORDER_EXAMPLE, "created_at": "2026-01-14T15:01:02"})


def test_order_decimals_from_ib_are_plain_strings() -> None:
    order = Order.model_validate({**ORDER_EXAMPLE, "filled_avg_price": Decimal("1.8749E+2")})
    assert order.model_dump(mode="json")["filled_avg_price"] == "187.49"


def test_order_status_is_the_api_vocabulary() -> None:
    with pytest.raises(pydantic.ValidationError):
        Order.model_validate({**ORDER_EXAMPLE, "status": "Submitted"})
    for status in STATUSES:
        Order.model_validate({**ORDER_EXAMPLE, "status": status})


def test_lists_and_results() -> None:
    order = Order.model_validate(ORDER_EXAMPLE)
    assert OrderList(items=[order]).model_dump(mode="json") == {
        "items": [ORDER_EXAMPLE], "next": None,
    }  # fmt: skip
    problem = Problem(
        type="/problems/order-not-cancelable", title="Order not cancelable", status=409,
        detail="already filled", request_id="r1",
    )  # fmt: skip
    result = CancelResult(id="01J", client_order_id="c1", status="filled", problem=problem)
    assert result.model_dump(mode="json", exclude_none=True)["problem"]["status"] == 409
    kill = KillResult(scope="node", canceled=[result], pending=False)
    assert kill.model_dump(mode="json")["kill_switch"] is True
    with pytest.raises(pydantic.ValidationError):
        KillResult.model_validate({"kill_switch": False, "scope": "node", "canceled": [],
                                   "pending": True})  # fmt: skip


def test_problem_keeps_extensions_and_pointers() -> None:
    problem = Problem.model_validate(
        {"type": "/problems/validation-error", "title": "Invalid", "status": 422,
         "detail": "bad", "request_id": "r", "errors": [{"pointer": "/qty", "detail": "> 0"}],
         "retry_after": 5}
    )  # fmt: skip
    dumped = problem.model_dump(mode="json", exclude_none=True)
    assert dumped["errors"] == [{"pointer": "/qty", "detail": "> 0"}]
    assert dumped["retry_after"] == 5
    assert "state" not in dumped


def test_preview_echoes_the_request() -> None:
    request = OrderRequest.model_validate(body())
    preview = Preview(
        order=request, commission=Decimal("1.0"), init_margin_change=Decimal("937.5"),
        maint_margin_change=None, equity_with_loan_after=Decimal("99062.5"),
        gates=PreviewGates(would_block_by=["not-armed"]),
    )  # fmt: skip
    dumped = preview.model_dump(mode="json")
    assert dumped["order"]["limit_price"] == "187.50"
    assert dumped["gates"] == {"would_block_by": ["not-armed"]}
    assert dumped["warnings"] == []


def test_reads_say_when_they_are_stale() -> None:
    quote = Quote(
        symbol="AAPL", bid=Decimal("187.48"), ask=Decimal("187.50"), last=None, bid_size=None,
        ask_size=None, volume=None, timestamp=None, data_type="delayed", stale=True, as_of=NOW,
    )  # fmt: skip
    dumped = QuoteList(items=[quote]).model_dump(mode="json")["items"][0]
    assert (dumped["stale"], dumped["as_of"], dumped["market_data"]) == (
        True, "2026-01-14T15:01:02.123Z", "ok",
    )  # fmt: skip
    position = Position(
        symbol="AAPL", con_id=265598, sec_type="STK", currency="USD", qty=Decimal("-5"),
        side="short", avg_entry_price=Decimal("180"), market_price=None, market_value=None,
        unrealized_pl=None, realized_pl=None, updated_at=NOW,
    )  # fmt: skip
    assert (
        PositionList(items=[position], stale=True).model_dump(mode="json")["items"][0]["qty"]
        == "-5"
    )
    account = Account(
        account_id="DU1", trading_mode="paper", currency="USD", equity=Decimal("100000.00"),
        cash=None, buying_power=None, available_funds=None, excess_liquidity=None,
        initial_margin=None, maintenance_margin=None, updated_at=NOW,
    )  # fmt: skip
    assert account.model_dump(mode="json")["equity"] == "100000.00"


# ---------------------------------------------------------------- the state document

STATE_EXAMPLE = json.loads("""
{"state": "SERVING", "since": "2026-01-14T09:00:03Z", "reason": "heartbeat ok",
 "latched": null, "simulated": false, "trading_mode": "paper",
 "window": {"open": true, "forced": false, "next_change": "2026-01-14T20:00:00-05:00",
            "timezone": "America/Toronto"},
 "gateway": {"launcher": "ibc", "host": "127.0.0.1", "port": 4002, "pid": 4312,
             "server_version": 178, "account": "DU1234567",
             "connected_since": "2026-01-14T09:00:02Z", "market_data": "ok"},
 "heartbeat": {"last_ok": "2026-01-14T14:31:07Z", "latency_ms": 1.8, "misses": 0},
 "restarts": {"used": 1, "limit": 5, "window_s": 3600, "next_retry_at": null, "attempt": 0},
 "gates": {"orders_enabled": true, "armed": true, "live_override": false, "kill_switch": false,
           "can_place_orders": true, "blocked_by": []},
 "transitions": [{"at": "2026-01-14T09:00:03Z", "from": "CONNECTED", "to": "SERVING",
                  "trigger": "reconciled", "reason": "3 orders reconciled"}]}
""")  # the example of DESIGN.md §6 (one line wrapped)


def test_state_document_round_trips_the_design_example() -> None:
    document = StateDocument.model_validate(STATE_EXAMPLE)
    assert document.model_dump(mode="json") == STATE_EXAMPLE
    assert json.loads(document.model_dump_json()) == STATE_EXAMPLE
    assert document.transitions[0].from_ == "CONNECTED"


def test_state_document_keeps_the_local_offset_of_next_change_only() -> None:
    document = StateDocument.model_validate({**STATE_EXAMPLE, "since": "2026-01-14T04:00:03-05:00"})
    dumped = document.model_dump(mode="json")
    assert dumped["since"] == "2026-01-14T09:00:03Z"
    assert dumped["window"]["next_change"] == "2026-01-14T20:00:00-05:00"


def test_state_document_in_other_states() -> None:
    document = StateDocument.model_validate(
        {**STATE_EXAMPLE, "state": "BACKOFF", "latched": None,
         "gateway": {**STATE_EXAMPLE["gateway"], "pid": None, "server_version": None,
                     "account": None, "connected_since": None, "market_data": None},
         "heartbeat": {"last_ok": None, "latency_ms": None, "misses": 2},
         "restarts": {**STATE_EXAMPLE["restarts"], "next_retry_at": "2026-01-14T14:35:00Z"},
         "window": {**STATE_EXAMPLE["window"], "next_change": None}}
    )  # fmt: skip
    assert document.model_dump(mode="json")["restarts"]["next_retry_at"] == "2026-01-14T14:35:00Z"
    with pytest.raises(pydantic.ValidationError):
        StateDocument.model_validate({**STATE_EXAMPLE, "state": "RUNNING"})


# ---------------------------------------------------------------- JSON Schema for OpenAPI

MODELS = [
    getattr(schemas, name)
    for name in schemas.__all__
    if isinstance(getattr(schemas, name), type)
    and issubclass(getattr(schemas, name), pydantic.BaseModel)
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("mode", ["validation", "serialization"])
def test_every_model_has_a_json_schema(model: type[pydantic.BaseModel], mode: Any) -> None:
    schema = model.model_json_schema(mode=mode)
    assert schema["type"] == "object"
    json.dumps(schema)


def test_all_models_together_for_openapi_components() -> None:
    _, top = pydantic.json_schema.models_json_schema(
        [(m, "validation") for m in MODELS] + [(m, "serialization") for m in MODELS],
        ref_template="#/components/schemas/{model}",
    )
    assert {"OrderRequest", "StateDocument", "Problem"} <= {
        name.removesuffix("-Input").removesuffix("-Output") for name in top["$defs"]
    }


def test_schema_uses_wire_names_and_formats() -> None:
    state = StateDocument.model_json_schema(mode="serialization")
    transition = state["$defs"]["StateTransition"]["properties"]
    assert "from" in transition
    assert "from_" not in transition
    assert transition["at"] == {"format": "date-time", "title": "At", "type": "string"}
    order = Order.model_json_schema(mode="serialization")["properties"]
    assert order["qty"]["type"] == "string"
    request = OrderRequest.model_json_schema()
    assert request["additionalProperties"] is False
    assert set(request["required"]) == {"client_order_id", "symbol", "side", "type", "qty"}
    assert request["properties"]["client_order_id"]["pattern"] == schemas.CLIENT_ORDER_ID_PATTERN
