"""The audit store (DESIGN.md §7): a hash-chained journal and the orders table, in one SQLite file.

The journal is append-only: each row's hash covers the previous row's hash and the row's own
content, so `verify_chain` finds an edited, deleted or reordered row. Every order change writes
its journal row in the same transaction as the orders table, so the two never disagree, and every
write commits (WAL, `synchronous=FULL`) before the call returns: what the caller was told is
written survives a kill -9 or a power cut.

The live file stays on a local disk; `AuditStore.snapshot` copies it (backup API, then an atomic
rename) to the sync folder. `verify_chain` and `export` are synchronous so the CLI needs no loop.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self, TextIO, TypeVar, cast

import aiosqlite
import anyio
import anyio.to_thread
import ulid
from loguru import logger

__all__ = [
    "API_ORDER_FIELDS",
    "GENESIS_HASH",
    "JOURNAL_COLUMNS",
    "JOURNAL_KINDS",
    "KIND_ARM_FILE",
    "KIND_AUTH_FAILURE",
    "KIND_CANCEL",
    "KIND_FILL",
    "KIND_GATE_REFUSAL",
    "KIND_IB_ERROR",
    "KIND_KILL_SWITCH",
    "KIND_ORDER_ACK",
    "KIND_ORDER_EVENT",
    "KIND_ORDER_INTENT",
    "KIND_ORDER_RELEASED",
    "KIND_ORDER_STATUS",
    "KIND_RECONCILE",
    "KIND_STARTUP_CONFIG",
    "KIND_TRANSITION",
    "MIGRATIONS",
    "OPEN_STATUSES",
    "ORDER_COLUMNS",
    "ORDER_STATUSES",
    "SCHEMA_VERSION",
    "TERMINAL_STATUSES",
    "AuditError",
    "AuditPathError",
    "AuditSchemaError",
    "AuditStore",
    "AuditUnavailable",
    "DuplicateOrder",
    "JournalEntry",
    "JournalRow",
    "OrderNotDeletable",
    "OrderNotFound",
    "OrderRecord",
    "OrderRequestLike",
    "OrderUpdate",
    "VerifyResult",
    "canonical_json",
    "chain_hash",
    "chain_hash_of_text",
    "check_location",
    "export",
    "new_order_id",
    "request_hash",
    "rfc3339",
    "verify_chain",
]

# Journal kinds: free strings in the database, named here so the daemon and the CLI agree.
KIND_TRANSITION = "transition"  # lifecycle machine moved: from, to, trigger, reason
KIND_IB_ERROR = "ib_error"  # an error or warning message from the gateway
KIND_GATE_REFUSAL = "gate_refusal"  # an order request refused by a safety gate (§5)
KIND_AUTH_FAILURE = "auth_failure"  # a request refused by the allow-list or the key
KIND_ARM_FILE = "arm_file"  # the arm file appeared or disappeared
KIND_ORDER_INTENT = "order_intent"  # written by insert_order, before the order is sent
KIND_ORDER_ACK = "order_ack"  # IB's first report of an order
KIND_ORDER_EVENT = "order_event"  # an order's trade update, as streamed on /v1/events
KIND_ORDER_STATUS = "order_status"  # written by update_order: the changed fields
KIND_FILL = "fill"  # an execution, with its commission when known
KIND_CANCEL = "cancel"  # a cancel requested (one order, all, or the kill switch's sweep)
KIND_KILL_SWITCH = "kill_switch"  # latched or cleared
KIND_STARTUP_CONFIG = "startup_config"  # the configuration at start-up, secrets redacted
KIND_RECONCILE = "reconcile"  # orders matched against the gateway after a (re)connect
KIND_ORDER_RELEASED = "order_released"  # written by delete_order: a refused intent freed its id

JOURNAL_KINDS = frozenset(
    {
        KIND_TRANSITION,
        KIND_IB_ERROR,
        KIND_GATE_REFUSAL,
        KIND_AUTH_FAILURE,
        KIND_ARM_FILE,
        KIND_ORDER_INTENT,
        KIND_ORDER_ACK,
        KIND_ORDER_EVENT,
        KIND_ORDER_STATUS,
        KIND_FILL,
        KIND_CANCEL,
        KIND_KILL_SWITCH,
        KIND_STARTUP_CONFIG,
        KIND_RECONCILE,
        KIND_ORDER_RELEASED,
    }
)

# Alpaca's vocabulary (api-conventions §4.3); IB's raw status is kept in broker_status.
OPEN_STATUSES = frozenset({"pending_new", "accepted", "new", "partially_filled", "pending_cancel"})
TERMINAL_STATUSES = frozenset({"filled", "canceled", "expired", "rejected"})
ORDER_STATUSES = OPEN_STATUSES | TERMINAL_STATUSES

GENESIS_HASH = "0" * 64

JOURNAL_COLUMNS = (
    "seq",
    "at",
    "kind",
    "request_id",
    "client_order_id",
    "data",
    "prev_hash",
    "hash",
)

# Each step runs in one transaction together with `PRAGMA user_version = <its number>`. Steps are
# never edited once released: a schema change is a new step appended at the end.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE journal (
            seq INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            request_id TEXT,
            client_order_id TEXT,
            data TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )
        """,
        "CREATE INDEX journal_kind ON journal (kind, seq)",
        "CREATE INDEX journal_client_order_id ON journal (client_order_id)",
        # The chain detects tampering after the fact; the triggers stop our own bugs earlier.
        """
        CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
        BEGIN SELECT RAISE(ABORT, 'the audit journal is append-only'); END
        """,
        """
        CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
        BEGIN SELECT RAISE(ABORT, 'the audit journal is append-only'); END
        """,
        """
        CREATE TABLE orders (
            client_order_id TEXT PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            request_hash TEXT NOT NULL,
            request_id TEXT,
            account_id TEXT,
            trading_mode TEXT NOT NULL,
            symbol TEXT NOT NULL,
            sec_type TEXT NOT NULL,
            con_id INTEGER,
            exchange TEXT NOT NULL,
            currency TEXT NOT NULL,
            side TEXT NOT NULL,
            type TEXT NOT NULL,
            time_in_force TEXT NOT NULL,
            extended_hours INTEGER NOT NULL,
            qty TEXT NOT NULL,
            limit_price TEXT,
            stop_price TEXT,
            status TEXT NOT NULL,
            broker_status TEXT,
            status_reason TEXT,
            broker_order_id INTEGER,
            perm_id INTEGER,
            filled_qty TEXT NOT NULL,
            filled_avg_price TEXT,
            commission TEXT,
            created_at TEXT NOT NULL,
            submitted_at TEXT,
            updated_at TEXT NOT NULL,
            filled_at TEXT,
            canceled_at TEXT,
            expired_at TEXT,
            failed_at TEXT,
            reconcile_pending INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX orders_created_at ON orders (created_at)",
        "CREATE INDEX orders_status ON orders (status)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

T = TypeVar("T")


# ---------------------------------------------------------------------- errors


class AuditError(Exception):
    """Base of the audit store's errors."""


class AuditPathError(AuditError):
    """The database path is not acceptable (inside the sync folder, or not creatable)."""


class AuditSchemaError(AuditError):
    """The file was written by a newer ibkr-node, or is not an audit database."""


class AuditUnavailable(AuditError):
    """The store is closed or SQLite failed; nothing was written (the API answers 503)."""


class DuplicateOrder(AuditError):
    """insert_order found the client_order_id already taken."""

    def __init__(self, client_order_id: str) -> None:
        super().__init__(f"client_order_id {client_order_id!r} is already recorded")
        self.client_order_id = client_order_id


class OrderNotFound(AuditError):
    def __init__(self, client_order_id: str) -> None:
        super().__init__(f"no order with client_order_id {client_order_id!r}")
        self.client_order_id = client_order_id


class OrderNotDeletable(AuditError):
    """delete_order on an order IB has already reported: its history must stay."""


# ---------------------------------------------------------------------- encoding


def rfc3339(when: datetime) -> str:
    """UTC with milliseconds and Z: fixed width, so text order in SQLite is time order."""
    if when.tzinfo is None:
        raise ValueError(f"{when.isoformat()} has no time zone; pass an aware datetime")
    # isoformat is C code: strftime-style formatting of the same text cost a visible share
    # of every order (many times per order: rows, journal entries, events).
    utc = when if when.tzinfo is UTC else when.astimezone(UTC)
    return utc.isoformat(timespec="milliseconds")[:-6] + "Z"


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _decimal_text(value)
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, frozenset | set):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def canonical_json(value: Any) -> str:
    """The one JSON form hashed and stored: sorted keys, no spaces, ASCII, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_json_default
    )


def chain_hash(
    prev_hash: str,
    seq: int,
    at: str,
    kind: str,
    request_id: str | None,
    client_order_id: str | None,
    data: Any,
) -> str:
    """sha256 hex of prev_hash followed by the canonical JSON of the row's content."""
    return chain_hash_of_text(
        prev_hash, seq, at, kind, request_id, client_order_id, canonical_json(data)
    )


def chain_hash_of_text(
    prev_hash: str,
    seq: int,
    at: str,
    kind: str,
    request_id: str | None,
    client_order_id: str | None,
    data_text: str,
) -> str:
    """`chain_hash` for data already in canonical JSON (as stored): the row's canonical JSON
    is the list's, with the data's text as its last element, so nothing is parsed again."""
    head = canonical_json([seq, at, kind, request_id, client_order_id])
    body = f"{head[:-1]},{data_text}]"
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def request_hash(body: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical request body: the same body replays, another one conflicts."""
    return hashlib.sha256(canonical_json(dict(body)).encode("utf-8")).hexdigest()


def new_order_id() -> str:
    return str(ulid.ULID())


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite decimal")
    # Plain notation: str() could give "1E+1", which clients would have to special-case.
    return format(value, "f")


# ---------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    at: datetime
    kind: str
    request_id: str | None
    client_order_id: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str


def _utc_now() -> datetime:
    return datetime.now(UTC)


class OrderRequestLike(Protocol):
    """What OrderRecord.new reads from a validated POST /v1/orders body."""

    @property
    def client_order_id(self) -> str: ...
    @property
    def symbol(self) -> str: ...
    @property
    def sec_type(self) -> str: ...
    @property
    def exchange(self) -> str: ...
    @property
    def currency(self) -> str: ...
    @property
    def side(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def time_in_force(self) -> str: ...
    @property
    def extended_hours(self) -> bool: ...
    @property
    def qty(self) -> Decimal: ...
    @property
    def limit_price(self) -> Decimal | None: ...
    @property
    def stop_price(self) -> Decimal | None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class OrderRecord:
    """One row of the orders table; names follow the API's order object (api-conventions §4.2)."""

    client_order_id: str
    request_hash: str
    symbol: str
    side: str  # buy | sell
    type: str  # market | limit | stop | stop_limit
    qty: Decimal
    trading_mode: str  # paper | live
    id: str = field(default_factory=new_order_id)
    request_id: str | None = None
    account_id: str | None = None
    sec_type: str = "STK"
    con_id: int | None = None
    exchange: str = "SMART"
    currency: str = "USD"
    time_in_force: str = "day"
    extended_hours: bool = False
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    status: str = "pending_new"
    broker_status: str | None = None
    status_reason: str | None = None
    broker_order_id: int | None = None
    perm_id: int | None = None
    filled_qty: Decimal = Decimal(0)
    filled_avg_price: Decimal | None = None
    commission: Decimal | None = None
    created_at: datetime = field(default_factory=_utc_now)
    submitted_at: datetime | None = None
    updated_at: datetime | None = None  # insert_order sets it to created_at when missing
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    failed_at: datetime | None = None
    reconcile_pending: bool = False

    @property
    def remaining_qty(self) -> Decimal:
        return self.qty - self.filled_qty

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @classmethod
    def new(
        cls,
        request: OrderRequestLike,
        *,
        request_hash: str,
        trading_mode: str,
        request_id: str | None = None,
        con_id: int | None = None,
        account_id: str | None = None,
        at: datetime | None = None,
        broker_order_id: int | None = None,
    ) -> OrderRecord:
        """A pending_new record for a validated request, with a fresh ULID id; with a
        `broker_order_id` (reserved for sending it), submitted at `at` too."""
        created = at or _utc_now()
        return cls(
            client_order_id=request.client_order_id,
            request_hash=request_hash,
            request_id=request_id,
            account_id=account_id,
            trading_mode=trading_mode,
            symbol=request.symbol,
            sec_type=request.sec_type,
            con_id=con_id,
            exchange=request.exchange,
            currency=request.currency,
            side=request.side,
            type=request.type,
            time_in_force=request.time_in_force,
            extended_hours=request.extended_hours,
            qty=request.qty,
            limit_price=request.limit_price,
            stop_price=request.stop_price,
            created_at=created,
            updated_at=created,  # as insert_order stores it
            broker_order_id=broker_order_id,
            submitted_at=created if broker_order_id is not None else None,
        )

    def to_api(self) -> dict[str, Any]:
        """The API's order object (api-conventions §4.2): internal columns left out."""
        return _api_view(self.to_json())

    def to_json(self) -> dict[str, Any]:
        """JSON-ready values: decimals as strings, times as RFC 3339 UTC, plus remaining_qty."""
        return _order_json({name: getattr(self, name) for name in ORDER_COLUMNS})


ORDER_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(OrderRecord))
# The response object's fields, in the order api-conventions §4.2 shows them.
API_ORDER_FIELDS: tuple[str, ...] = (
    "id",
    "client_order_id",
    "broker_order_id",
    "perm_id",
    "account_id",
    "trading_mode",
    "symbol",
    "sec_type",
    "con_id",
    "exchange",
    "currency",
    "side",
    "type",
    "time_in_force",
    "extended_hours",
    "qty",
    "limit_price",
    "stop_price",
    "filled_qty",
    "remaining_qty",
    "filled_avg_price",
    "status",
    "broker_status",
    "status_reason",
    "created_at",
    "submitted_at",
    "updated_at",
    "filled_at",
    "canceled_at",
    "expired_at",
    "failed_at",
    "commission",
    "request_id",
)
_DECIMAL_FIELDS = frozenset(
    {"qty", "limit_price", "stop_price", "filled_qty", "filled_avg_price", "commission"}
)
_TIME_FIELDS = frozenset(
    {
        "created_at",
        "submitted_at",
        "updated_at",
        "filled_at",
        "canceled_at",
        "expired_at",
        "failed_at",
    }
)
_BOOL_FIELDS = frozenset({"extended_hours", "reconcile_pending"})
# The identity of an order and the request it came from never change after insert.
_IMMUTABLE_FIELDS = frozenset({"client_order_id", "id", "request_hash", "created_at"})


def _api_view(data: Mapping[str, Any]) -> dict[str, Any]:
    """The API's order object from an order's JSON form (internal columns left out)."""
    return {name: data[name] for name in API_ORDER_FIELDS}


def _order_json(values: Mapping[str, Any]) -> dict[str, Any]:
    """OrderRecord.to_json of the record these column values make."""
    data = {name: _json_value(name, values[name]) for name in ORDER_COLUMNS}
    data["remaining_qty"] = _decimal_text(values["qty"] - values["filled_qty"])
    return data


def _json_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _DECIMAL_FIELDS:
        return _decimal_text(value)
    if name in _TIME_FIELDS:
        return rfc3339(value)
    return value


def _db_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _BOOL_FIELDS:
        return int(bool(value))
    return _json_value(name, value)


def _from_db(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _DECIMAL_FIELDS:
        return Decimal(value)
    if name in _TIME_FIELDS:
        return _parse_time(value)
    if name in _BOOL_FIELDS:
        return bool(value)
    return value


def _coerce(name: str, value: Any) -> Any:
    """Accept the obvious spellings (int or str for a decimal) and refuse what would corrupt."""
    if value is None:
        return None
    if name == "status" and value not in ORDER_STATUSES:
        raise ValueError(f"unknown order status {value!r}")
    if name in _DECIMAL_FIELDS and not isinstance(value, Decimal):
        try:
            value = Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"{name}={value!r} is not a decimal") from None
    if name in _DECIMAL_FIELDS:
        _decimal_text(value)
    if name in _TIME_FIELDS:
        if not isinstance(value, datetime):
            raise TypeError(f"{name} takes a datetime, not {type(value).__name__}")
        rfc3339(value)
    if name in _BOOL_FIELDS:
        return bool(value)
    return value


def _record_from_row(row: Iterable[Any]) -> OrderRecord:
    values = {name: _from_db(name, value) for name, value in zip(ORDER_COLUMNS, row, strict=True)}
    return OrderRecord(**values)


def _entry_from_row(row: tuple[Any, ...] | sqlite3.Row) -> JournalEntry:
    seq, at, kind, request_id, client_order_id, data, prev_hash, digest = row
    return JournalEntry(
        seq=seq,
        at=_parse_time(at),
        kind=kind,
        request_id=request_id,
        client_order_id=client_order_id,
        data=json.loads(data),
        prev_hash=prev_hash,
        hash=digest,
    )


_ORDER_SELECT = f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders"
_JOURNAL_SELECT = f"SELECT {', '.join(JOURNAL_COLUMNS)} FROM journal"


# ---------------------------------------------------------------------- the store


async def on_connection_thread(
    db: aiosqlite.Connection, work: Callable[[sqlite3.Connection], T]
) -> T:
    """Run work(connection) on aiosqlite's own thread, where its sqlite3 connection lives.

    aiosqlite's public calls run one statement per hand-over; `_execute` (the method every one
    of them goes through) and `_conn` take a whole function. Both are private: aiosqlite is
    pinned in uv.lock, and tests/unit/test_audit.py fails at once if either goes away.
    """
    raw: sqlite3.Connection = db._conn
    execute = cast(Callable[[Callable[[], T]], Awaitable[T]], db._execute)
    return await execute(lambda: work(raw))


@dataclass(frozen=True)
class JournalRow:
    """One row for `AuditStore.journal_many`."""

    kind: str
    data: dict[str, Any]
    request_id: str | None = None
    client_order_id: str | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class OrderUpdate:
    """One order's changes for `AuditStore.update_orders`, with journal rows (kind, data) that
    follow its order_status row in the same transaction."""

    client_order_id: str
    changes: Mapping[str, Any]
    also_journal: Sequence[tuple[str, dict[str, Any]]] = ()
    # Leave a finished order as it is (checked inside the transaction): a cancel request
    # that meets a fill committed meanwhile must not reopen the order.
    only_if_open: bool = False
    # When the order's status moves: an order_event row (the trade update, named by this
    # function of the statuses before and after, with the order's API object) in the same
    # commit, so a crash cannot keep the change and lose its announcement.
    announce: Callable[[str, str], str] | None = None
    request_id: str | None = None  # on every row the update writes


def check_location(path: Path, sync_folder: Path | None) -> Path:
    """The resolved database path, or AuditPathError when a sync client would copy it."""
    resolved = path.expanduser().resolve()
    if sync_folder is not None:
        sync = sync_folder.expanduser().resolve()
        if resolved == sync or resolved.is_relative_to(sync):
            raise AuditPathError(
                f"The audit database {resolved} is inside the sync folder {sync} "
                "(GDRIVE_BASE_PATH). SQLite must stay on a local disk: a sync client copies "
                "files behind its back and can corrupt or fork it. Set AUDIT_DB_PATH to a "
                f"folder outside {sync}; the node writes snapshots to {sync / 'audit.db'}."
            )
    return resolved


class AuditStore:
    """The open audit database. All access goes through one connection and one lock.

    Reads take the lock too: they share the writer's connection, and a read between a write's
    INSERT and its COMMIT would see a row that might still roll back.
    """

    def __init__(self, path: Path, db: aiosqlite.Connection, clock: Callable[[], datetime]) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = db
        self._clock = clock
        # fast_acquire: a free lock is taken without a trip round the event loop; every
        # holder awaits aiosqlite's thread, so no task can starve the others through it.
        self._lock = anyio.Lock(fast_acquire=True)
        # The journal's head (seq, hash) as of the last commit, so an append costs no read;
        # forgotten when another connection has written (PRAGMA data_version) or on a
        # rollback. seq is the primary key: nothing can fork the chain silently anyway.
        self._head: tuple[int, str] | None = None
        self._pending_head: tuple[int, str] | None = None
        self._data_version: int | None = None

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        sync_folder: Path | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> AuditStore:
        """Open (creating and migrating as needed) the database at path.

        `clock` gives the time for rows that are not given one (the daemon passes its Clock.now).
        """
        resolved = check_location(path, sync_folder)
        try:
            resolved.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise AuditPathError(
                f"Cannot create the folder {resolved.parent} for the audit database: {error}"
            ) from error
        # isolation_level=None: the store issues BEGIN IMMEDIATE/COMMIT itself, so Python's
        # sqlite3 never opens or commits a transaction implicitly behind it.
        try:
            db = await aiosqlite.connect(resolved, isolation_level=None)
        except sqlite3.Error as error:
            raise AuditUnavailable(f"Cannot open the audit database {resolved}: {error}") from error
        try:
            await _configure(db, resolved)
            await _migrate(db, resolved)
        except sqlite3.Error as error:
            with anyio.CancelScope(shield=True):
                await db.close()
            raise AuditUnavailable(
                f"Cannot use the audit database {resolved}: {error}. Restore it from the last "
                "snapshot or move it aside to start a new one."
            ) from error
        except BaseException:
            with anyio.CancelScope(shield=True):
                await db.close()
            raise
        return cls(resolved, db, clock or _utc_now)

    async def close(self) -> None:
        async with self._lock:
            db, self._db = self._db, None
            if db is not None:
                with anyio.CancelScope(shield=True):
                    await db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ plumbing

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise AuditUnavailable(f"the audit store {self.path} is closed")
        return self._db

    async def _write(
        self, body: Callable[[sqlite3.Connection], T], on_commit: Callable[[T], None] | None = None
    ) -> T:
        """Run body in one IMMEDIATE transaction and commit before returning.

        The whole transaction runs on aiosqlite's thread in one call: one hand-over between
        threads instead of one per statement (each also wakes the event loop), which is what
        an order's intent costs before it may be sent. Shielded from cancellation: a cancelled
        caller never leaves a half-run transaction, and the row is committed or rolled back.

        `on_commit(result)` runs once committed, before the next write can commit: whoever
        streams rows (SSE) from it sees them in journal order. It must not wait; what it
        raises is logged, not raised: the rows are committed, and a caller told otherwise
        would write them again or refuse an order whose intent stands.
        """

        def transaction(conn: sqlite3.Connection) -> T:
            self._pending_head = None
            conn.execute("BEGIN IMMEDIATE")
            # Changes when another connection has committed since this one last looked: then
            # the head kept in memory may be stale. Read under the write lock, so it holds.
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version:
                self._head = None
                self._data_version = version
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                self._head = None  # unsure what was written: read it again next time
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if self._pending_head is not None:
                self._head = self._pending_head
            return result

        async with self._lock:
            db = self._connection()
            with anyio.CancelScope(shield=True):
                try:
                    result = await on_connection_thread(db, transaction)
                except sqlite3.Error as error:
                    raise AuditUnavailable(f"audit store write failed: {error}") from error
            if on_commit is not None:
                try:
                    on_commit(result)
                except Exception:
                    logger.exception("audit store: after a commit to {}", self.path)
            return result

    async def _read(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        async with self._lock:
            db = self._connection()
            try:
                return list(await db.execute_fetchall(sql, parameters))
            except sqlite3.Error as error:
                raise AuditUnavailable(f"audit store read failed: {error}") from error

    def _append(
        self,
        conn: sqlite3.Connection,
        kind: str,
        data_text: str,
        request_id: str | None,
        client_order_id: str | None,
        at: str,
    ) -> int:
        head = self._pending_head or self._head
        if head is None:
            row = conn.execute("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
            head = (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)
        seq, prev_hash = head[0] + 1, head[1]
        digest = chain_hash_of_text(
            prev_hash, seq, at, kind, request_id, client_order_id, data_text
        )
        conn.execute(
            "INSERT INTO journal (seq, at, kind, request_id, client_order_id, data, prev_hash,"
            " hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, at, kind, request_id, client_order_id, data_text, prev_hash, digest),
        )
        self._pending_head = (seq, digest)
        return seq

    def _now(self) -> datetime:
        return self._clock()

    # ------------------------------------------------------------------ journal

    async def journal(
        self,
        kind: str,
        data: dict[str, Any],
        *,
        request_id: str | None = None,
        client_order_id: str | None = None,
        at: datetime | None = None,
    ) -> int:
        """Append one row and commit; returns its seq (the SSE event id)."""
        [seq] = await self.journal_many([JournalRow(kind, data, request_id, client_order_id, at)])
        return seq

    async def journal_many(
        self, rows: Sequence[JournalRow], on_commit: Callable[[list[int]], None] | None = None
    ) -> list[int]:
        """Append rows in order in one transaction (one commit); returns their seqs (also to
        `on_commit`, see `_write`)."""
        now = self._now()
        texts = [  # a TypeError here leaves nothing half-written
            (row.kind, canonical_json(row.data), row.request_id, row.client_order_id,
             rfc3339(row.at or now))
            for row in rows
        ]  # fmt: skip

        def body(conn: sqlite3.Connection) -> list[int]:
            return [self._append(conn, *text) for text in texts]

        return await self._write(body, on_commit)

    async def journal_since(
        self, after_seq: int, *, kinds: Collection[str] | None = None, limit: int = 1000
    ) -> list[JournalEntry]:
        """Rows with seq > after_seq, oldest first (replay for SSE's Last-Event-ID)."""
        if limit < 0:
            raise ValueError("limit must not be negative")
        sql = f"{_JOURNAL_SELECT} WHERE seq > ?"
        parameters: list[Any] = [after_seq]
        if kinds is not None:
            kinds = list(kinds)
            if not kinds:
                return []
            sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
            parameters.extend(kinds)
        sql += " ORDER BY seq LIMIT ?"
        parameters.append(limit)
        return [_entry_from_row(row) for row in await self._read(sql, tuple(parameters))]

    async def last_seq(self) -> int:
        """The newest seq, 0 for an empty journal."""
        rows = await self._read("SELECT COALESCE(MAX(seq), 0) FROM journal")
        return int(rows[0][0])

    # ------------------------------------------------------------------ orders

    async def insert_order(
        self,
        record: OrderRecord,
        events: Sequence[str] = (),
        on_commit: Callable[[list[tuple[int, dict[str, Any]]]], None] | None = None,
    ) -> list[tuple[int, dict[str, Any]]]:
        """Record a new order and its order_intent row, then an order_event row for each of
        `events` (a trade update's name, e.g. pending_new, with the order's API object), in
        one commit; returns (seq, data) of those rows (also to `on_commit`, see `_write`).
        DuplicateOrder when the id is taken."""
        coerced = {name: _coerce(name, getattr(record, name)) for name in ORDER_COLUMNS}
        if coerced["updated_at"] is None:
            coerced["updated_at"] = coerced["created_at"]
        # The columns, the intent and its events are one JSON form (booleans as 0/1 in the
        # columns), each value formatted once: this runs before every order may be sent.
        data = _order_json(coerced)
        values = [_db_value(name, data[name]) if name in _BOOL_FIELDS else data[name]
                  for name in ORDER_COLUMNS]  # fmt: skip
        data_text = canonical_json(data)
        at_text = data["created_at"]
        announced: list[dict[str, Any]] = [
            {"event": name, "order": _api_view(data)} for name in events
        ]
        extra = [canonical_json(event) for event in announced]

        def body(conn: sqlite3.Connection) -> list[tuple[int, dict[str, Any]]]:
            try:
                conn.execute(
                    f"INSERT INTO orders ({', '.join(ORDER_COLUMNS)})"
                    f" VALUES ({', '.join('?' * len(ORDER_COLUMNS))})",
                    values,
                )
            except sqlite3.IntegrityError as error:
                if "orders.client_order_id" in str(error):
                    raise DuplicateOrder(record.client_order_id) from error
                raise
            self._append(
                conn,
                KIND_ORDER_INTENT,
                data_text,
                record.request_id,
                record.client_order_id,
                at_text,
            )
            seqs = [
                self._append(conn, KIND_ORDER_EVENT, text, record.request_id,
                             record.client_order_id, at_text)
                for text in extra
            ]  # fmt: skip
            return list(zip(seqs, announced, strict=True))

        return await self._write(body, on_commit)

    async def update_order(self, client_order_id: str, /, **changes: Any) -> OrderRecord:
        """Change fields of an order (updated_at = now unless given) and journal order_status.

        The journal row's data is {"id", "changes"} with the given fields in JSON form.
        """
        [updated] = await self.update_orders([OrderUpdate(client_order_id, changes)])
        return updated

    async def update_orders(
        self,
        updates: Sequence[OrderUpdate],
        on_commit: Callable[[list[tuple[int, dict[str, Any]]]], None] | None = None,
    ) -> list[OrderRecord]:
        """Apply the updates in order in one transaction (one commit), each with its
        order_status row, then its own rows (a fill), then its order_event when it announces
        one; returns the updated orders. `on_commit` gets the order events as (seq, data)
        (see `_write`).

        IB reports an order's acknowledgement, fills and commission in one burst: one commit
        for the burst instead of one per report keeps the disk, and the next order's intent
        waiting for it, out of the way.
        """
        now = self._now()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as stored: milliseconds
        steps = []
        for update in updates:
            unknown = set(update.changes) - set(ORDER_COLUMNS)
            if unknown:
                raise TypeError(f"orders have no field {', '.join(sorted(unknown))}")
            frozen = set(update.changes) & _IMMUTABLE_FIELDS
            if frozen:
                raise ValueError(f"{', '.join(sorted(frozen))} cannot change after insert")
            coerced = {name: _coerce(name, value) for name, value in update.changes.items()}
            if coerced.get("updated_at") is None:
                coerced["updated_at"] = now
            at_text = rfc3339(coerced["updated_at"])
            extra = [(kind, canonical_json(data)) for kind, data in update.also_journal]
            steps.append((update, coerced, at_text, extra))

        Announced = list[tuple[int, dict[str, Any]]]

        def body(conn: sqlite3.Connection) -> tuple[list[OrderRecord], Announced]:
            done: list[OrderRecord] = []
            announced: Announced = []
            for update, coerced, at_text, extra in steps:
                cid, request_id = update.client_order_id, update.request_id
                row = conn.execute(f"{_ORDER_SELECT} WHERE client_order_id = ?", (cid,)).fetchone()
                if row is None:
                    raise OrderNotFound(cid)
                current = _record_from_row(row)
                if update.only_if_open and current.status in TERMINAL_STATUSES:
                    done.append(current)
                    continue
                updated = dataclasses.replace(current, **coerced)
                names = list(coerced)
                conn.execute(
                    f"UPDATE orders SET {', '.join(f'{n} = ?' for n in names)}"
                    " WHERE client_order_id = ?",
                    [*(_db_value(n, getattr(updated, n)) for n in names), cid],
                )
                changed = {n: _json_value(n, getattr(updated, n)) for n in names}
                self._append(conn, KIND_ORDER_STATUS,
                             canonical_json({"id": updated.id, "changes": changed}),
                             request_id, cid, at_text)  # fmt: skip
                for kind, data_text in extra:
                    self._append(conn, kind, data_text, request_id, cid, at_text)
                if update.announce is not None and updated.status != current.status:
                    event = {"event": update.announce(current.status, updated.status),
                             "order": updated.to_api()}  # fmt: skip
                    seq = self._append(conn, KIND_ORDER_EVENT, canonical_json(event),
                                       request_id, cid, at_text)  # fmt: skip
                    announced.append((seq, event))
                done.append(updated)
            return done, announced

        def committed(result: tuple[list[OrderRecord], Announced]) -> None:
            if on_commit is not None:
                on_commit(result[1])

        done, _ = await self._write(body, committed)
        return done

    async def delete_order(
        self,
        client_order_id: str,
        announce: dict[str, Any] | None = None,
        on_commit: Callable[[list[tuple[int, dict[str, Any]]]], None] | None = None,
    ) -> bool:
        """Free the id of an intent refused before it was sent; False when there was none.

        The caller knows the order was never sent (its gate refused it after the intent was
        written, or the socket was gone). Only a pending_new order IB has reported nothing of
        can go: anything IB has seen stays on record. The journal keeps the intent and gets an
        order_released row, then `announce` (a trade update) as an order_event row in the same
        commit, given to `on_commit` as (seq, data): it precedes anything a retry of the same
        client_order_id writes.
        """

        def body(conn: sqlite3.Connection) -> list[tuple[int, dict[str, Any]]] | None:
            row = conn.execute(
                "SELECT id, status, broker_status, perm_id FROM orders WHERE client_order_id = ?",
                (client_order_id,),
            ).fetchone()
            if row is None:
                return None
            order_id, status, broker_status, perm_id = row
            if status != "pending_new" or broker_status is not None or perm_id is not None:
                raise OrderNotDeletable(
                    f"order {client_order_id!r} is {status} at the broker; it cannot be deleted"
                )
            conn.execute("DELETE FROM orders WHERE client_order_id = ?", (client_order_id,))
            at = rfc3339(self._now())
            self._append(conn, KIND_ORDER_RELEASED, canonical_json({"id": order_id}), None,
                         client_order_id, at)  # fmt: skip
            if announce is None:
                return []
            seq = self._append(conn, KIND_ORDER_EVENT, canonical_json(announce), None,
                               client_order_id, at)  # fmt: skip
            return [(seq, announce)]

        def committed(events: list[tuple[int, dict[str, Any]]] | None) -> None:
            if on_commit is not None and events:
                on_commit(events)

        return await self._write(body, committed) is not None

    async def client_order_ids(self) -> set[str]:
        """Every client_order_id the orders table holds."""
        return {str(row[0]) for row in await self._read("SELECT client_order_id FROM orders")}

    async def get_order(self, client_order_id: str) -> OrderRecord | None:
        rows = await self._read(f"{_ORDER_SELECT} WHERE client_order_id = ?", (client_order_id,))
        return _record_from_row(rows[0]) if rows else None

    async def get_order_by_id(self, id: str) -> OrderRecord | None:
        rows = await self._read(f"{_ORDER_SELECT} WHERE id = ?", (id,))
        return _record_from_row(rows[0]) if rows else None

    async def list_orders(
        self,
        *,
        statuses: Collection[str] | None = None,
        symbols: Collection[str] | None = None,
        after: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[OrderRecord]:
        """Newest first by created_at; `after` and `until` are both exclusive (as Alpaca's)."""
        if limit < 0:
            raise ValueError("limit must not be negative")
        clauses: list[str] = []
        parameters: list[Any] = []
        for column, wanted in (("status", statuses), ("symbol", symbols)):
            if wanted is None:
                continue
            wanted = list(wanted)
            if not wanted:
                return []
            clauses.append(f"{column} IN ({', '.join('?' * len(wanted))})")
            parameters.extend(wanted)
        if after is not None:
            clauses.append("created_at > ?")
            parameters.append(rfc3339(after))
        if until is not None:
            clauses.append("created_at < ?")
            parameters.append(rfc3339(until))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        # rowid breaks ties between orders created in the same millisecond: insertion order.
        sql = f"{_ORDER_SELECT}{where} ORDER BY created_at DESC, rowid DESC LIMIT ?"
        parameters.append(limit)
        return [_record_from_row(row) for row in await self._read(sql, tuple(parameters))]

    async def open_orders(self) -> list[OrderRecord]:
        """Every non-terminal order, oldest first (reconcile and cancel-all walk them in order)."""
        marks = ", ".join("?" * len(OPEN_STATUSES))
        rows = await self._read(
            f"{_ORDER_SELECT} WHERE status IN ({marks}) ORDER BY created_at, rowid",
            tuple(sorted(OPEN_STATUSES)),
        )
        return [_record_from_row(row) for row in rows]

    # ------------------------------------------------------------------ snapshots

    async def snapshot(self, dest: Path) -> Path:
        """A consistent copy at dest (backup API, fsync, atomic rename); returns dest.

        Runs on its own connections in a worker thread, so writers are not held up; WAL lets
        the backup read a committed state while they go on.
        """
        self._connection()
        written = await anyio.to_thread.run_sync(_snapshot, self.path, dest)
        logger.debug("audit snapshot written to {}", written)
        return written


async def _configure(db: aiosqlite.Connection, path: Path) -> None:
    async with db.execute("PRAGMA journal_mode=WAL") as cur:
        row = await cur.fetchone()
    if row is None or str(row[0]).lower() != "wal":
        raise AuditPathError(f"{path}: SQLite refused WAL mode (got {row and row[0]!r})")
    await db.execute("PRAGMA synchronous=FULL")
    await db.execute("PRAGMA busy_timeout=5000")


async def _user_version(db: aiosqlite.Connection) -> int:
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _migrate(db: aiosqlite.Connection, path: Path) -> None:
    version = await _user_version(db)
    if version > SCHEMA_VERSION:
        raise AuditSchemaError(
            f"{path} has audit schema version {version}; this ibkr-node knows up to "
            f"{SCHEMA_VERSION}. Upgrade ibkr-node or point AUDIT_DB_PATH at another file."
        )
    while version < SCHEMA_VERSION:
        await db.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = await _user_version(db)
            if version < SCHEMA_VERSION:
                for statement in MIGRATIONS[version]:
                    await db.execute(statement)
                version += 1
                await db.execute(f"PRAGMA user_version = {version}")
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
        logger.info("audit store {} migrated to schema version {}", path, version)


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; Windows cannot open a folder for fsync.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _snapshot(source: Path, dest: Path) -> Path:
    dest = dest.expanduser().resolve()
    if dest == source:
        raise AuditPathError(f"snapshot destination {dest} is the live database")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        src = _connect_readonly(source)
        try:
            dst = sqlite3.connect(tmp, isolation_level=None)
            try:
                src.backup(dst)
                # The copy carries the WAL flag; a single self-contained file is what a sync
                # client should see, with no -wal/-shm beside it.
                dst.execute("PRAGMA journal_mode=DELETE")
                check = dst.execute("PRAGMA quick_check").fetchone()
                if check is None or check[0] != "ok":
                    raise AuditError(f"snapshot failed its integrity check: {check}")
            finally:
                dst.close()
        finally:
            src.close()
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
        _fsync_folder(dest.parent)
    except BaseException:
        for leftover in (tmp, Path(f"{tmp}-journal")):
            leftover.unlink(missing_ok=True)
        raise
    return dest


# ---------------------------------------------------------------------- verify and export


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """rows: how many rows checked out (all of them when ok)."""

    ok: bool
    rows: int
    first_bad_seq: int | None = None
    problem: str | None = None


def _connect_readonly(path: Path) -> sqlite3.Connection:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no audit database at {path}")
    # mode=ro: verifying or exporting must never create or change the file it inspects.
    return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None)


def _require_table(conn: sqlite3.Connection, path: Path, table: str) -> None:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    if found is None:
        raise AuditSchemaError(f"{path} is not an audit database (no {table} table)")


def verify_chain(path: Path) -> VerifyResult:
    """Walk the journal in seq order and check each link.

    A row deleted from the middle shows as a seq gap (first_bad_seq is the missing seq); an
    edited row or a replaced hash fails its own hash; rows swapped or renumbered fail the
    prev_hash link. Rows cut from the end leave a valid shorter chain: compare `rows` with a
    snapshot's to catch that.
    """
    conn = _connect_readonly(path)
    try:
        _require_table(conn, path, "journal")
        expected_seq = 1
        prev_hash = GENESIS_HASH
        good = 0

        def bad(seq: int, problem: str) -> VerifyResult:
            return VerifyResult(ok=False, rows=good, first_bad_seq=seq, problem=problem)

        for row in conn.execute(f"{_JOURNAL_SELECT} ORDER BY seq"):
            seq, at, kind, request_id, client_order_id, data_text, stored_prev, digest = row
            if seq != expected_seq:
                if seq > expected_seq:
                    return bad(expected_seq, f"row {expected_seq} is missing (next is {seq})")
                return bad(seq, f"unexpected seq {seq} (expected {expected_seq})")
            try:
                data = json.loads(data_text)
            except (TypeError, ValueError):
                return bad(seq, f"row {seq}: data is not JSON")
            if canonical_json(data) != data_text:
                return bad(seq, f"row {seq}: data is not in canonical form (edited by hand?)")
            if stored_prev != prev_hash:
                return bad(seq, f"row {seq}: prev_hash does not match row {seq - 1}'s hash")
            if chain_hash(prev_hash, seq, at, kind, request_id, client_order_id, data) != digest:
                return bad(seq, f"row {seq}: hash does not match its contents")
            prev_hash = digest
            expected_seq += 1
            good += 1
        return VerifyResult(ok=True, rows=good)
    finally:
        conn.close()


def export(
    path: Path,
    fmt: Literal["csv", "json"],
    out: TextIO,
    *,
    table: Literal["journal", "orders"] = "journal",
) -> int:
    """Write a table to out; returns the number of rows.

    JSON is one array with one object per line (journal data embedded as an object, booleans as
    booleans); CSV has a header row and keeps data as its canonical JSON text. The journal comes
    in seq order, orders oldest first.
    """
    if fmt not in ("csv", "json"):
        raise ValueError(f"unknown export format {fmt!r} (csv or json)")
    if table == "journal":
        columns: tuple[str, ...] = JOURNAL_COLUMNS
        sql = f"{_JOURNAL_SELECT} ORDER BY seq"
    elif table == "orders":
        columns = ORDER_COLUMNS
        sql = f"{_ORDER_SELECT} ORDER BY created_at, rowid"
    else:
        raise ValueError(f"unknown table {table!r} (journal or orders)")
    conn = _connect_readonly(path)
    try:
        _require_table(conn, path, table)
        rows = conn.execute(sql)
        count = 0
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(columns)
            for row in rows:
                writer.writerow(
                    _csv_cell(name, value) for name, value in zip(columns, row, strict=True)
                )
                count += 1
            return count
        out.write("[")
        for row in rows:
            item = {
                name: _export_value(table, name, value)
                for name, value in zip(columns, row, strict=True)
            }
            # ASCII: any console or file encoding takes it (Windows writes cp1252 to files).
            out.write(("\n" if count == 0 else ",\n") + json.dumps(item))
            count += 1
        out.write("\n]\n" if count else "]\n")
        return count
    finally:
        conn.close()


def _export_value(table: str, name: str, value: Any) -> Any:
    if table == "journal" and name == "data":
        return json.loads(value)
    if table == "orders" and name in _BOOL_FIELDS:
        return bool(value)
    return value


def _csv_cell(name: str, value: Any) -> Any:
    if name in _BOOL_FIELDS and value is not None:
        return "true" if value else "false"
    return "" if value is None else value
