"""Helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import anyio
from ib_async import IB

from node.safety import GateContext
from node.sim.engine import OrderRequest as SimOrderRequest

WAIT = 20  # generous: every wait ends as soon as its condition holds


async def until(predicate: Callable[[], Any]) -> None:
    """Wait until a condition on a client's state holds, failing after WAIT seconds.

    ib_async updates its state from socket callbacks without an awaitable per field,
    so this polls; it never waits longer than the condition takes.
    """
    with anyio.fail_after(WAIT):
        while not predicate():  # noqa: ASYNC110 - no event exists for arbitrary client state
            await anyio.sleep(0.01)


async def connect_ib(port: int, client_id: int = 1, codes: list[int] | None = None) -> IB:
    """An ib_async client after its full start-up sync; error codes go to ``codes``."""
    ib = IB()
    if codes is not None:
        ib.errorEvent += lambda req_id, code, message, contract: codes.append(code)
    await ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=WAIT, raiseSyncErrors=True)
    return ib


async def drive(clock: Any, predicate: Callable[[], Any], step: float = 1.0) -> None:
    """Move a ManualClock forward `step` seconds at a time until the condition holds.

    Between steps the real sockets get a moment to carry what the new time set off;
    the outcome never depends on how long that moment is, only on the condition.
    """
    with anyio.fail_after(WAIT * 3):
        while not predicate():
            clock.advance(step)
            await anyio.sleep(0.02)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free port below the ephemeral range (Linux: 32768-60999), never one handed out
    before in this process.

    A port the OS hands out for port 0 comes from the same range as the local ports of
    outgoing connections, so a server restarted later on it can find it taken. The ports
    of one daemon are drawn before any is bound: without the memory, two draws could give
    the same port (it happened: the simulator's gateway and control ports collided).
    """
    import random
    import socket

    for _ in range(100):
        port = random.randrange(20000, 32000)
        if port in _HANDED_OUT:
            continue
        _HANDED_OUT.add(port)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")


def sim_order(**changes: object) -> SimOrderRequest:
    """A placeOrder request as the simulator's engine takes it: a 10-share AAPL market order
    of client 1, order id 1, unless changed."""
    return replace(_SIM_ORDER, **changes)  # type: ignore[arg-type]


_SIM_ORDER = SimOrderRequest(
    client_id=1,
    order_id=1,
    symbol="AAPL",
    con_id=0,
    sec_type="STK",
    currency="USD",
    exchange="SMART",
    action="BUY",
    total_quantity=10,
    order_type="MKT",
    lmt_price=None,
    aux_price=None,
    tif="DAY",
    account="",
    order_ref="ref",
)


# Every gate open: a test changes the one fact it is about (dataclasses.replace).
OPEN_GATE = GateContext(
    kill_switch=False,
    state="SERVING",
    connected=True,
    next_retry_in=None,
    orders_enabled=True,
    armed=True,
    trading_mode="paper",
    live_override=False,
    account="DU1234567",
    max_order_qty=None,
    max_order_notional=None,
    max_open_orders=None,
    open_orders=0,
    symbol_allowlist=frozenset(),
    max_orders_per_minute=None,
    orders_last_minute=0,
    rate_window_frees_in=None,
)


def frame(*fields: str) -> bytes:
    """One TWS API message: a 4-byte big-endian length, then each field ending in NUL."""
    body = "".join(f"{field}\0" for field in fields).encode()
    return len(body).to_bytes(4, "big") + body


def split_frames(data: bytes) -> list[list[str]]:
    """The messages in `data`, each as its fields; fails on a partial one."""
    messages: list[list[str]] = []
    while data:
        end = 4 + int.from_bytes(data[:4], "big")
        assert len(data) >= end, "a partial message"
        messages.append(data[4:end].decode().split("\0")[:-1])
        data = data[end:]
    return messages
