"""The IB error code table, its range defaults, and the market-data farm reducer."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from node.ib_errors import (
    CODES,
    ErrorClass,
    classify,
    describe,
    farm_from_message,
    market_data,
    market_data_effect,
    next_farm_state,
)

C = ErrorClass

KNOWN = [
    (1100, C.CONNECTIVITY_LOST),
    (1101, C.CONNECTIVITY_RESTORED_DATA_LOST),
    (1102, C.CONNECTIVITY_RESTORED_DATA_KEPT),
    (1300, C.CONFIG_ERROR),
    (2103, C.DATA_DEGRADED),
    (2104, C.DATA_RESTORED),
    (2105, C.DATA_DEGRADED),
    (2106, C.DATA_RESTORED),
    (2107, C.INFORMATIONAL),
    (2108, C.INFORMATIONAL),
    (2110, C.DATA_DEGRADED),
    (2119, C.INFORMATIONAL),
    (2157, C.DATA_DEGRADED),
    (2158, C.DATA_RESTORED),
    (326, C.CLIENT_ID_IN_USE),
    (502, C.NOT_CONNECTED),
    (503, C.CONFIG_ERROR),
    (504, C.NOT_CONNECTED),
    (507, C.NOT_CONNECTED),
    (10197, C.COMPETING_SESSION),
    (200, C.ORDER_REJECT),
    (201, C.ORDER_REJECT),
    (202, C.INFORMATIONAL),
    (103, C.ORDER_REJECT),
    (104, C.ORDER_REJECT),
    (110, C.ORDER_REJECT),
    (135, C.REQUEST_ERROR),
    (161, C.REQUEST_ERROR),
    (162, C.REQUEST_ERROR),
    (321, C.REQUEST_ERROR),
    (354, C.REQUEST_ERROR),
    (387, C.ORDER_REJECT),
    (399, C.INFORMATIONAL),
    (404, C.INFORMATIONAL),
    (434, C.ORDER_REJECT),
    (10147, C.REQUEST_ERROR),
    (10148, C.REQUEST_ERROR),
    (10167, C.INFORMATIONAL),
    (10243, C.ORDER_REJECT),
    (10268, C.ORDER_REJECT),
    (10269, C.ORDER_REJECT),
    (320, C.REQUEST_ERROR),
    (100, C.REQUEST_ERROR),
]


@pytest.mark.parametrize(("code", "expected"), KNOWN)
def test_known_codes(code: int, expected: ErrorClass) -> None:
    assert classify(code) is expected
    info = describe(code)
    assert info.known
    assert info.code == code
    assert info.meaning


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (2100, C.INFORMATIONAL),
        (2150, C.INFORMATIONAL),
        (2199, C.INFORMATIONAL),
        (2200, C.INFORMATIONAL),
        (1999, C.INFORMATIONAL),
        (505, C.NOT_CONNECTED),
        (520, C.NOT_CONNECTED),
        (0, C.REQUEST_ERROR),
        (-1, C.REQUEST_ERROR),
        (999, C.REQUEST_ERROR),
        (300, C.REQUEST_ERROR),
        (10999, C.REQUEST_ERROR),
        (3000, C.REQUEST_ERROR),
    ],
)
def test_range_defaults(code: int, expected: ErrorClass) -> None:
    assert code not in CODES
    assert classify(code) is expected
    assert describe(code).known is False


def test_every_entry_is_consistent() -> None:
    for code, info in CODES.items():
        assert info.code == code
        # Meanings are shown to the operator on one line.
        assert 0 < len(info.meaning) <= 80, code
    assert {info.error_class for info in CODES.values()} == set(ErrorClass)


@pytest.mark.parametrize(
    ("cls", "restored"),
    [
        (C.CONNECTIVITY_RESTORED_DATA_LOST, True),
        (C.CONNECTIVITY_RESTORED_DATA_KEPT, True),
        (C.CONNECTIVITY_LOST, False),
        (C.DATA_RESTORED, False),
    ],
)
def test_connectivity_restored(cls: ErrorClass, restored: bool) -> None:
    assert cls.connectivity_restored is restored


@pytest.mark.parametrize(
    ("code", "effect"),
    [
        (2103, "degraded"),
        (2105, "degraded"),
        (2157, "degraded"),
        (2110, "degraded"),
        (2104, "ok"),
        (2106, "ok"),
        (2158, "ok"),
        (1101, "ok"),
        (1102, "ok"),
        (2107, None),
        (2108, None),
        (2119, None),
        (1100, None),
        (201, None),
    ],
)
def test_market_data_effect(code: int, effect: str | None) -> None:
    assert market_data_effect(code) == effect


def run(codes: Iterable[int | tuple[int, str]]) -> frozenset[str]:
    state: frozenset[str] = frozenset()
    for item in codes:
        code, farm = item if isinstance(item, tuple) else (item, None)
        state = next_farm_state(state, code, farm)
    return state


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ([], "ok"),
        ([2104, 2106, 2158], "ok"),
        ([2103], "degraded"),
        ([2103, 2104], "ok"),
        ([2105], "degraded"),
        ([2105, 2106], "ok"),
        ([2105, 2104], "degraded"),  # the market farm's OK does not mend the HMDS farm
        ([2157], "degraded"),
        ([2157, 2158], "ok"),
        ([2157, 2106], "degraded"),
        ([2110], "degraded"),
        ([2110, 2104], "ok"),
        ([2110, 1101], "ok"),
        ([2110, 1102], "ok"),
        ([2110, 2106], "degraded"),
        ([2110, 2158], "degraded"),
        ([2103, 1101], "degraded"),  # 1101/1102 only clear the link notice
        ([2103, 2105, 2104], "degraded"),
        ([2103, 2105, 2104, 2106], "ok"),
        ([2103, 2110, 2104], "ok"),
        ([2103, 1100, 2119, 2107, 2108], "degraded"),  # other codes leave the state alone
        ([2104, 2103, 2103, 2104], "ok"),
    ],
)
def test_farm_reducer(codes: list[int], expected: str) -> None:
    assert market_data(run(codes)) == expected


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ([(2103, "usfarm"), (2104, "cashfarm")], "degraded"),
        ([(2103, "usfarm"), (2104, "usfarm")], "ok"),
        ([(2103, "usfarm"), (2103, "eufarm"), (2104, "usfarm")], "degraded"),
        ([(2103, "usfarm"), 2104], "ok"),  # an unnamed OK mends every farm of its kind
        ([2103, (2104, "usfarm")], "ok"),  # an unnamed break cannot be told apart
        ([(2110, "whatever"), (2104, "cashfarm")], "ok"),
        ([(2105, "ushmds"), (2106, "ushmds")], "ok"),
        ([(2157, "secdefnj"), (2158, "secdefil")], "degraded"),
    ],
)
def test_farm_reducer_with_farm_names(codes: list[int | tuple[int, str]], expected: str) -> None:
    assert market_data(run(codes)) == expected


def test_reducer_is_pure() -> None:
    state = frozenset({"market:usfarm"})
    assert next_farm_state(state, 2104, "usfarm") == frozenset()
    assert state == frozenset({"market:usfarm"})
    assert next_farm_state(state, 2119) is state


@pytest.mark.parametrize(
    ("message", "farm"),
    [
        ("Market data farm connection is broken:usfarm", "usfarm"),
        ("Market data farm connection is OK:usfarm.nj", "usfarm.nj"),
        ("HMDS data farm connection is OK:ushmds", "ushmds"),
        ("Sec-def data farm connection is OK:secdefnj", "secdefnj"),
        (
            "Connectivity between Trader Workstation and server is broken. "
            "It will be restored automatically.",
            None,
        ),
        ("no colon here", None),
        ("trailing colon:", None),
        ("", None),
    ],
)
def test_farm_from_message(message: str, farm: str | None) -> None:
    assert farm_from_message(message) == farm
