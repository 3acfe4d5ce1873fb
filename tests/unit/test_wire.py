"""Framing, field formatting and version negotiation."""

from __future__ import annotations

import struct

import pytest

from node.sim.wire import (
    MAX_FRAME,
    UNSET_DOUBLE,
    UNSET_INTEGER,
    ProtocolError,
    VersionRange,
    decode_payload,
    encode,
    format_field,
    frame_length,
    negotiate,
    parse_float,
    parse_int,
    parse_version_range,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (True, "1"),
        (False, "0"),
        (7, "7"),
        (-1, "-1"),
        (10.0, "10"),  # whole floats as digits: ibapi 9.81 calls int() on sizes
        (186.36, "186.36"),
        (0.005, "0.005"),
        (1e-9, "0"),
        (UNSET_DOUBLE, "1.7976931348623157E308"),
        (float("inf"), "1.7976931348623157E308"),
        ("DU1", "DU1"),
    ],
)
def test_format_field(value: object, text: str) -> None:
    assert format_field(value) == text  # type: ignore[arg-type]


def test_encode_frames_nul_terminated_fields() -> None:
    frame = encode([49, 1, "x"])
    assert frame == struct.pack(">I", 7) + b"49\x001\x00x\x00"
    assert decode_payload(frame[4:]) == ["49", "1", "x"]


def test_decode_keeps_empty_fields() -> None:
    assert decode_payload(b"6\x002\x00\x00DU1\x00") == ["6", "2", "", "DU1"]


def test_frame_length_refuses_absurd_sizes() -> None:
    assert frame_length(struct.pack(">I", 10)) == 10
    with pytest.raises(ProtocolError):
        frame_length(struct.pack(">I", MAX_FRAME + 1))


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"v157..178", VersionRange(157, 178)),
        (b"v100..157", VersionRange(100, 157)),
        (b"v178", VersionRange(178, 178)),
        (b"v157..178 +PACEAPI", VersionRange(157, 178, "+PACEAPI")),
    ],
)
def test_parse_version_range(payload: bytes, expected: VersionRange) -> None:
    assert parse_version_range(payload) == expected


@pytest.mark.parametrize("payload", [b"", b"157..178", b"vX..Y", b"v1..2..3"])
def test_parse_version_range_refuses_garbage(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_version_range(payload)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (157, 178, 178),  # ib_async 2.1
        (100, 157, 157),  # ibapi 9.81
        (157, 176, 157),  # ib_insync 0.9.86: never claim 158-177
        (100, 205, 178),
        (100, 156, None),
        (179, 205, None),
        (158, 177, None),
    ],
)
def test_negotiate(low: int, high: int, expected: int | None) -> None:
    assert negotiate(VersionRange(low, high)) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("", None),
        (str(UNSET_INTEGER), None),
        ("1.7976931348623157e+308", None),
        ("1.7976931348623157E308", None),
        ("10", 10.0),
        ("10.5", 10.5),
        ("Infinite", float("inf")),
    ],
)
def test_parse_float_reads_ib_unset_spellings(text: str, value: float | None) -> None:
    assert parse_float(text) == value


def test_parse_int_defaults_unset() -> None:
    assert parse_int("", 5) == 5
    assert parse_int("12.0") == 12
    with pytest.raises(ValueError, match="could not convert"):
        parse_int("abc")
