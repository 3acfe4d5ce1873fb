"""The ib_async adapter: connect, heartbeat, IB error handling. The only module importing ib_async.

It turns what the socket says into events for the lifecycle machine (disconnected,
heartbeat_lost, connectivity_lost) and into a status the API reads. Every deadline it
acts on (heartbeat interval and timeout) is a Clock sleep; ib_async's own connect
timeout is a bounded real-time I/O limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
from ib_async import IB
from loguru import logger

from node.clock import Clock
from node.events import Event, Trigger
from node.ib_errors import ErrorClass, classify, farm_from_message, market_data, next_farm_state


class BrokerError(Exception):
    """A connect attempt failed; str() says why in operator terms."""


@dataclass(frozen=True)
class ConnectionInfo:
    host: str
    port: int
    server_version: int
    accounts: tuple[str, ...]
    connected_since: datetime

    @property
    def account(self) -> str | None:
        return self.accounts[0] if self.accounts else None


@dataclass
class HeartbeatStatus:
    last_ok: datetime | None = None
    latency_ms: float | None = None
    misses: int = 0


@dataclass
class SyncSummary:
    open_orders: int
    positions: int
    executions: int

    def describe(self) -> str:
        return (
            f"{self.open_orders} open orders, {self.positions} positions, "
            f"{self.executions} executions reconciled"
        )


@dataclass
class _Watch:
    """A condition variable for 'something about the connection changed'."""

    changed: anyio.Event = field(default_factory=anyio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self.changed.wait()


class Broker:
    def __init__(
        self,
        clock: Clock,
        post: Callable[[Event], None],
        *,
        client_id: int,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        heartbeat_misses: int,
    ) -> None:
        self._clock = clock
        self._post = post
        self.client_id = client_id
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.heartbeat_misses = heartbeat_misses
        self._ib: IB | None = None
        self._leaving = False  # a disconnect we asked for is not a failure
        self.info: ConnectionInfo | None = None
        self.heartbeat = HeartbeatStatus()
        self.heartbeat_lost = False
        self.connectivity_lost = False  # IB 1100 until 1101/1102
        self.broken_farms: frozenset[str] = frozenset()
        self._watch = _Watch()
        self._poke = anyio.Event()

    # ------------------------------------------------------------------ status

    @property
    def connected(self) -> bool:
        return self._ib is not None and self._ib.isConnected()

    @property
    def market_data(self) -> str:
        return market_data(self.broken_farms)

    @property
    def healthy(self) -> bool:
        return self.connected and not self.heartbeat_lost and not self.connectivity_lost

    async def wait_healthy(self) -> None:
        """Return once heartbeats are answered and IB connectivity is back."""
        await self._watch.until(lambda: self.healthy)

    # ------------------------------------------------------------------ connect

    async def connect(self, host: str, port: int, attempt_timeout: float) -> ConnectionInfo:
        """One connect attempt with ib_async's full start-up sync, bounded in real time."""
        self.disconnect()
        ib = IB()
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += self._on_disconnected
        self._ib = ib
        self._leaving = False
        try:
            await ib.connectAsync(
                host, port, clientId=self.client_id, timeout=attempt_timeout, raiseSyncErrors=True
            )
        except (ConnectionError, OSError, TimeoutError) as exc:
            self.disconnect()
            raise BrokerError(_connect_failure(host, port, exc)) from None
        accounts = tuple(ib.managedAccounts())
        self.info = ConnectionInfo(
            host=host,
            port=port,
            server_version=ib.client.serverVersion(),
            accounts=accounts,
            connected_since=self._clock.now(),
        )
        self.heartbeat = HeartbeatStatus(last_ok=self._clock.now())
        self.heartbeat_lost = False
        self.connectivity_lost = False
        self.broken_farms = frozenset()
        self._watch.notify()
        logger.info(
            "connected to the gateway at {}:{} (server version {}, accounts {})",
            host, port, self.info.server_version, ",".join(accounts) or "none",
        )  # fmt: skip
        return self.info

    def disconnect(self) -> None:
        """Close the API connection on purpose (no `disconnected` event)."""
        ib, self._ib = self._ib, None
        self.info = None
        if ib is not None:
            self._leaving = True
            ib.disconnect()
            self._leaving = False
            self._watch.notify()

    def sync_summary(self) -> SyncSummary:
        """What the start-up sync brought back (orders, positions, executions)."""
        ib = self._require()
        return SyncSummary(len(ib.openTrades()), len(ib.positions()), len(ib.fills()))

    def _require(self) -> IB:
        if self._ib is None or not self._ib.isConnected():
            raise BrokerError("not connected to the gateway")
        return self._ib

    # ------------------------------------------------------------------ heartbeat

    def probe_now(self) -> None:
        """Make the heartbeat probe at once (after a time jump, e.g. laptop resume)."""
        self._poke.set()

    async def run_heartbeat(self) -> None:
        """Probe every interval; HEARTBEAT_MISSES misses in a row post heartbeat_lost.

        After a miss the next probe goes out at once rather than after another interval,
        so with the defaults (3 s, 3 s, 2) a hang is seen within 3 + 3 + 3 = 9 s.
        """
        while True:
            if not self.heartbeat.misses:
                await self._sleep_or_poke(self.heartbeat_interval)
            if not self.connected:
                return
            latency = await self._probe()
            now = self._clock.now()
            if latency is not None:
                self.heartbeat = HeartbeatStatus(last_ok=now, latency_ms=latency, misses=0)
                if self.heartbeat_lost:
                    self.heartbeat_lost = False
                    logger.info("heartbeat answered again ({:.1f} ms)", latency)
                self._watch.notify()
                continue
            self.heartbeat.misses += 1
            logger.warning(
                "heartbeat missed ({} of {}): the gateway did not answer within {:g} s",
                self.heartbeat.misses, self.heartbeat_misses, self.heartbeat_timeout,
            )  # fmt: skip
            if self.heartbeat.misses >= self.heartbeat_misses and not self.heartbeat_lost:
                self.heartbeat_lost = True
                self._watch.notify()
                self._post(
                    Event(Trigger.HEARTBEAT_LOST, f"{self.heartbeat.misses} heartbeats missed")
                )

    async def _sleep_or_poke(self, seconds: float) -> None:
        async with anyio.create_task_group() as tg:

            async def poked() -> None:
                await self._poke.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(poked)
            await self._clock.sleep(seconds)
            tg.cancel_scope.cancel()
        if self._poke.is_set():
            self._poke = anyio.Event()

    async def _probe(self) -> float | None:
        """reqCurrentTime bounded by a Clock timeout; any inbound traffic also proves life."""
        ib = self._ib
        if ib is None:
            return None
        seen_before = ib.wrapper.lastTime
        started = time.perf_counter()
        answered = False
        async with anyio.create_task_group() as tg:

            async def deadline() -> None:
                await self._clock.sleep(self.heartbeat_timeout)
                tg.cancel_scope.cancel()

            tg.start_soon(deadline)
            try:
                await ib.reqCurrentTimeAsync()
                answered = True
            except ConnectionError:
                pass
            tg.cancel_scope.cancel()
        if answered or (ib.isConnected() and ib.wrapper.lastTime != seen_before):
            return (time.perf_counter() - started) * 1000
        return None

    # ------------------------------------------------------------------ ib_async callbacks

    def _on_disconnected(self) -> None:
        if self._leaving:
            return
        self.info = None
        self._watch.notify()
        logger.warning("the gateway closed the API connection")
        self._post(Event(Trigger.DISCONNECTED, "the gateway closed the API connection"))

    def _on_error(self, req_id: int, code: int, message: str, contract: Any) -> None:
        kind = classify(code)
        before = self.market_data
        self.broken_farms = next_farm_state(self.broken_farms, code, farm_from_message(message))
        if self.market_data != before:
            logger.warning("market data {} (IB {} {})", self.market_data, code, message)
        if kind is ErrorClass.CONNECTIVITY_LOST:
            self.connectivity_lost = True
            self._watch.notify()
            logger.warning("IB {}: {} (orders blocked until restored)", code, message)
            self._post(Event(Trigger.CONNECTIVITY_LOST, f"IB {code}: {message}"))
        elif kind in (
            ErrorClass.CONNECTIVITY_RESTORED_DATA_LOST,
            ErrorClass.CONNECTIVITY_RESTORED_DATA_KEPT,
        ):
            self.connectivity_lost = False
            self._watch.notify()
            logger.info("IB {}: {}", code, message)
        elif kind in (ErrorClass.INFORMATIONAL, ErrorClass.DATA_DEGRADED, ErrorClass.DATA_RESTORED):
            logger.debug("IB {} (id {}): {}", code, req_id, message)
        else:
            logger.warning("IB {} {} (id {}): {}", code, kind.name.lower(), req_id, message)


def _connect_failure(host: str, port: int, exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing listens on {host}:{port} yet"
    if isinstance(exc, TimeoutError):
        return f"{host}:{port} accepted the connection but the API handshake did not complete"
    return f"connecting to {host}:{port} failed: {exc or type(exc).__name__}"
