"""Injected faults and bad input, seen by ib_async and by a raw protocol client."""

from __future__ import annotations

import struct
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from ib_async import IB, Stock

from node.sim import Simulator
from node.sim.server import OUTBOUND_LIMIT
from node.sim.wire import API_PREFIX, decode_payload, encode, encode_raw
from support import WAIT, connect_ib, until

pytestmark = pytest.mark.anyio


async def connect(sim: Simulator, client_id: int = 1) -> tuple[IB, list[int]]:
    codes: list[int] = []
    return await connect_ib(sim.port, client_id, codes), codes


class RawClient:
    """A hand-driven TWS API client, for what well-behaved libraries never send."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.reader = BufferedByteReceiveStream(stream)

    @classmethod
    async def open(cls, port: int) -> RawClient:
        return cls(await anyio.connect_tcp("127.0.0.1", port))

    async def hello(self, versions: str = "v157..178") -> list[str]:
        await self.stream.send(API_PREFIX + encode_raw(versions))
        return await self.receive()

    async def start(self, client_id: int, versions: str = "v157..178") -> int:
        version = int((await self.hello(versions))[0])
        await self.send([71, 2, client_id, ""])
        with anyio.fail_after(WAIT):
            while (await self.receive())[:4] != ["4", "2", "-1", "2158"]:  # last farm notice
                pass
        return version

    async def send(self, fields: list[Any]) -> None:
        await self.stream.send(encode(fields))

    async def receive(self) -> list[str]:
        with anyio.fail_after(WAIT):
            (length,) = struct.unpack(">I", await self.reader.receive_exactly(4))
            return decode_payload(await self.reader.receive_exactly(length))

    async def receive_error(self) -> list[str]:
        with anyio.fail_after(WAIT):
            while (fields := await self.receive())[0] != "4":
                pass
        return fields

    async def closed_by_server(self) -> bool:
        with anyio.fail_after(WAIT):
            try:
                while await self.stream.receive():
                    pass
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return True
        return False

    async def aclose(self) -> None:
        await self.stream.aclose()


# ---------------------------------------------------------------------- version negotiation


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        ("v157..178", 178),
        ("v100..157", 157),
        ("v157..176", 157),
        ("v100..200", 178),
        ("v178", 178),
        ("v157..178 +PACEAPI", 178),
    ],
)
async def test_server_answers_the_highest_implemented_version(
    sim: Simulator, versions: str, expected: int
) -> None:
    client = await RawClient.open(sim.port)
    reply = await client.hello(versions)
    assert len(reply) == 2
    assert int(reply[0]) == expected
    await client.aclose()


@pytest.mark.parametrize("versions", ["v100..156", "v179..200", "v158..177", "garbage"])
async def test_no_common_version_closes_the_connection(sim: Simulator, versions: str) -> None:
    client = await RawClient.open(sim.port)
    await client.stream.send(API_PREFIX + encode_raw(versions))
    assert await client.closed_by_server()


# ---------------------------------------------------------------------- faults


async def test_drop_all_disconnects_every_client(sim: Simulator) -> None:
    first, _ = await connect(sim, 1)
    second, _ = await connect(sim, 2)
    assert sim.faults.drop_all() == 2
    await until(lambda: not first.isConnected() and not second.isConnected())
    await until(lambda: not sim.sessions)
    again, _ = await connect(sim, 1)  # the port still serves
    again.disconnect()


async def test_silent_gateway_answers_nothing_until_it_recovers(sim: Simulator) -> None:
    ib, _ = await connect(sim)
    try:
        sim.faults.set_silent(True)
        # Absence: nothing may arrive while silent (bounded wait).
        with anyio.move_on_after(0.5) as scope:
            await ib.reqCurrentTimeAsync()
        assert scope.cancelled_caught
        assert ib.isConnected()  # the socket stays open
        sim.faults.set_silent(False)
        with anyio.fail_after(WAIT):
            assert await ib.reqCurrentTimeAsync() is not None
    finally:
        ib.disconnect()


async def test_silent_gateway_leaves_new_connections_unanswered(sim: Simulator) -> None:
    sim.faults.set_silent(True)
    ib = IB()
    with pytest.raises(TimeoutError):
        await ib.connectAsync("127.0.0.1", sim.port, clientId=1, timeout=0.5)
    ib.disconnect()


async def test_handshake_stall_accepts_but_never_completes(sim: Simulator) -> None:
    established, _ = await connect(sim, 1)
    sim.faults.set_handshake_stall(True)
    ib = IB()
    with pytest.raises(TimeoutError):
        await ib.connectAsync("127.0.0.1", sim.port, clientId=2, timeout=0.5)
    ib.disconnect()
    # Sessions already up are untouched, and the fault clears.
    assert await established.reqCurrentTimeAsync() is not None
    sim.faults.set_handshake_stall(False)
    later, _ = await connect(sim, 2)
    later.disconnect()
    established.disconnect()


@pytest.mark.parametrize("code", [1100, 1101, 1102, 2103, 2104, 2105, 2106, 2110, 2157, 2158])
async def test_notices_reach_every_client(sim: Simulator, code: int) -> None:
    first, first_codes = await connect(sim, 1)
    second, second_codes = await connect(sim, 2)
    try:
        assert sim.faults.send_notice(code) == 2
        await until(lambda: code in first_codes[3:] and code in second_codes[3:])
    finally:
        first.disconnect()
        second.disconnect()


async def test_connectivity_loss_pauses_streaming_and_1101_drops_subscriptions(
    sim: Simulator,
) -> None:
    ib, _ = await connect(sim)
    try:
        [contract] = await ib.qualifyContractsAsync(Stock("QQQ", "SMART", "USD"))
        ticker = ib.reqMktData(contract)
        await until(lambda: ticker.last == sim.market.quote("QQQ").last)
        sim.faults.send_notice(1100)
        assert sim.faults.streaming_paused
        sim.faults.send_notice(1102)  # restored, data maintained: still subscribed
        sim.set_price("QQQ", 401.0)
        await until(lambda: ticker.last == 401.0)
        sim.faults.send_notice(1101)  # restored, data lost: the subscription is gone
        assert all(not s.subs.market_data for s in sim.sessions.values())
    finally:
        ib.disconnect()


async def test_latency_delays_responses(sim: Simulator) -> None:
    ib, _ = await connect(sim)
    try:
        sim.faults.set_latency(0.3)
        started = anyio.current_time()
        await ib.reqCurrentTimeAsync()
        # A lower bound on an injected delay: it cannot come back sooner.
        assert anyio.current_time() - started >= 0.3
        sim.faults.set_latency(0)
    finally:
        ib.disconnect()


async def test_new_client_during_an_outage_hears_1100(sim: Simulator) -> None:
    sim.faults.send_notice(1100)
    ib, codes = await connect(sim)
    await until(lambda: 1100 in codes)
    ib.disconnect()


# ---------------------------------------------------------------------- bad input


async def test_bad_input_never_disturbs_other_clients(sim: Simulator) -> None:
    ib, _ = await connect(sim, 1)
    try:
        # Not an API client at all.
        garbage = await RawClient.open(sim.port)
        await garbage.stream.send(b"GET / HTTP/1.1\r\n\r\n")
        assert await garbage.closed_by_server()

        # An absurd frame length.
        huge = await RawClient.open(sim.port)
        await huge.start(21)
        await huge.stream.send(struct.pack(">I", 0x7FFFFFFF) + b"x")
        assert await huge.closed_by_server()

        raw = await RawClient.open(sim.port)
        await raw.start(22)
        await raw.send([999, 1, 2])  # unknown message id
        assert (await raw.receive_error())[3] == "320"
        await raw.send([49])  # reqCurrentTime with its version missing: still answered
        assert (await raw.receive())[0] == "49"
        await raw.send([9, 8, "x"])  # contract details with a non-numeric request id
        assert (await raw.receive_error())[3] == "320"
        await raw.send([61])  # fine
        assert (await raw.receive())[0] == "62"
        await raw.send(["", "junk"])  # no message id
        assert (await raw.receive_error())[3] == "320"
        await raw.send([3, 77, 0, "AAPL", "STK"])  # placeOrder cut short
        error = await raw.receive_error()
        assert (error[2], error[3]) == ("77", "320")
        await raw.aclose()

        assert await ib.reqCurrentTimeAsync() is not None
        assert 1 in sim.sessions
    finally:
        ib.disconnect()


async def test_requests_before_start_api_are_ignored(sim: Simulator) -> None:
    raw = await RawClient.open(sim.port)
    await raw.hello()
    await raw.send([49, 1])  # before startApi: dropped, as a gateway would
    await raw.send([71, 2, 30, ""])
    first = await raw.receive()
    assert first[0] in ("15", "9")
    await raw.aclose()


async def test_client_that_never_reads_is_cut_off_alone(sim: Simulator) -> None:
    ib, _ = await connect(sim, 1)
    try:
        raw = await RawClient.open(sim.port)
        await raw.start(40)
        session = sim.sessions[40]
        # Flood the outbound queue past its bound without the client reading.
        for _ in range(60):
            await raw.send([61, 1])  # each asks for positions again
        for _ in range(OUTBOUND_LIMIT + 1):
            session.send([49, 1, 0])
        await until(lambda: 40 not in sim.sessions)
        assert await ib.reqCurrentTimeAsync() is not None
        await raw.aclose()
    finally:
        ib.disconnect()
