"""TWS API framing: length-prefixed frames of NUL-terminated ASCII fields.

Both directions after the client's raw ``API\\0`` prefix use the same framing:
a 4-byte big-endian length, then the payload ``field\\0field\\0...``.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

API_PREFIX = b"API\0"
# Real gateways refuse frames above 16 MiB; a longer length prefix is garbage.
MAX_FRAME = 0xFFFFFF

UNSET_DOUBLE = 1.7976931348623157e308
UNSET_INTEGER = 2**31 - 1
UNSET_DOUBLE_TEXT = "1.7976931348623157E308"

# Layouts this simulator implements, highest first (see tws-protocol.md §1.4).
SUPPORTED_VERSIONS = (178, 157)

Field = str | int | float | bool | None


class ProtocolError(Exception):
    """The peer sent bytes that do not follow the framing."""


def format_field(value: Field) -> str:
    """Render one outgoing field.

    Integers must be plain digits (ibapi 9.81 calls ``int()`` on them), so whole
    floats are written without a decimal point; unset doubles use IB's sentinel.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value >= UNSET_DOUBLE or math.isinf(value) or math.isnan(value):
            return UNSET_DOUBLE_TEXT
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.8f}".rstrip("0").rstrip(".")
    return value


def encode(fields: Iterable[Field]) -> bytes:
    payload = "".join(format_field(f) + "\0" for f in fields).encode("ascii", "replace")
    return struct.pack(">I", len(payload)) + payload


def encode_raw(payload: str) -> bytes:
    """A frame whose payload is given verbatim (the client's version range)."""
    data = payload.encode("ascii")
    return struct.pack(">I", len(data)) + data


def decode_payload(payload: bytes) -> list[str]:
    """Split a frame's payload into fields, dropping the empty tail after the last NUL."""
    text = payload.decode("utf-8", "backslashreplace")
    fields = text.split("\0")
    if fields and fields[-1] == "":
        fields.pop()
    return fields


def frame_length(header: bytes) -> int:
    (length,) = struct.unpack(">I", header)
    if length > MAX_FRAME:
        raise ProtocolError(f"frame length {length} exceeds {MAX_FRAME}")
    return int(length)


@dataclass(frozen=True)
class VersionRange:
    low: int
    high: int
    options: str = ""


_RANGE = re.compile(r"^v(\d+)(?:\.\.(\d+))?(?:\s+(.*))?$", re.DOTALL)


def parse_version_range(payload: bytes) -> VersionRange:
    """Parse the hello frame, e.g. ``v157..178`` or ``v100..157 +PACEAPI``."""
    text = payload.decode("ascii", "replace").rstrip("\0")
    match = _RANGE.match(text)
    if match is None:
        raise ProtocolError(f"malformed version range {text!r}")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    return VersionRange(low, high, match.group(3) or "")


def negotiate(client: VersionRange) -> int | None:
    """The highest implemented layout inside the client's range, or None."""
    for version in SUPPORTED_VERSIONS:
        if client.low <= version <= client.high:
            return version
    return None


def parse_float(text: str) -> float | None:
    """A number a client sent, or None for IB's 'unset' spellings."""
    text = text.strip()
    if text in ("", str(UNSET_INTEGER)):
        return None
    if text.lower() == "infinite":
        return math.inf
    value = float(text)
    if value >= UNSET_DOUBLE:
        return None
    return value


def parse_int(text: str, default: int = 0) -> int:
    value = parse_float(text)
    if value is None:
        return default
    return int(value)


def parse_bool(text: str) -> bool:
    return parse_int(text) != 0
