"""The API's bodies as pydantic models: the validation of what comes in and the OpenAPI 3.1 shape
of what goes out (api-conventions §4, with DESIGN.md §5-6 winning).

Conventions carried by the types: quantities and prices are decimals, accepted as JSON strings or
numbers and always written as plain decimal strings (never floats, never exponents); instants
are written in RFC 3339 UTC with `Z`. The window's `next_change` alone keeps its offset, because
it is the operator's local time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import pydantic
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from node.order_status import OrderStatus

__all__ = [
    "Account",
    "CancelResult",
    "KillResult",
    "Order",
    "OrderList",
    "OrderRequest",
    "OrderStatus",
    "Position",
    "PositionList",
    "Preview",
    "PreviewGates",
    "Problem",
    "ProblemError",
    "Quote",
    "QuoteList",
    "StateDocument",
    "StateGates",
    "StateGateway",
    "StateHeartbeat",
    "StateRestarts",
    "StateTransition",
    "StateWindow",
    "json_pointer",
    "validation_errors",
]

CLIENT_ORDER_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
SYMBOL_PATTERN = r"^[A-Z0-9.]{1,12}$"


# ---------------------------------------------------------------- shared field types


def _plain_decimal(value: Decimal) -> str:
    # str() would write 1E+2 for a value parsed from "1e2"; clients expect plain digits.
    return format(value, "f")


def _utc_text(value: datetime) -> str:
    value = value.astimezone(UTC)
    spec = "milliseconds" if value.microsecond else "seconds"
    return value.isoformat(timespec=spec).replace("+00:00", "Z")


_DECIMAL_OUT = PlainSerializer(_plain_decimal, return_type=str, when_used="json")

DecimalStr = Annotated[Decimal, _DECIMAL_OUT]
"""A decimal in a response, written as a plain decimal string."""

# Bounded so that qty x price can never overflow Decimal's context (a 500 on bad input) and so
# that normalising for the idempotency hash never rounds.
_BOUNDS = Field(gt=0, max_digits=18, decimal_places=8)
PositiveDecimal = Annotated[Decimal, _BOUNDS, _DECIMAL_OUT]

UtcTime = Annotated[
    AwareDatetime,
    PlainSerializer(_utc_text, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
"""An instant, timezone-aware on input, written in UTC with `Z`."""

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop", "stop_limit"]
TimeInForce = Literal["day", "gtc", "ioc", "opg"]
TradingMode = Literal["paper", "live"]
LifecycleState = Literal["OFF", "STARTING_GATEWAY", "CONNECTED", "SERVING", "DEGRADED", "BACKOFF"]

_NEEDS_LIMIT = frozenset({"limit", "stop_limit"})
_NEEDS_STOP = frozenset({"stop", "stop_limit"})


# ---------------------------------------------------------------- problems


class ProblemError(BaseModel):
    pointer: str = Field(description="RFC 6901 JSON pointer into the request body")
    detail: str


class Problem(BaseModel):
    """RFC 9457 problem details; clients must ignore members they do not know."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["/problems/not-armed"])
    title: str
    status: int
    detail: str
    request_id: str
    state: LifecycleState | None = None
    errors: list[ProblemError] | None = None


def json_pointer(loc: tuple[int | str, ...]) -> str:
    """RFC 6901: `~` and `/` inside a member name are escaped; the empty pointer is the body."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in loc)


def validation_errors(exc: pydantic.ValidationError) -> list[dict[str, str]]:
    """The `errors[]` of a validation-error problem: one `{pointer, detail}` per failure."""
    return [
        {"pointer": json_pointer(tuple(error["loc"])), "detail": error["msg"]}
        for error in exc.errors(include_url=False)
    ]


# ---------------------------------------------------------------- orders


class OrderRequest(BaseModel):
    """The body of POST /v1/orders and /v1/orders/preview."""

    # An unknown field is most likely a typo of a real one; ignoring it could change the order.
    model_config = ConfigDict(extra="forbid")

    client_order_id: Annotated[str, Field(pattern=CLIENT_ORDER_ID_PATTERN)]
    symbol: Annotated[str, Field(pattern=SYMBOL_PATTERN, examples=["AAPL"])]
    sec_type: Literal["STK"] = "STK"
    exchange: Annotated[str, Field(pattern=r"^[A-Z0-9.]{1,16}$")] = "SMART"
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    side: Side
    # `type` is declared before the prices: their validators read it.
    type: OrderType
    qty: PositiveDecimal
    limit_price: Annotated[PositiveDecimal | None, Field(validate_default=True)] = None
    stop_price: Annotated[PositiveDecimal | None, Field(validate_default=True)] = None
    time_in_force: TimeInForce = "day"
    extended_hours: StrictBool = False

    @field_validator("symbol", "exchange", "currency", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        # Tickers are case-insensitive; one spelling keeps the idempotency hash and IB in step.
        return value.upper() if isinstance(value, str) else value

    @field_validator("limit_price")
    @classmethod
    def _limit_price_fits_type(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        return _price_fits_type(value, info, _NEEDS_LIMIT, "limit_price")

    @field_validator("stop_price")
    @classmethod
    def _stop_price_fits_type(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        return _price_fits_type(value, info, _NEEDS_STOP, "stop_price")

    def canonical_json(self) -> str:
        """The request in one spelling, for the idempotency hash.

        Defaults are filled in, keys sorted, and decimals normalised, so `"10"`, `10` and
        `"10.0"` hash alike and so do bodies that differ only in key order or omitted defaults.
        """
        data = {
            key: _plain_decimal(value.normalize()) if isinstance(value, Decimal) else value
            for key, value in self.model_dump(mode="python").items()
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _price_fits_type(
    value: Decimal | None, info: ValidationInfo, needs: frozenset[str], name: str
) -> Decimal | None:
    order_type = info.data.get("type")
    if order_type is None:
        return value  # the type itself failed and has its own error
    if order_type in needs and value is None:
        raise PydanticCustomError(
            "price_required",
            "{name} is required for a {type} order",
            {"name": name, "type": order_type},
        )
    if order_type not in needs and value is not None:
        raise PydanticCustomError(
            "price_forbidden",
            "{name} is not allowed for a {type} order",
            {"name": name, "type": order_type},
        )
    return value


class Order(BaseModel):
    """An order as the node knows it (api-conventions §4.2)."""

    id: str = Field(description="the node's id (ULID)")
    client_order_id: str
    broker_order_id: int | None = Field(description="IB's orderId")
    perm_id: int | None = Field(description="IB's permId")
    account_id: str | None
    trading_mode: TradingMode
    symbol: str
    sec_type: Literal["STK"]
    con_id: int | None
    exchange: str
    currency: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    extended_hours: bool
    qty: DecimalStr
    limit_price: DecimalStr | None
    stop_price: DecimalStr | None
    filled_qty: DecimalStr
    remaining_qty: DecimalStr
    filled_avg_price: DecimalStr | None
    status: OrderStatus
    broker_status: str | None = Field(description="IB's raw status, e.g. Submitted")
    status_reason: str | None = Field(
        description="why it was rejected or canceled, e.g. IB's error"
    )
    created_at: UtcTime
    submitted_at: UtcTime | None
    updated_at: UtcTime
    filled_at: UtcTime | None
    canceled_at: UtcTime | None
    expired_at: UtcTime | None
    failed_at: UtcTime | None
    commission: DecimalStr | None
    request_id: str | None = Field(description="X-Request-ID of the request that placed it")


class OrderList(BaseModel):
    items: list[Order]
    next: str | None = Field(default=None, description="cursor of the next page, if any")


class CancelResult(BaseModel):
    id: str
    client_order_id: str
    status: OrderStatus
    problem: Problem | None = None


class KillResult(BaseModel):
    kill_switch: Literal[True] = True
    scope: Literal["node", "account"]
    canceled: list[CancelResult] = Field(description="the cancels sent, one per open order")
    pending: bool = Field(
        description="the gateway is not connected: the cancels go out first thing on reconnect"
    )


class PreviewGates(BaseModel):
    would_block_by: list[str] = Field(description="problem slugs of every gate that would refuse")


class Preview(BaseModel):
    order: OrderRequest
    commission: DecimalStr | None
    init_margin_change: DecimalStr | None
    maint_margin_change: DecimalStr | None
    equity_with_loan_after: DecimalStr | None
    warnings: list[str] = Field(default_factory=list)
    gates: PreviewGates


# ---------------------------------------------------------------- account, positions, quotes


class Account(BaseModel):
    account_id: str
    trading_mode: TradingMode
    currency: str
    equity: DecimalStr | None = Field(description="NetLiquidation")
    cash: DecimalStr | None = Field(description="TotalCashValue")
    buying_power: DecimalStr | None
    available_funds: DecimalStr | None
    excess_liquidity: DecimalStr | None
    initial_margin: DecimalStr | None
    maintenance_margin: DecimalStr | None
    updated_at: UtcTime
    # DEGRADED serves reads from the cache: say so rather than pass old numbers off as current.
    stale: bool = False
    as_of: UtcTime | None = Field(default=None, description="when stale: IB's last word")


class Position(BaseModel):
    symbol: str
    con_id: int | None
    sec_type: str
    currency: str
    qty: DecimalStr = Field(description="signed: negative when short")
    side: Literal["long", "short"]
    avg_entry_price: DecimalStr | None
    market_price: DecimalStr | None
    market_value: DecimalStr | None
    unrealized_pl: DecimalStr | None
    realized_pl: DecimalStr | None
    updated_at: UtcTime


class PositionList(BaseModel):
    items: list[Position]
    next: str | None = None
    stale: bool = False
    as_of: UtcTime | None = Field(default=None, description="when stale: IB's last word")


class Quote(BaseModel):
    symbol: str
    bid: DecimalStr | None
    ask: DecimalStr | None
    last: DecimalStr | None
    bid_size: DecimalStr | None
    ask_size: DecimalStr | None
    volume: DecimalStr | None
    timestamp: UtcTime | None = Field(description="when IB last updated the quote")
    data_type: Literal["live", "frozen", "delayed", "delayed_frozen"]
    market_data: Literal["ok", "degraded"] = Field(
        default="ok", description="degraded while IB reports a broken data farm"
    )
    stale: bool
    as_of: UtcTime = Field(description="when the node took this snapshot")


class QuoteList(BaseModel):
    items: list[Quote]
    next: str | None = None


# ---------------------------------------------------------------- the state document (§6)


class StateWindow(BaseModel):
    open: bool
    forced: bool
    # The operator's local time, offset kept: it answers "when does my window change".
    next_change: AwareDatetime | None
    timezone: str


class StateGateway(BaseModel):
    launcher: str
    host: str
    port: int
    pid: int | None
    server_version: int | None
    account: str | None
    connected_since: UtcTime | None
    market_data: Literal["ok", "degraded"] | None


class StateHeartbeat(BaseModel):
    last_ok: UtcTime | None
    latency_ms: float | None
    misses: int


class StateRestarts(BaseModel):
    used: int
    limit: int
    window_s: int
    next_retry_at: UtcTime | None
    attempt: int


class StateGates(BaseModel):
    orders_enabled: bool
    armed: bool
    live_override: bool
    kill_switch: bool
    can_place_orders: bool
    blocked_by: list[str] = Field(description="problem slugs of the gates refusing every order")


class StateTransition(BaseModel):
    # `from` is a keyword; the alias keeps the wire name, dumps use it by default.
    model_config = ConfigDict(
        validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    at: UtcTime
    from_: LifecycleState = Field(alias="from")
    to: LifecycleState
    trigger: str
    reason: str


class StateDocument(BaseModel):
    """GET /v1/state and `ibkr-node state --json` (DESIGN.md §6; field names are fixed)."""

    model_config = ConfigDict(serialize_by_alias=True)

    state: LifecycleState
    since: UtcTime
    reason: str
    latched: str | None
    simulated: bool
    trading_mode: TradingMode
    window: StateWindow
    gateway: StateGateway
    heartbeat: StateHeartbeat
    restarts: StateRestarts
    gates: StateGates
    transitions: list[StateTransition]
