"""The one table that says what an IB error code means to the node.

IB delivers errors, warnings and status notices through the same `error()` callback, so the
lifecycle machine, the order service and the quote endpoints all ask this module rather than
testing raw numbers. Codes not in the table fall back by range (see `classify`):

- 1000-1999 (system notices): INFORMATIONAL. An unknown system notice must not restart a gateway.
- 2000-2999 (IB's warnings, 2100-2199 in particular): INFORMATIONAL.
- 500-599 (ibapi's client-side socket errors, such as 505 or 520): NOT_CONNECTED.
- anything else (request, order and 10000+ codes): REQUEST_ERROR: the request that carried the
  id failed; nothing about the connection is implied.

An ORDER_REJECT code that arrives with the id of a non-order request (200 for a contract lookup,
say) just fails that request, as a REQUEST_ERROR would.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CODES",
    "ErrorClass",
    "ErrorInfo",
    "MarketData",
    "classify",
    "describe",
    "farm_from_message",
    "market_data",
    "market_data_effect",
    "next_farm_state",
]


class ErrorClass(enum.Enum):
    INFORMATIONAL = "informational"
    DATA_DEGRADED = "data_degraded"
    DATA_RESTORED = "data_restored"
    CONNECTIVITY_LOST = "connectivity_lost"
    # 1101: streams were dropped upstream and must be re-requested; 1102: they survived.
    CONNECTIVITY_RESTORED_DATA_LOST = "connectivity_restored_data_lost"
    CONNECTIVITY_RESTORED_DATA_KEPT = "connectivity_restored_data_kept"
    ORDER_REJECT = "order_reject"
    REQUEST_ERROR = "request_error"
    CONFIG_ERROR = "config_error"
    CLIENT_ID_IN_USE = "client_id_in_use"
    NOT_CONNECTED = "not_connected"
    COMPETING_SESSION = "competing_session"

    @property
    def connectivity_restored(self) -> bool:
        return self in (
            ErrorClass.CONNECTIVITY_RESTORED_DATA_LOST,
            ErrorClass.CONNECTIVITY_RESTORED_DATA_KEPT,
        )


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: int
    error_class: ErrorClass
    meaning: str
    # True when the entry comes from the table, False for a range default.
    known: bool = True


def _table(entries: Iterable[tuple[int, ErrorClass, str]]) -> dict[int, ErrorInfo]:
    table: dict[int, ErrorInfo] = {}
    for code, error_class, meaning in entries:
        if code in table:
            raise ValueError(f"IB error code {code} is listed twice")
        table[code] = ErrorInfo(code, error_class, meaning)
    return table


_C = ErrorClass

CODES: dict[int, ErrorInfo] = _table(
    [
        # -- connectivity between the gateway and IB's servers (the API socket stays up) --
        (1100, _C.CONNECTIVITY_LOST, "gateway lost its connection to IB's servers"),
        (1101, _C.CONNECTIVITY_RESTORED_DATA_LOST, "IB connection restored; subscriptions lost"),
        (1102, _C.CONNECTIVITY_RESTORED_DATA_KEPT, "IB connection restored; data kept"),
        (1300, _C.CONFIG_ERROR, "gateway API socket port was changed; reconnect on the new port"),
        # -- data farms: quotes only, never the lifecycle --
        (2103, _C.DATA_DEGRADED, "market data farm connection broken"),
        (2104, _C.DATA_RESTORED, "market data farm connection OK"),
        (2105, _C.DATA_DEGRADED, "historical data farm connection broken"),
        (2106, _C.DATA_RESTORED, "historical data farm connection OK"),
        (2107, _C.INFORMATIONAL, "historical data farm inactive, available on demand"),
        (2108, _C.INFORMATIONAL, "market data farm inactive, available on demand"),
        (2110, _C.DATA_DEGRADED, "gateway-to-server link broken; restores by itself"),
        (2119, _C.INFORMATIONAL, "market data farm connecting"),
        (2157, _C.DATA_DEGRADED, "security definition farm connection broken"),
        (2158, _C.DATA_RESTORED, "security definition farm connection OK"),
        # -- the API socket itself; 502/504/507/509 are made up by ibapi on the client side --
        (326, _C.CLIENT_ID_IN_USE, "client id already in use; the gateway closed the socket"),
        (502, _C.NOT_CONNECTED, "could not connect to the gateway's API port"),
        (503, _C.CONFIG_ERROR, "gateway version is too old for this API client; upgrade it"),
        (504, _C.NOT_CONNECTED, "not connected to the gateway"),
        (507, _C.NOT_CONNECTED, "bad message length; the API socket is unusable"),
        (509, _C.NOT_CONNECTED, "error reading the API socket"),
        # -- sessions and permissions --
        (10197, _C.COMPETING_SESSION, "no market data: a live session for this user is open"),
        (354, _C.REQUEST_ERROR, "no market data subscription for this contract"),
        (10089, _C.REQUEST_ERROR, "market data needs an additional subscription"),
        (10167, _C.INFORMATIONAL, "no live data subscription; delayed data shown instead"),
        (10168, _C.REQUEST_ERROR, "no market data subscription and delayed data is off"),
        # -- orders --
        (103, _C.ORDER_REJECT, "duplicate order id"),
        (104, _C.ORDER_REJECT, "cannot modify a filled order"),
        (110, _C.ORDER_REJECT, "price does not match the contract's minimum tick"),
        (200, _C.ORDER_REJECT, "no security definition found (unknown contract)"),
        (201, _C.ORDER_REJECT, "order rejected by IB"),
        # A cancel is a normal end of an order's life, not a fault.
        (202, _C.INFORMATIONAL, "order cancelled"),
        (387, _C.ORDER_REJECT, "order type not supported for this exchange and security"),
        # 399 and 404 leave the order working (warned, or held to locate shares).
        (399, _C.INFORMATIONAL, "order warning; the order may be held (e.g. until RTH)"),
        (404, _C.INFORMATIONAL, "order held while IB locates shares to short"),
        (434, _C.ORDER_REJECT, "order size cannot be zero"),
        (460, _C.ORDER_REJECT, "no trading permission for this contract"),
        (10243, _C.ORDER_REJECT, "fractional-sized orders cannot be placed via the API"),
        # Sent for every order by an API client older than the gateway: fix the client.
        (10268, _C.ORDER_REJECT, "'EtradeOnly' order attribute not supported; update the client"),
        (10269, _C.ORDER_REJECT, "'FirmQuoteOnly' attribute not supported; update the client"),
        # -- requests and cancel races --
        (100, _C.REQUEST_ERROR, "message rate limit exceeded; slow down (never a restart)"),
        (135, _C.REQUEST_ERROR, "no order with that id"),
        (161, _C.REQUEST_ERROR, "order is not in a cancellable state"),
        (162, _C.REQUEST_ERROR, "historical data request failed (pacing or no data)"),
        (320, _C.REQUEST_ERROR, "gateway could not read the request"),
        (321, _C.REQUEST_ERROR, "gateway rejected the request as invalid"),
        (10147, _C.REQUEST_ERROR, "order to cancel was not found"),
        (10148, _C.REQUEST_ERROR, "order cannot be cancelled (already filled?); reconcile"),
    ]
)


def describe(code: int) -> ErrorInfo:
    """The table entry for `code`, or the range default documented at the top of this module."""
    info = CODES.get(code)
    if info is not None:
        return info
    if 1000 <= code < 2000:
        return ErrorInfo(code, ErrorClass.INFORMATIONAL, "IB system notice", known=False)
    if 2000 <= code < 3000:
        return ErrorInfo(code, ErrorClass.INFORMATIONAL, "IB warning", known=False)
    if 500 <= code < 600:
        return ErrorInfo(code, ErrorClass.NOT_CONNECTED, "API client socket error", known=False)
    return ErrorInfo(code, ErrorClass.REQUEST_ERROR, "request failed", known=False)


def classify(code: int) -> ErrorClass:
    return describe(code).error_class


# -- market data health (DESIGN.md §3: farm notices set a flag, never change the lifecycle) --

MarketData = Literal["ok", "degraded"]

# Which farm each code breaks or mends. 2110 is the gateway's own link to the servers.
_BREAKS: dict[int, str] = {2103: "market", 2105: "hmds", 2157: "secdef", 2110: "link"}
_MENDS: dict[int, tuple[str, ...]] = {
    2104: ("market", "link"),
    2106: ("hmds",),
    2158: ("secdef",),
    1101: ("link",),
    1102: ("link",),
}


def market_data_effect(code: int) -> MarketData | None:
    """ "degraded" if the code breaks a farm, "ok" if it mends one, None if it says nothing."""
    if code in _BREAKS:
        return "degraded"
    if code in _MENDS:
        return "ok"
    return None


def farm_from_message(message: str) -> str | None:
    """The farm named at the end of a farm notice ("...connection is broken:usfarm")."""
    _, sep, tail = message.rpartition(":")
    name = tail.strip()
    if not sep or not name or " " in name:
        return None
    return name


def next_farm_state(state: frozenset[str], code: int, farm: str | None = None) -> frozenset[str]:
    """The set of broken farms after `code`.

    IB names the farm in the message text (`farm_from_message`); passing it keeps a flap on one
    farm (usfarm) from being cleared by an OK notice for another (cashfarm). Without a name the
    code stands for every farm of its kind. Entries are "kind" or "kind:farm".
    """
    broken = _BREAKS.get(code)
    if broken is not None:
        # The link notice never names a farm; keep its key stable whatever the text says.
        key = broken if farm is None or broken == "link" else f"{broken}:{farm}"
        return state | {key}
    kinds = _MENDS.get(code)
    if kinds is None:
        return state
    return frozenset(entry for entry in state if not _mended(entry, kinds, farm))


def _mended(entry: str, kinds: tuple[str, ...], farm: str | None) -> bool:
    kind, _, name = entry.partition(":")
    if kind not in kinds:
        return False
    # An unnamed entry or an unnamed OK notice cannot be told apart from the others: clear it.
    return kind == "link" or farm is None or not name or name == farm


def market_data(state: frozenset[str]) -> MarketData:
    return "degraded" if state else "ok"
