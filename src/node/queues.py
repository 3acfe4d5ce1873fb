"""Draining a memory stream in bursts: what arrived together is handled together."""

from __future__ import annotations

import contextlib
from typing import TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

T = TypeVar("T")


def with_queued(first: T, stream: MemoryObjectReceiveStream[T]) -> list[T]:
    """`first` and every item already waiting behind it, without waiting for more."""
    items = [first]
    with contextlib.suppress(anyio.WouldBlock):
        while True:
            items.append(stream.receive_nowait())
    return items
