"""The simulator's TCP server: one Session per client connection, one Simulator for them all."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream
from loguru import logger

from node.sim import messages as m
from node.sim.account import Account
from node.sim.engine import (
    AccountChanged,
    Event,
    OrderChanged,
    OrderEngine,
    OrderError,
    OrderFilled,
    SimOrder,
)
from node.sim.faults import NOTICES, Faults
from node.sim.market import Market
from node.sim.requests import Cursor, RequestError, parse_place_order, read_contract
from node.sim.state import StateFile
from node.sim.universe import Instrument, lookup
from node.sim.wire import (
    API_PREFIX,
    ProtocolError,
    decode_payload,
    encode,
    frame_length,
    negotiate,
    parse_version_range,
)

# Messages queued for a client that does not read them; beyond this it is cut off.
OUTBOUND_LIMIT = 50_000
# Messages without a version field carry their request id at index 1, the others at 2.
_ID_AT_ONE = {3, 20, 25, 92, 93, 94, 95, 99}
MESSAGE_NAMES = {
    1: "reqMktData",
    2: "cancelMktData",
    3: "placeOrder",
    4: "cancelOrder",
    5: "reqOpenOrders",
    6: "reqAccountUpdates",
    7: "reqExecutions",
    8: "reqIds",
    9: "reqContractDetails",
    15: "reqAutoOpenOrders",
    16: "reqAllOpenOrders",
    17: "reqManagedAccts",
    20: "reqHistoricalData",
    25: "cancelHistoricalData",
    49: "reqCurrentTime",
    58: "reqGlobalCancel",
    59: "reqMarketDataType",
    61: "reqPositions",
    62: "reqAccountSummary",
    63: "cancelAccountSummary",
    64: "cancelPositions",
    71: "startApi",
    74: "reqPositionsMulti",
    75: "cancelPositionsMulti",
    76: "reqAccountUpdatesMulti",
    77: "cancelAccountUpdatesMulti",
    92: "reqPnL",
    93: "cancelPnL",
    94: "reqPnLSingle",
    95: "cancelPnLSingle",
    99: "reqCompletedOrders",
}
FARM_OK_AT_CONNECT = (2104, 2106, 2158)
_CONNECTION_ENDED = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)
# Account summary tags that report in no currency.
_NO_CURRENCY_TAGS = {"AccountType", "Cushion", "DayTradesRemaining", "Leverage-S"}


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 4002
    account: str = "DU1234567"
    seed: int = 0
    control_port: int | None = None
    state_file: Path | None = None
    tick_interval: float | None = 1.0  # None: prices move only when told (tests)


@dataclass
class MarketDataSub:
    symbol: str
    delayed: bool


@dataclass
class Subscriptions:
    market_data: dict[int, MarketDataSub] = field(default_factory=dict)
    positions: bool = False
    account_updates: bool = False
    account_multi: set[int] = field(default_factory=set)
    summary: dict[int, list[str]] = field(default_factory=dict)
    pnl: set[int] = field(default_factory=set)
    pnl_single: dict[int, str] = field(default_factory=dict)


class Session:
    """One client connection: handshake, request dispatch and an ordered outbound queue."""

    def __init__(self, sim: Simulator, stream: SocketStream, number: int) -> None:
        self.sim = sim
        self.stream = stream
        self.number = number
        address = stream.extra(SocketAttribute.remote_address)
        self.peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        self.version = 0
        self.client_id: int | None = None
        self.data_type = 1
        self.subs = Subscriptions()
        self._outbox, self._outbox_reader = anyio.create_memory_object_stream[
            tuple[float, bytes | None]
        ](OUTBOUND_LIMIT)
        self._scope = anyio.CancelScope()
        self._handlers: dict[int, Callable[[list[str]], None]] = {
            1: self._req_mkt_data,
            2: self._cancel_mkt_data,
            3: self._place_order,
            4: self._cancel_order,
            5: self._req_open_orders,
            6: self._req_account_updates,
            7: self._req_executions,
            8: self._req_ids,
            9: self._req_contract_details,
            15: lambda fields: None,
            16: self._req_all_open_orders,
            17: lambda fields: self.send(m.managed_accounts(self.sim.account)),
            20: self._req_historical_data,
            25: lambda fields: None,
            49: lambda fields: self.send(m.current_time(int(time.time()))),
            58: lambda fields: self.sim.engine.global_cancel(),
            59: self._req_market_data_type,
            61: self._req_positions,
            62: self._req_account_summary,
            63: self._cancel_account_summary,
            64: self._cancel_positions,
            71: self._start_api,
            74: self._req_positions_multi,
            75: lambda fields: None,
            76: self._req_account_updates_multi,
            77: self._cancel_account_updates_multi,
            92: self._req_pnl,
            93: self._cancel_pnl,
            94: self._req_pnl_single,
            95: self._cancel_pnl_single,
            99: self._req_completed_orders,
        }

    @property
    def label(self) -> str:
        return f"client {self.client_id}" if self.client_id is not None else f"conn #{self.number}"

    # ------------------------------------------------------------------ plumbing

    async def run(self) -> None:
        with self._scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write_loop)
                try:
                    await self._read_loop()
                except _CONNECTION_ENDED:
                    pass
                except ProtocolError as exc:
                    logger.warning("{}: protocol violation, closing: {}", self.label, exc)
                finally:
                    tg.cancel_scope.cancel()

    def close(self) -> None:
        """Cut the connection at once (its run() returns and the stream is closed)."""
        self._scope.cancel()

    def close_after_flush(self) -> None:
        """Close once everything queued so far has been written (duplicate client id)."""
        self._enqueue(None)

    def send(self, fields: m.Message) -> None:
        if self.sim.faults.silent:
            return
        self._enqueue(encode(fields))

    def _enqueue(self, data: bytes | None) -> None:
        try:
            self._outbox.send_nowait((anyio.current_time() + self.sim.faults.latency, data))
        except anyio.WouldBlock:
            logger.warning("{}: not reading its messages; disconnecting it", self.label)
            self.close()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def _write_loop(self) -> None:
        async with self._outbox_reader:
            async for due, data in self._outbox_reader:
                delay = due - anyio.current_time()
                if delay > 0:
                    await anyio.sleep(delay)
                # Everything already queued and due goes out in one write: a fill sends
                # dozens of messages, and one syscall each was the server's main cost.
                batch = [data]
                while batch[-1] is not None and not self.sim.faults.latency:
                    try:
                        _, more = self._outbox_reader.receive_nowait()
                    except anyio.WouldBlock:
                        break
                    batch.append(more)
                payload = b"".join(item for item in batch if item is not None)
                try:
                    if payload:
                        await self.stream.send(payload)
                except _CONNECTION_ENDED:
                    self.close()
                    return
                if batch[-1] is None:
                    self.close()
                    return

    async def _read_loop(self) -> None:
        reader = BufferedByteReceiveStream(self.stream)
        prefix = await reader.receive_exactly(len(API_PREFIX))
        if self.sim.faults.handshake_stall or self.sim.faults.silent:
            logger.warning("{} from {}: handshake left unanswered (fault)", self.label, self.peer)
            while True:  # keep reading so the client's writes never block
                await reader.receive()
        if prefix != API_PREFIX:
            logger.warning(
                "{} from {}: not a TWS API client (prefix {!r}); closing",
                self.label,
                self.peer,
                prefix,
            )
            return
        hello = await self._read_frame(reader)
        requested = parse_version_range(hello)
        version = negotiate(requested)
        if version is None:
            logger.warning(
                "{} from {}: no common server version for v{}..{}; closing",
                self.label,
                self.peer,
                requested.low,
                requested.high,
            )
            return
        self.version = version
        self.send(m.version_reply(version))
        logger.info(
            "{} from {}: handshake v{}..{} -> server version {}",
            self.label,
            self.peer,
            requested.low,
            requested.high,
            version,
        )
        while True:
            payload = await self._read_frame(reader)
            if self.sim.faults.silent:
                continue
            self._dispatch(decode_payload(payload))

    async def _read_frame(self, reader: BufferedByteReceiveStream) -> bytes:
        length = frame_length(await reader.receive_exactly(4))
        return await reader.receive_exactly(length) if length else b""

    def _dispatch(self, fields: list[str]) -> None:
        if not fields or not fields[0].isdigit():
            logger.warning("{}: dropped a message with no message id: {!r}", self.label, fields[:3])
            self.send(m.error(self.version, -1, 320, "Error reading request: message id missing"))
            return
        msg_id = int(fields[0])
        handler = self._handlers.get(msg_id)
        if self.client_id is None and msg_id != 71:
            logger.warning(
                "{}: {} before startApi ignored", self.label, MESSAGE_NAMES.get(msg_id, msg_id)
            )
            return
        if handler is None:
            logger.warning("{}: unsupported message id {} dropped", self.label, msg_id)
            self.send(
                m.error(
                    self.version,
                    _request_id(fields),
                    320,
                    f"Error reading request: unsupported message id {msg_id}",
                )
            )
            return
        if msg_id not in (3, 71):  # placeOrder and startApi log their own line
            logger.info(
                "{}: {} {}", self.label, MESSAGE_NAMES.get(msg_id, msg_id), ",".join(fields[1:6])
            )
        try:
            handler(fields)
        except (RequestError, ValueError, IndexError) as exc:
            req_id = _request_id(fields)
            logger.warning(
                "{}: malformed {} (id {}): {}",
                self.label,
                MESSAGE_NAMES.get(msg_id, msg_id),
                req_id,
                exc,
            )
            self.send(m.error(self.version, req_id, 320, f"Error reading request: {exc}"))

    # ------------------------------------------------------------------ session set-up

    def _start_api(self, fields: list[str]) -> None:
        if self.client_id is not None:
            return
        client_id = Cursor(fields, 2).integer()
        if self.sim.sessions.get(client_id) is not None:
            logger.warning(
                "conn #{} from {}: client id {} already in use; refused (326)",
                self.number,
                self.peer,
                client_id,
            )
            self.send(
                m.error(
                    self.version,
                    -1,
                    326,
                    "Unable to connect as the client id is already in use. "
                    "Retry with a unique client id.",
                )
            )
            self.close_after_flush()
            return
        self.client_id = client_id
        self.sim.sessions[client_id] = self
        logger.info(
            "client {} connected from {} (server version {})", client_id, self.peer, self.version
        )
        self.send(m.managed_accounts(self.sim.account))
        self.send(m.next_valid_id(self.sim.engine.next_valid_id(client_id)))
        for code in FARM_OK_AT_CONNECT:
            self.send(m.error(self.version, -1, code, NOTICES[code]))
        if self.sim.faults.connectivity_lost:
            self.send(m.error(self.version, -1, 1100, NOTICES[1100]))

    def _req_ids(self, fields: list[str]) -> None:
        assert self.client_id is not None
        self.send(m.next_valid_id(self.sim.engine.next_valid_id(self.client_id)))

    # ------------------------------------------------------------------ account

    def _req_positions(self, fields: list[str]) -> None:
        self.subs.positions = True
        for pos in self.sim.engine.account.positions.values():
            if pos.quantity:
                self.send(
                    m.position(
                        self.sim.account, _instrument(pos.symbol), pos.quantity, pos.avg_cost
                    )
                )
        self.send(m.position_end())

    def _cancel_positions(self, fields: list[str]) -> None:
        self.subs.positions = False

    def _req_account_updates(self, fields: list[str]) -> None:
        c = Cursor(fields, 2)
        subscribe = c.flag()
        account = c.text() if len(fields) > 3 else ""
        if account and account != self.sim.account:
            self.send(
                m.error(
                    self.version,
                    -1,
                    321,
                    f"Error validating request:-'account' : cause - Invalid account code {account}",
                )
            )
            return
        self.subs.account_updates = subscribe
        if subscribe:
            self.sim.push_account_updates(self, None)
            self.send(m.account_download_end(self.sim.account))

    def _req_account_updates_multi(self, fields: list[str]) -> None:
        c = Cursor(fields, 2)
        req_id = c.integer()
        account = c.text()
        model = c.text()
        if account and account not in (self.sim.account, "All"):
            self.send(m.error(self.version, req_id, 321, f"Invalid account code {account}"))
            return
        self.subs.account_multi.add(req_id)
        self.sim.push_account_multi(self, req_id, model)
        self.send(m.account_update_multi_end(req_id))

    def _cancel_account_updates_multi(self, fields: list[str]) -> None:
        self.subs.account_multi.discard(Cursor(fields, 2).integer())

    def _req_positions_multi(self, fields: list[str]) -> None:
        c = Cursor(fields, 2)
        req_id = c.integer()
        c.text()
        model = c.text()
        for pos in self.sim.engine.account.positions.values():
            if pos.quantity:
                self.send(
                    m.position_multi(
                        req_id,
                        self.sim.account,
                        _instrument(pos.symbol),
                        pos.quantity,
                        pos.avg_cost,
                        model,
                    )
                )
        self.send(m.position_multi_end(req_id))

    def _req_account_summary(self, fields: list[str]) -> None:
        c = Cursor(fields, 2)
        req_id = c.integer()
        c.text()  # group: the simulator has one account, so every group is that account
        tags = [t for t in c.text().split(",") if t]
        self.subs.summary[req_id] = tags
        self.sim.push_account_summary(self, req_id, tags)
        self.send(m.account_summary_end(req_id))

    def _cancel_account_summary(self, fields: list[str]) -> None:
        self.subs.summary.pop(Cursor(fields, 2).integer(), None)

    def _req_pnl(self, fields: list[str]) -> None:
        req_id = Cursor(fields, 1).integer()
        self.subs.pnl.add(req_id)
        self.sim.push_pnl(self, req_id)

    def _cancel_pnl(self, fields: list[str]) -> None:
        self.subs.pnl.discard(Cursor(fields, 1).integer())

    def _req_pnl_single(self, fields: list[str]) -> None:
        c = Cursor(fields, 1)
        req_id = c.integer()
        c.skip(2)  # account, modelCode
        instrument = lookup(con_id=c.integer())
        if instrument is None:
            self.send(
                m.error(
                    self.version,
                    req_id,
                    200,
                    "No security definition has been found for the request",
                )
            )
            return
        self.subs.pnl_single[req_id] = instrument.symbol
        self.sim.push_pnl_single(self, req_id, instrument.symbol)

    def _cancel_pnl_single(self, fields: list[str]) -> None:
        self.subs.pnl_single.pop(Cursor(fields, 1).integer(), None)

    # ------------------------------------------------------------------ orders

    def _place_order(self, fields: list[str]) -> None:
        assert self.client_id is not None
        request = parse_place_order(fields, self.version, self.client_id)
        logger.info(
            "client {}: placeOrder id={} {} {} {} {} lmt={} aux={} tif={} ref={!r}{}",
            self.client_id,
            request.order_id,
            request.action,
            request.total_quantity,
            request.symbol,
            request.order_type,
            request.lmt_price,
            request.aux_price,
            request.tif,
            request.order_ref,
            " what-if" if request.what_if else "",
        )
        if request.what_if:
            problem = self.sim.engine.validate(request)
            if problem is not None:
                self.send(m.error(self.version, request.order_id, *problem))
                return
            preview = self.sim.engine.what_if(request)
            order = SimOrder(
                client_id=self.client_id,
                order_id=request.order_id,
                perm_id=0,
                symbol=_instrument(request.symbol).symbol,
                con_id=_instrument(request.symbol).con_id,
                exchange=request.exchange or "SMART",
                action=request.action,
                total_quantity=request.total_quantity,
                order_type=request.order_type,
                lmt_price=request.lmt_price,
                aux_price=request.aux_price,
                tif=request.tif,
                account=self.sim.account,
                order_ref=request.order_ref,
                outside_rth=request.outside_rth,
                good_till_date=request.good_till_date,
            )
            self.send(m.open_order(self.version, _instrument(order.symbol), order, what_if=preview))
            return
        self.sim.engine.place(request)

    def _cancel_order(self, fields: list[str]) -> None:
        assert self.client_id is not None
        self.sim.engine.cancel(self.client_id, Cursor(fields, 2).integer())

    def _send_open_order(self, order: SimOrder) -> None:
        self.send(m.open_order(self.version, _instrument(order.symbol), order))
        self.send(m.order_status(order))

    def _req_open_orders(self, fields: list[str]) -> None:
        for order in self.sim.engine.open_orders(self.client_id):
            self._send_open_order(order)
        self.send(m.open_order_end())

    def _req_all_open_orders(self, fields: list[str]) -> None:
        for order in self.sim.engine.open_orders():
            self._send_open_order(order)
        self.send(m.open_order_end())

    def _req_completed_orders(self, fields: list[str]) -> None:
        for order in self.sim.engine.completed_orders():
            self.send(m.completed_order(self.version, _instrument(order.symbol), order))
        self.send(m.completed_orders_end())

    def _req_executions(self, fields: list[str]) -> None:
        c = Cursor(fields, 2)
        req_id = c.integer()
        client_id = c.integer()
        account = c.text()
        since = c.text()
        symbol = c.text().upper()
        sec_type = c.text().upper()
        c.text()  # exchange
        side = c.text().upper()
        since_epoch = _parse_filter_time(since)
        for ex in self.sim.engine.executions:
            if (
                (client_id and ex.client_id != client_id)
                or (account and ex.account != account)
                or (symbol and ex.symbol != symbol)
                or (sec_type and sec_type != "STK")
                or (side and not _side_matches(side, ex.side))
                or (since_epoch is not None and ex.time < since_epoch)
            ):
                continue
            self.send(m.exec_details(self.version, req_id, _instrument(ex.symbol), ex))
            self.send(m.commission_report(ex))
        self.send(m.exec_details_end(req_id))

    # ------------------------------------------------------------------ contracts and data

    def _req_contract_details(self, fields: list[str]) -> None:
        c = Cursor(fields, 2)
        req_id = c.integer()
        ref = read_contract(c)
        instrument = lookup(ref.symbol, ref.con_id, ref.sec_type.upper(), ref.currency.upper())
        if instrument is None:
            self.send(
                m.error(
                    self.version,
                    req_id,
                    200,
                    "No security definition has been found for the request",
                )
            )
            return
        self.send(m.contract_data(self.version, req_id, instrument, ref.exchange or "SMART"))
        self.send(m.contract_data_end(req_id))

    def _req_market_data_type(self, fields: list[str]) -> None:
        data_type = Cursor(fields, 2).integer()
        if data_type not in (1, 2, 3, 4):
            raise RequestError(f"market data type {data_type} is not 1-4")
        self.data_type = data_type

    def _req_mkt_data(self, fields: list[str]) -> None:
        c = Cursor(fields, 2)
        req_id = c.integer()
        ref = read_contract(c)
        instrument = lookup(ref.symbol, ref.con_id, ref.sec_type.upper(), ref.currency.upper())
        if instrument is None:
            self.send(
                m.error(
                    self.version,
                    req_id,
                    200,
                    "No security definition has been found for the request",
                )
            )
            return
        if c.flag():  # deltaNeutralContract present
            c.skip(3)
        c.text()  # genericTickList
        snapshot = c.flag()
        delayed = self.data_type in (3, 4)
        self.send(m.market_data_type(req_id, self.data_type))
        quote = self.sim.market.quote(instrument.symbol)
        for ticks in m.quote_ticks(req_id, quote, delayed, full=True):
            self.send(ticks)
        if snapshot:
            self.send(m.tick_snapshot_end(req_id))
        else:
            self.subs.market_data[req_id] = MarketDataSub(instrument.symbol, delayed)

    def _cancel_mkt_data(self, fields: list[str]) -> None:
        self.subs.market_data.pop(Cursor(fields, 2).integer(), None)

    def _req_historical_data(self, fields: list[str]) -> None:
        c = Cursor(fields, 1)
        req_id = c.integer()
        ref = read_contract(c)
        instrument = lookup(ref.symbol, ref.con_id, ref.sec_type.upper(), ref.currency.upper())
        if instrument is None:
            self.send(
                m.error(
                    self.version,
                    req_id,
                    200,
                    "No security definition has been found for the request",
                )
            )
            return
        c.skip(2)  # includeExpired, endDateTime
        bar_size = c.text()
        c.skip(3)  # durationStr, useRTH, whatToShow
        epoch_dates = c.text() == "2"
        self.send(self.sim.historical_bars(req_id, instrument, bar_size, epoch_dates))


class Simulator:
    """The IB Gateway simulator: a TWS API server over a paper account and a price model."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.market = Market(config.seed)
        self.store = StateFile(config.state_file) if config.state_file else None
        self.engine = OrderEngine(
            Account(config.account),
            self.market,
            listener=self._publish,
            persist=self.store.commit if self.store else None,
        )
        if self.store is not None:
            saved = self.store.load()
            if saved is not None:
                self.engine.restore(saved)
                self.store.compact(self.engine.snapshot())  # one snapshot line, later deltas
                logger.info(
                    "state restored from {}: {} orders, {} executions, account {}",
                    self.store.path,
                    len(self.engine.orders),
                    len(self.engine.executions),
                    self.engine.account.account_id,
                )
        self.faults = Faults(self)
        self.sessions: dict[int, Session] = {}
        self.connections: set[Session] = set()
        self.port = 0
        self.control_port: int | None = None
        self._numbers = itertools.count(1)

    @property
    def account(self) -> str:
        return self.engine.account.account_id

    # ------------------------------------------------------------------ serving

    async def run(self, *, task_status: TaskStatus[Simulator] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started`` fires once the ports are bound."""
        from node.sim.control import serve_control

        listener = await anyio.create_tcp_listener(
            local_host=self.config.host, local_port=self.config.port
        )
        async with listener, anyio.create_task_group() as tg:
            self.port = int(listener.extra(SocketAttribute.local_port))
            logger.info(
                "simulated IB Gateway listening on {}:{} (account {}, seed {})",
                self.config.host,
                self.port,
                self.account,
                self.config.seed,
            )
            tg.start_soon(listener.serve, self._accept)
            if self.config.control_port is not None:
                self.control_port = await tg.start(serve_control, self, self.config.control_port)
            if self.config.tick_interval:
                tg.start_soon(self._market_loop, self.config.tick_interval)
            task_status.started(self)

    async def _accept(self, stream: SocketStream) -> None:
        session = Session(self, stream, next(self._numbers))
        self.connections.add(session)
        try:
            async with stream:
                await session.run()
        except _CONNECTION_ENDED:
            pass  # closing a socket the peer already reset
        finally:
            self.connections.discard(session)
            if session.client_id is not None and self.sessions.get(session.client_id) is session:
                del self.sessions[session.client_id]
                logger.info("client {} disconnected", session.client_id)

    async def _market_loop(self, interval: float) -> None:
        while True:
            await anyio.sleep(interval)
            self.step_market()

    # ------------------------------------------------------------------ test and control API

    def step_market(self, steps: int = 1) -> None:
        """Advance the price model, fill what crossed and stream the new quotes."""
        for _ in range(steps):
            self.market.step()
            self.engine.on_market()
            self._stream_quotes(None)
            for session in list(self.sessions.values()):
                for req_id in session.subs.pnl:
                    self.push_pnl(session, req_id)

    def set_price(self, symbol: str, price: float) -> None:
        """Move one symbol's price; resting orders that cross it fill."""
        instrument = _instrument(symbol)
        self.market.set_price(instrument.symbol, price)
        logger.info("market: {} set to {:.2f}", instrument.symbol, price)
        self.engine.on_market([instrument.symbol])
        self._stream_quotes(instrument.symbol)

    def set_partial_fill(self, size: float | None) -> None:
        """Fill at most ``size`` shares per execution (one more chunk per market step)."""
        if size is not None and size <= 0:
            raise ValueError("partial fill size must be positive")
        self.engine.settings.partial_fill_size = size
        logger.info("partial fills: {}", f"{size:g} shares per step" if size else "off")

    def open_auction(self) -> None:
        self.engine.open_auction()

    def drop_connections(self) -> int:
        sessions = list(self.connections)
        for session in sessions:
            session.close()
        return len(sessions)

    def drop_subscriptions(self) -> None:
        for session in self.sessions.values():
            session.subs = Subscriptions()

    def broadcast_error(self, req_id: int, code: int, text: str) -> int:
        sessions = list(self.sessions.values())
        for session in sessions:
            session.send(m.error(session.version, req_id, code, text))
        return len(sessions)

    # ------------------------------------------------------------------ publishing

    def _publish(self, event: Event) -> None:
        if isinstance(event, AccountChanged):
            self._push_account_change(event.symbols)
            return
        session = self.sessions.get(
            event.client_id if isinstance(event, OrderError) else event.order.client_id
        )
        if isinstance(event, OrderFilled):
            order, ex = event.order, event.execution
            logger.info(
                "client {}: order {} filled {:g} {} @ {:.2f} ({}, ref {!r})",
                order.client_id,
                order.order_id,
                ex.shares,
                order.symbol,
                ex.price,
                order.status,
                order.order_ref,
            )
            if session is not None:
                inst = _instrument(order.symbol)
                session.send(m.exec_details(session.version, -1, inst, ex))
                session._send_open_order(order)
                session.send(m.commission_report(ex))
        elif isinstance(event, OrderChanged):
            logger.info(
                "client {}: order {} {} (filled {:g}/{:g})",
                event.order.client_id,
                event.order.order_id,
                event.order.status,
                event.order.filled,
                event.order.total_quantity,
            )
            if session is not None:
                session._send_open_order(event.order)
        else:
            logger.info(
                "client {}: order {} error {} {}",
                event.client_id,
                event.order_id,
                event.code,
                event.text,
            )
            if session is not None:
                session.send(m.error(session.version, event.order_id, event.code, event.text))

    def _push_account_change(self, symbols: tuple[str, ...]) -> None:
        positions = self.engine.account.positions
        for session in list(self.sessions.values()):
            subs = session.subs
            if subs.positions:
                for symbol in symbols:
                    pos = positions[symbol]
                    session.send(
                        m.position(self.account, _instrument(symbol), pos.quantity, pos.avg_cost)
                    )
            if subs.account_updates:
                self.push_account_updates(session, symbols)
            for req_id in subs.account_multi:
                self.push_account_multi(session, req_id, "")
            for req_id, tags in subs.summary.items():
                self.push_account_summary(session, req_id, tags)
            for req_id in subs.pnl:
                self.push_pnl(session, req_id)
            for req_id, symbol in subs.pnl_single.items():
                if symbol in symbols:
                    self.push_pnl_single(session, req_id, symbol)

    def push_account_updates(self, session: Session, symbols: tuple[str, ...] | None) -> None:
        account = self.engine.account
        for key, value, currency in account.values(self.market):
            session.send(m.account_value(key, value, currency, self.account))
        for pos in account.positions.values():
            if symbols is not None and pos.symbol not in symbols:
                continue
            if pos.quantity or symbols is not None:
                session.send(
                    m.portfolio_value(
                        _instrument(pos.symbol),
                        pos.quantity,
                        self.market.quote(pos.symbol).last,
                        pos.avg_cost,
                        pos.realized_pnl,
                        self.account,
                    )
                )
        session.send(m.account_time(time.time()))

    def push_account_multi(self, session: Session, req_id: int, model: str) -> None:
        for key, value, currency in self.engine.account.values(self.market):
            session.send(m.account_update_multi(req_id, self.account, model, key, value, currency))

    def push_account_summary(self, session: Session, req_id: int, tags: list[str]) -> None:
        values = {
            key: (value, currency)
            for key, value, currency in self.engine.account.values(self.market)
        }
        wanted = set(tags)
        if any(t.startswith("$LEDGER") for t in tags):
            wanted |= {"CashBalance", "TotalCashBalance", "NetLiquidationByCurrency"}
            values["TotalCashBalance"] = values["CashBalance"]
            values["NetLiquidationByCurrency"] = values["NetLiquidation"]
        for tag in tags + sorted(wanted - set(tags)):
            if tag not in values or tag.startswith("$"):
                continue
            value, currency = values[tag]
            session.send(
                m.account_summary(
                    req_id, self.account, tag, value, "" if tag in _NO_CURRENCY_TAGS else currency
                )
            )

    def push_pnl(self, session: Session, req_id: int) -> None:
        account = self.engine.account
        session.send(
            m.pnl(
                req_id,
                account.daily_pnl(self.market),
                account.unrealized_pnl(self.market),
                account.realized_pnl,
            )
        )

    def push_pnl_single(self, session: Session, req_id: int, symbol: str) -> None:
        pos = self.engine.account.positions.get(symbol)
        last = self.market.quote(symbol).last
        qty = pos.quantity if pos else 0.0
        unrealized = (last - pos.avg_cost) * qty if pos else 0.0
        realized = pos.realized_pnl if pos else 0.0
        session.send(
            m.pnl_single(req_id, qty, unrealized + realized, unrealized, realized, qty * last)
        )

    def _stream_quotes(self, symbol: str | None) -> None:
        if self.faults.streaming_paused:
            return
        for session in list(self.sessions.values()):
            for req_id, sub in session.subs.market_data.items():
                if symbol is None or sub.symbol == symbol:
                    quote = self.market.quote(sub.symbol)
                    for ticks in m.quote_ticks(req_id, quote, sub.delayed, full=False):
                        session.send(ticks)

    def historical_bars(
        self, req_id: int, instrument: Instrument, bar_size: str, epoch_dates: bool
    ) -> m.Message:
        """A short deterministic series ending at the current price (for probes and charts)."""
        quote = self.market.quote(instrument.symbol)
        daily = "day" in bar_size or "week" in bar_size or "month" in bar_size
        step = 86_400 if daily else 60
        now = int(time.time()) // step * step
        bars = []
        count = 10
        for i in range(count):
            at = now - (count - 1 - i) * step
            close = round(quote.close + (quote.last - quote.close) * (i + 1) / count, 2)
            spread = round(close * 0.002, 2)
            if epoch_dates:
                date = str(at)
            elif daily:
                date = time.strftime("%Y%m%d", time.gmtime(at))
            else:
                date = time.strftime("%Y%m%d  %H:%M:%S", time.gmtime(at))
            bars.append(
                (
                    date,
                    close,
                    round(close + spread, 2),
                    round(close - spread, 2),
                    close,
                    1000 * (i + 1),
                )
            )
        start = time.strftime("%Y%m%d  %H:%M:%S", time.gmtime(now - count * step))
        end = time.strftime("%Y%m%d  %H:%M:%S", time.gmtime(now))
        return m.historical_data(req_id, bars, start, end)


def _instrument(symbol: str) -> Instrument:
    instrument = lookup(symbol)
    if instrument is None:
        raise ValueError(f"unknown symbol {symbol!r}")
    return instrument


def _request_id(fields: list[str]) -> int:
    try:
        index = 1 if int(fields[0]) in _ID_AT_ONE else 2
        return int(fields[index])
    except (ValueError, IndexError):
        return -1


def _side_matches(wanted: str, side: str) -> bool:
    return {"BUY": "BOT", "SELL": "SLD"}.get(wanted, wanted) == side


def _parse_filter_time(text: str) -> float | None:
    """reqExecutions' time filter, 'yyyymmdd hh:mm:ss' (any zone suffix read as UTC)."""
    text = text.strip().replace("-", " ")
    if not text:
        return None
    try:
        return float(time.mktime(time.strptime(text[:17], "%Y%m%d %H:%M:%S"))) - time.timezone
    except ValueError:
        return None
