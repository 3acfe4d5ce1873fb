"""The audit store on real SQLite files: migrations, the hash chain, orders, location, snapshots."""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from node import audit
from node.audit import (
    GENESIS_HASH,
    JOURNAL_KINDS,
    KIND_FILL,
    KIND_ORDER_EVENT,
    KIND_ORDER_INTENT,
    KIND_ORDER_RELEASED,
    KIND_ORDER_STATUS,
    KIND_TRANSITION,
    ORDER_COLUMNS,
    SCHEMA_VERSION,
    AuditPathError,
    AuditSchemaError,
    AuditStore,
    AuditUnavailable,
    DuplicateOrder,
    JournalRow,
    OrderNotDeletable,
    OrderNotFound,
    OrderRecord,
    OrderUpdate,
    canonical_json,
    chain_hash,
    chain_hash_of_text,
    export,
    verify_chain,
)

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 14, 15, 1, 2, 123000, tzinfo=UTC)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "local" / "audit.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[AuditStore]:
    async with await AuditStore.open(db_path) as opened:
        yield opened


def order(cid: str = "pi-0001", **overrides: Any) -> OrderRecord:
    values: dict[str, Any] = {
        "client_order_id": cid,
        "request_hash": "ab" * 32,
        "request_id": "req-" + cid,
        "symbol": "AAPL",
        "side": "buy",
        "type": "limit",
        "qty": Decimal("10"),
        "limit_price": Decimal("187.50"),
        "trading_mode": "paper",
        "account_id": "DU1234567",
        "created_at": T0,
        **overrides,
    }
    return OrderRecord(**values)


def tamper(path: Path, *statements: str) -> None:
    """What an attacker with the file could do: the append-only triggers do not stop them."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("DROP TRIGGER IF EXISTS journal_no_update")
        conn.execute("DROP TRIGGER IF EXISTS journal_no_delete")
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


async def fill_journal(store: AuditStore, count: int) -> list[int]:
    return [
        await store.journal(KIND_TRANSITION, {"n": n, "to": "SERVING"}, request_id=f"r{n}")
        for n in range(count)
    ]


# ---------------------------------------------------------------------- schema


async def test_new_file_is_migrated_wal_and_full_sync(db_path: Path) -> None:
    async with await AuditStore.open(db_path) as store:
        assert store.path == db_path.parent.resolve() / db_path.name
        assert await store.last_seq() == 0
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = [row[1] for row in conn.execute("PRAGMA table_info(orders)")]
        assert set(columns) == set(ORDER_COLUMNS)
        journal_columns = [row[1] for row in conn.execute("PRAGMA table_info(journal)")]
        assert tuple(journal_columns) == audit.JOURNAL_COLUMNS
    finally:
        conn.close()


async def test_reopen_keeps_rows_and_schema(db_path: Path) -> None:
    async with await AuditStore.open(db_path) as store:
        await fill_journal(store, 3)
        await store.insert_order(order())
    async with await AuditStore.open(db_path) as store:
        assert await store.last_seq() == 4
        assert await store.get_order("pi-0001") is not None
        assert await store.journal(KIND_TRANSITION, {}) == 5
    assert verify_chain(db_path).ok


async def test_migration_steps_apply_in_order_each_in_a_transaction(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await AuditStore.open(db_path):
        pass
    extra = ("CREATE TABLE extra (x INTEGER)",)
    broken = ("CREATE TABLE half (x INTEGER)", "THIS IS NOT SQL")
    monkeypatch.setattr(audit, "MIGRATIONS", (*audit.MIGRATIONS, extra, broken))
    monkeypatch.setattr(audit, "SCHEMA_VERSION", SCHEMA_VERSION + 2)
    with pytest.raises(AuditUnavailable, match=r"THIS IS NOT SQL|syntax error"):
        await AuditStore.open(db_path)
    conn = sqlite3.connect(db_path)
    try:
        # The good step stayed; the broken one left neither its table nor its version.
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "extra" in tables
        assert "half" not in tables
    finally:
        conn.close()


async def test_newer_schema_is_refused(db_path: Path) -> None:
    async with await AuditStore.open(db_path):
        pass
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(AuditSchemaError, match="Upgrade ibkr-node"):
        await AuditStore.open(db_path)


def write_garbage(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not SQLite " * 100)
    return read(path)


def read(path: Path) -> bytes:
    return path.read_bytes()


async def test_a_file_that_is_not_a_database_is_refused(db_path: Path) -> None:
    before = write_garbage(db_path)
    with pytest.raises(AuditUnavailable, match="not a database"):
        await AuditStore.open(db_path)
    assert read(db_path) == before


async def test_closed_store_is_unavailable(db_path: Path) -> None:
    store = await AuditStore.open(db_path)
    await store.close()
    await store.close()  # twice is harmless
    with pytest.raises(AuditUnavailable):
        await store.journal(KIND_TRANSITION, {})


# ---------------------------------------------------------------------- journal


async def test_journal_rows_are_chained(store: AuditStore, db_path: Path) -> None:
    at = datetime(2026, 1, 14, 4, 0, 3, 500000, tzinfo=timezone(timedelta(hours=-5)))
    seq = await store.journal(
        KIND_TRANSITION,
        {"from": "CONNECTED", "to": "SERVING", "size": Decimal("1.50")},
        request_id="req-1",
        client_order_id=None,
        at=at,
    )
    assert seq == 1
    assert await fill_journal(store, 3) == [2, 3, 4]
    assert await store.last_seq() == 4

    entries = await store.journal_since(0)
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    first = entries[0]
    assert first.prev_hash == GENESIS_HASH
    assert first.at == at
    assert first.data == {"from": "CONNECTED", "to": "SERVING", "size": "1.50"}
    assert first.hash == chain_hash(
        GENESIS_HASH, 1, "2026-01-14T09:00:03.500Z", KIND_TRANSITION, "req-1", None, first.data
    )
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.hash

    conn = sqlite3.connect(db_path)
    try:
        at_text, data_text = conn.execute("SELECT at, data FROM journal WHERE seq = 1").fetchone()
    finally:
        conn.close()
    assert at_text == "2026-01-14T09:00:03.500Z"
    assert data_text == '{"from":"CONNECTED","size":"1.50","to":"SERVING"}'

    result = verify_chain(db_path)
    assert result.ok
    assert result.rows == 4
    assert result.first_bad_seq is None
    assert result.problem is None


async def test_a_row_written_behind_the_stores_back_is_built_upon(
    store: AuditStore, db_path: Path
) -> None:
    """The store keeps the head in memory; a commit by another connection (PRAGMA
    data_version) or a rollback makes it read the head again, so the chain goes on from the
    real last row."""
    await fill_journal(store, 2)
    await store.insert_order(order("pi-dup"))
    with pytest.raises(DuplicateOrder):  # a rollback
        await store.insert_order(order("pi-dup"))
    assert await fill_journal(store, 1) == [4]
    conn = sqlite3.connect(db_path)
    try:
        prev_hash, head = conn.execute("SELECT hash, seq FROM journal ORDER BY seq DESC").fetchone()
        digest = chain_hash(prev_hash, head + 1, "2026-01-01T00:00:00.000Z", "outsider", None,
                            None, {})  # fmt: skip
        conn.execute(
            "INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (head + 1, "2026-01-01T00:00:00.000Z", "outsider", None, None, "{}", prev_hash,
             digest),
        )  # fmt: skip
        conn.commit()
    finally:
        conn.close()
    assert await fill_journal(store, 1) == [head + 2]
    assert verify_chain(db_path).ok
    assert await store.last_seq() == head + 2


@pytest.mark.parametrize(
    "data",
    [{}, [], None, "", {"b": [1, 2.5, None], "a": 'é\u2028"q"'}, {"nested": {"z": {}, "y": []}}],
)
async def test_chain_hash_of_the_stored_text_equals_the_hash_of_the_data(data: Any) -> None:
    for request_id, client_order_id in ((None, None), ("r-1", "pi-1")):
        args = ("0" * 64, 7, "2026-01-14T09:00:03.500Z", "order", request_id, client_order_id)
        assert chain_hash_of_text(*args, canonical_json(data)) == chain_hash(*args, data)


async def test_journal_since_filters_and_limits(store: AuditStore) -> None:
    for n in range(6):
        kind = KIND_TRANSITION if n % 2 else "ib_error"
        await store.journal(kind, {"n": n})
    assert [e.seq for e in await store.journal_since(2)] == [3, 4, 5, 6]
    assert [e.seq for e in await store.journal_since(0, limit=2)] == [1, 2]
    transitions = await store.journal_since(0, kinds=[KIND_TRANSITION])
    assert [e.data["n"] for e in transitions] == [1, 3, 5]
    assert await store.journal_since(0, kinds=[]) == []
    assert await store.journal_since(6) == []


async def test_unserializable_data_writes_nothing(store: AuditStore) -> None:
    with pytest.raises(TypeError):
        await store.journal(KIND_TRANSITION, {"bad": object()})
    with pytest.raises(ValueError, match="not JSON compliant"):
        await store.journal(KIND_TRANSITION, {"bad": float("nan")})
    assert await store.last_seq() == 0


async def test_journal_is_append_only_for_the_store_itself(
    store: AuditStore, db_path: Path
) -> None:
    await fill_journal(store, 2)
    conn = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE journal SET kind = 'x' WHERE seq = 1")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM journal WHERE seq = 1")
    finally:
        conn.close()


async def test_known_kinds_are_documented() -> None:
    assert {
        "transition",
        "ib_error",
        "gate_refusal",
        "auth_failure",
        "arm_file",
        "order_intent",
        "order_ack",
        "order_status",
        "fill",
        "cancel",
        "kill_switch",
        "startup_config",
        "reconcile",
    } <= JOURNAL_KINDS


# ---------------------------------------------------------------------- tampering


@dataclass
class Tampering:
    statements: tuple[str, ...]
    first_bad_seq: int
    problem: str


TAMPERINGS = {
    "edited data": Tampering(
        ("""UPDATE journal SET data = '{"n":99,"to":"SERVING"}' WHERE seq = 3""",), 3, "hash"
    ),
    "edited kind": Tampering(("UPDATE journal SET kind = 'fill' WHERE seq = 2",), 2, "hash"),
    "non-canonical data": Tampering(
        ("""UPDATE journal SET data = '{"to": "SERVING", "n": 2}' WHERE seq = 3""",),
        3,
        "canonical",
    ),
    "deleted middle row": Tampering(("DELETE FROM journal WHERE seq = 3",), 3, "missing"),
    "deleted first row": Tampering(("DELETE FROM journal WHERE seq = 1",), 1, "missing"),
    "changed hash": Tampering(
        (f"UPDATE journal SET hash = '{'e' * 64}' WHERE seq = 4",), 4, "hash"
    ),
    "reordered rows": Tampering(
        (
            "UPDATE journal SET seq = -2 WHERE seq = 2",
            "UPDATE journal SET seq = 2 WHERE seq = 3",
            "UPDATE journal SET seq = 3 WHERE seq = -2",
        ),
        2,
        "prev_hash",
    ),
}


@pytest.mark.parametrize("name", list(TAMPERINGS))
async def test_tampering_is_detected(store: AuditStore, db_path: Path, name: str) -> None:
    await fill_journal(store, 5)
    await store.close()
    assert verify_chain(db_path).ok
    case = TAMPERINGS[name]
    tamper(db_path, *case.statements)
    result = verify_chain(db_path)
    assert not result.ok
    assert result.first_bad_seq == case.first_bad_seq
    assert result.rows == case.first_bad_seq - 1
    assert result.problem is not None
    assert case.problem in result.problem


async def test_verify_refuses_missing_or_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        verify_chain(tmp_path / "nothing.db")
    assert not (tmp_path / "nothing.db").exists()
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).close()
    with pytest.raises(AuditSchemaError):
        verify_chain(foreign)


async def test_empty_journal_verifies(store: AuditStore, db_path: Path) -> None:
    assert verify_chain(db_path) == audit.VerifyResult(ok=True, rows=0)


# ---------------------------------------------------------------------- orders


async def test_insert_get_and_duplicate(store: AuditStore) -> None:
    record = order()
    await store.insert_order(record)
    stored = await store.get_order("pi-0001")
    assert stored is not None
    assert stored == OrderRecord(**{**_fields(record), "updated_at": T0})
    assert stored.status == "pending_new"
    assert stored.filled_qty == Decimal(0)
    assert stored.remaining_qty == Decimal(10)
    assert stored.limit_price == Decimal("187.50")
    assert await store.get_order_by_id(record.id) == stored
    assert await store.get_order("nope") is None
    assert await store.get_order_by_id("nope") is None

    with pytest.raises(DuplicateOrder) as caught:
        await store.insert_order(order(request_hash="cd" * 32))
    assert caught.value.client_order_id == "pi-0001"
    # The loser of the race wrote nothing: one intent row, the first record intact.
    intents = await store.journal_since(0, kinds=[KIND_ORDER_INTENT])
    assert len(intents) == 1
    assert (await store.get_order("pi-0001")) == stored


async def test_order_ids_are_ulids_and_unique() -> None:
    first, second = order("a"), order("b")
    assert len(first.id) == 26
    assert first.id != second.id


async def test_insert_journals_the_intent_in_the_same_transaction(store: AuditStore) -> None:
    record = order()
    await store.insert_order(record)
    [intent] = await store.journal_since(0)
    assert intent.kind == KIND_ORDER_INTENT
    assert intent.client_order_id == "pi-0001"
    assert intent.request_id == "req-pi-0001"
    assert intent.at == T0
    assert intent.data["id"] == record.id
    assert intent.data["qty"] == "10"
    assert intent.data["limit_price"] == "187.50"
    assert intent.data["created_at"] == "2026-01-14T15:01:02.123Z"


async def test_journal_many_writes_rows_in_order_in_one_transaction(
    store: AuditStore, db_path: Path
) -> None:
    seqs = await store.journal_many(
        [JournalRow(KIND_TRANSITION, {"n": 1}), JournalRow("order", {"n": 2}, "r2", "pi-1")]
    )
    assert seqs == [1, 2]
    entries = await store.journal_since(0)
    assert [(e.kind, e.data, e.request_id, e.client_order_id) for e in entries] == [
        (KIND_TRANSITION, {"n": 1}, None, None),
        ("order", {"n": 2}, "r2", "pi-1"),
    ]
    with pytest.raises(TypeError):  # one bad row: none of the batch is written
        await store.journal_many([JournalRow("x", {"ok": 1}), JournalRow("x", {"bad": object()})])
    assert await store.last_seq() == 2
    assert verify_chain(db_path).ok


async def test_an_intent_and_its_event_are_one_commit_seen_committed_by_on_commit(
    store: AuditStore, db_path: Path
) -> None:
    """The order path commits the intent and its pending_new event together; `on_commit`
    streams the event, and by then another connection already reads both rows."""
    await store.journal(KIND_TRANSITION, {"to": "SERVING"})
    committed_when_called: list[list[tuple[int, str]]] = []

    def on_commit(events: list[tuple[int, dict[str, Any]]]) -> None:
        with sqlite3.connect(db_path) as other:  # a reader sees only what is committed
            rows = other.execute("SELECT seq, kind FROM journal WHERE seq >= ? ORDER BY seq",
                                 (events[0][0] - 1,)).fetchall()  # fmt: skip
        committed_when_called.append(rows)

    record = order("pi-ev")
    [(seq, event)] = await store.insert_order(record, ["pending_new"], on_commit)
    assert seq == 3
    stored = dataclasses.replace(record, updated_at=record.created_at)  # as insert_order sets
    assert event == {"event": "pending_new", "order": stored.to_api()}
    assert committed_when_called == [[(2, KIND_ORDER_INTENT), (3, KIND_ORDER_EVENT)]]
    [intent, streamed] = await store.journal_since(1)
    assert (streamed.kind, streamed.data, streamed.client_order_id, streamed.request_id) == (
        KIND_ORDER_EVENT, event, "pi-ev", intent.request_id,
    )  # fmt: skip
    assert streamed.at == intent.at
    with pytest.raises(DuplicateOrder):  # refused: no event row either, and no on_commit
        await store.insert_order(order("pi-ev"), ["pending_new"], on_commit)
    assert await store.last_seq() == 3
    assert len(committed_when_called) == 1
    assert verify_chain(db_path).ok


async def test_a_failing_on_commit_does_not_make_a_committed_write_fail(
    store: AuditStore, db_path: Path
) -> None:
    def broken(result: Any) -> None:
        raise RuntimeError("a subscriber bug")

    [(seq, _)] = await store.insert_order(order("pi-oc"), ["pending_new"], broken)
    assert await store.journal_many([JournalRow(KIND_TRANSITION, {"n": 1})], broken) == [seq + 1]
    assert [e.kind for e in await store.journal_since(0)] == [
        KIND_ORDER_INTENT, KIND_ORDER_EVENT, KIND_TRANSITION,
    ]  # fmt: skip
    assert verify_chain(db_path).ok


async def test_update_orders_applies_a_burst_in_one_transaction(
    store: AuditStore, db_path: Path
) -> None:
    await store.insert_order(order("pi-a"))
    await store.insert_order(order("pi-b"))
    fill = (KIND_FILL, {"filled_qty": "10", "avg_price": "187.50"})
    done = await store.update_orders([
        OrderUpdate("pi-a", {"status": "new", "broker_status": "Submitted"}),
        OrderUpdate("pi-b", {"status": "new", "broker_status": "Submitted"}),
        OrderUpdate("pi-a", {"status": "filled", "filled_qty": "10"}, [fill]),
    ])  # fmt: skip
    assert [(r.client_order_id, r.status) for r in done] == [
        ("pi-a", "new"), ("pi-b", "new"), ("pi-a", "filled"),
    ]  # fmt: skip
    assert (await store.get_order("pi-a")) == done[2]
    rows = [(e.kind, e.client_order_id) for e in await store.journal_since(2)]
    assert rows == [
        (KIND_ORDER_STATUS, "pi-a"), (KIND_ORDER_STATUS, "pi-b"), (KIND_ORDER_STATUS, "pi-a"),
        (KIND_FILL, "pi-a"),
    ]  # fmt: skip
    with pytest.raises(OrderNotFound):  # an unknown order rolls the whole burst back
        await store.update_orders([
            OrderUpdate("pi-b", {"status": "canceled"}), OrderUpdate("nope", {"status": "new"}),
        ])  # fmt: skip
    assert (await store.get_order("pi-b")) == done[1]
    assert verify_chain(db_path).ok


async def test_update_order_changes_fields_and_journals_them(
    store: AuditStore, db_path: Path
) -> None:
    record = order()
    await store.insert_order(record)
    later = T0 + timedelta(seconds=1)
    updated = await store.update_order(
        "pi-0001",
        status="partially_filled",
        broker_status="Submitted",
        broker_order_id=1234,
        filled_qty="4",
        filled_avg_price=Decimal("187.49"),
        submitted_at=T0,
        updated_at=later,
    )
    assert updated.status == "partially_filled"
    assert updated.filled_qty == Decimal(4)
    assert updated.remaining_qty == Decimal(6)
    assert updated.updated_at == later
    assert await store.get_order("pi-0001") == updated

    status_rows = await store.journal_since(0, kinds=[KIND_ORDER_STATUS])
    assert len(status_rows) == 1
    row = status_rows[0]
    assert row.client_order_id == "pi-0001"
    assert row.at == later
    assert row.data == {
        "id": record.id,
        "changes": {
            "status": "partially_filled",
            "broker_status": "Submitted",
            "broker_order_id": 1234,
            "filled_qty": "4",
            "filled_avg_price": "187.49",
            "submitted_at": "2026-01-14T15:01:02.123Z",
            "updated_at": "2026-01-14T15:01:03.123Z",
        },
    }
    assert verify_chain(db_path).ok


async def test_update_order_stamps_updated_at_from_the_clock(db_path: Path) -> None:
    now = T0 + timedelta(minutes=5)
    async with await AuditStore.open(db_path, clock=lambda: now) as store:
        await store.insert_order(order())
        updated = await store.update_order("pi-0001", reconcile_pending=True)
    assert updated.updated_at == now
    assert updated.reconcile_pending is True


async def test_update_order_refusals_write_nothing(store: AuditStore) -> None:
    await store.insert_order(order())
    before = await store.last_seq()
    with pytest.raises(OrderNotFound):
        await store.update_order("nope", status="new")
    with pytest.raises(TypeError, match="no field"):
        await store.update_order("pi-0001", colour="red")
    with pytest.raises(ValueError, match="cannot change"):
        await store.update_order("pi-0001", client_order_id="other")
    with pytest.raises(ValueError, match="cannot change"):
        await store.update_order("pi-0001", id="01J9Z7K3V2M8Q4R6T0W1X2Y3Z4")
    with pytest.raises(ValueError, match="unknown order status"):
        await store.update_order("pi-0001", status="done")
    with pytest.raises(ValueError, match="no time zone"):
        await store.update_order("pi-0001", filled_at=datetime(2026, 1, 1))
    assert await store.last_seq() == before


async def test_list_orders_filters_and_order(store: AuditStore) -> None:
    specs = [
        ("o1", "AAPL", "new", 0),
        ("o2", "MSFT", "filled", 1),
        ("o3", "AAPL", "canceled", 2),
        ("o4", "SPY", "pending_new", 3),
        ("o5", "AAPL", "partially_filled", 4),
    ]
    for cid, symbol, status, minutes in specs:
        await store.insert_order(
            order(cid, symbol=symbol, status=status, created_at=T0 + timedelta(minutes=minutes))
        )

    async def cids(**filters: Any) -> list[str]:
        return [r.client_order_id for r in await store.list_orders(**filters)]

    assert await cids() == ["o5", "o4", "o3", "o2", "o1"]
    assert await cids(limit=2) == ["o5", "o4"]
    assert await cids(symbols=["AAPL"]) == ["o5", "o3", "o1"]
    assert await cids(statuses=["filled", "canceled"]) == ["o3", "o2"]
    assert await cids(statuses=["new"], symbols=["MSFT"]) == []
    assert await cids(statuses=[]) == []
    assert await cids(after=T0 + timedelta(minutes=1)) == ["o5", "o4", "o3"]
    assert await cids(until=T0 + timedelta(minutes=2)) == ["o2", "o1"]
    assert await cids(
        after=T0, until=T0 + timedelta(minutes=4), symbols=["AAPL", "SPY"]
    ) == ["o4", "o3"]  # fmt: skip


async def test_list_orders_breaks_ties_by_insertion(store: AuditStore) -> None:
    for cid in ("t1", "t2", "t3"):
        await store.insert_order(order(cid))
    assert [r.client_order_id for r in await store.list_orders()] == ["t3", "t2", "t1"]


async def test_open_orders_are_the_non_terminal_ones(store: AuditStore) -> None:
    statuses = ["pending_new", "accepted", "new", "partially_filled", "pending_cancel",
                "filled", "canceled", "expired", "rejected"]  # fmt: skip
    for n, status in enumerate(statuses):
        await store.insert_order(
            order(f"s{n}", status=status, created_at=T0 + timedelta(seconds=n))
        )
    open_ = await store.open_orders()
    assert [r.status for r in open_] == statuses[:5]
    assert all(r.is_open for r in open_)


async def test_delete_order_frees_the_id_and_journals_it(store: AuditStore) -> None:
    record = order()
    await store.insert_order(record)
    assert await store.delete_order("pi-0001") is True
    assert await store.get_order("pi-0001") is None
    assert await store.delete_order("pi-0001") is False
    await store.insert_order(order())  # the id is free again
    kinds = [e.kind for e in await store.journal_since(0)]
    assert kinds == [KIND_ORDER_INTENT, KIND_ORDER_RELEASED, KIND_ORDER_INTENT]


async def test_delete_refuses_an_order_ib_has_seen(store: AuditStore) -> None:
    await store.insert_order(order())
    await store.update_order("pi-0001", broker_order_id=7, broker_status="PreSubmitted")
    with pytest.raises(OrderNotDeletable):
        await store.delete_order("pi-0001")
    assert await store.get_order("pi-0001") is not None


async def test_to_api_has_the_response_fields() -> None:
    record = order(filled_qty=Decimal("4"), updated_at=T0)
    api = record.to_api()
    assert list(api) == list(audit.API_ORDER_FIELDS)
    assert api["qty"] == "10"
    assert api["remaining_qty"] == "6"
    assert api["created_at"] == "2026-01-14T15:01:02.123Z"
    assert api["extended_hours"] is False
    assert "request_hash" not in api
    json.dumps(api)


@dataclass
class _Request:
    client_order_id: str = "pi-0009"
    symbol: str = "MSFT"
    sec_type: str = "STK"
    exchange: str = "SMART"
    currency: str = "USD"
    side: str = "sell"
    type: str = "market"
    time_in_force: str = "day"
    extended_hours: bool = False
    qty: Decimal = Decimal("3")
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None


async def test_new_builds_a_pending_record_from_a_request(store: AuditStore) -> None:
    record = OrderRecord.new(
        _Request(), request_hash="ef" * 32, trading_mode="paper", request_id="r9", at=T0
    )
    assert record.status == "pending_new"
    assert record.created_at == T0
    await store.insert_order(record)
    assert await store.get_order_by_id(record.id) is not None


def _fields(record: OrderRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in ORDER_COLUMNS}


# ---------------------------------------------------------------------- location


async def test_path_inside_the_sync_folder_is_refused(tmp_path: Path) -> None:
    sync = tmp_path / "gdrive"
    sync.mkdir()
    for inside in (
        sync / "audit.db",
        sync / "deeper" / "audit.db",
        sync / ".." / "gdrive" / "a.db",
    ):
        with pytest.raises(AuditPathError, match="sync folder"):
            await AuditStore.open(inside, sync_folder=sync)
    assert list(sync.iterdir()) == []


async def test_sibling_folder_is_accepted_and_created(tmp_path: Path) -> None:
    sync = tmp_path / "gdrive"
    sync.mkdir()
    sibling = tmp_path / "gdrive-local" / "db" / "audit.db"  # a shared prefix is not inside
    async with await AuditStore.open(sibling, sync_folder=sync) as store:
        await store.journal(KIND_TRANSITION, {})
    assert sibling.is_file()


async def test_symlink_into_the_sync_folder_is_refused(tmp_path: Path) -> None:
    sync = tmp_path / "gdrive"
    sync.mkdir()
    link = tmp_path / "looks-local"
    try:
        link.symlink_to(sync, target_is_directory=True)
    except OSError:
        pytest.skip("symlinks not permitted here")
    with pytest.raises(AuditPathError):
        await AuditStore.open(link / "audit.db", sync_folder=sync)


# ---------------------------------------------------------------------- snapshot


async def test_snapshot_is_a_complete_single_file_copy(store: AuditStore, tmp_path: Path) -> None:
    await fill_journal(store, 5)
    await store.insert_order(order())
    dest = tmp_path / "gdrive" / "audit.db"
    assert await store.snapshot(dest) == dest.resolve()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["audit.db"]  # no temp, -wal, -shm

    result = verify_chain(dest)
    assert result.ok
    assert result.rows == 6
    async with await AuditStore.open(dest) as copy:
        assert [e.hash for e in await copy.journal_since(0)] == [
            e.hash for e in await store.journal_since(0)
        ]
        assert await copy.get_order("pi-0001") == await store.get_order("pi-0001")


async def test_snapshot_replaces_the_previous_one(store: AuditStore, tmp_path: Path) -> None:
    dest = tmp_path / "gdrive" / "audit.db"
    await fill_journal(store, 2)
    await store.snapshot(dest)
    await fill_journal(store, 3)
    await store.snapshot(dest)
    assert verify_chain(dest).rows == 5
    assert sorted(p.name for p in dest.parent.iterdir()) == ["audit.db"]


async def test_failed_snapshot_leaves_the_old_one(
    store: AuditStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "gdrive" / "audit.db"
    await fill_journal(store, 2)
    await store.snapshot(dest)
    before = read(dest)
    await fill_journal(store, 1)

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(audit.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        await store.snapshot(dest)
    assert read(dest) == before
    assert sorted(p.name for p in dest.parent.iterdir()) == ["audit.db"]


async def test_snapshot_over_the_live_file_is_refused(store: AuditStore, db_path: Path) -> None:
    with pytest.raises(AuditPathError):
        await store.snapshot(db_path)


# ---------------------------------------------------------------------- export


async def test_export_journal_json_and_csv(store: AuditStore, db_path: Path) -> None:
    await fill_journal(store, 3)
    await store.insert_order(order())

    out = io.StringIO()
    assert export(db_path, "json", out) == 4
    rows = json.loads(out.getvalue())
    assert [r["seq"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["data"] == {"n": 0, "to": "SERVING"}
    assert rows[3]["kind"] == KIND_ORDER_INTENT
    assert set(rows[0]) == set(audit.JOURNAL_COLUMNS)

    out = io.StringIO()
    assert export(db_path, "csv", out) == 4
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["seq"] for r in parsed] == ["1", "2", "3", "4"]
    assert json.loads(parsed[0]["data"]) == {"n": 0, "to": "SERVING"}
    assert parsed[0]["client_order_id"] == ""
    assert parsed[0]["hash"] == rows[0]["hash"]


async def test_export_orders(store: AuditStore, db_path: Path) -> None:
    await store.insert_order(order("a"))
    await store.insert_order(order("b", created_at=T0 + timedelta(seconds=1), extended_hours=True))

    out = io.StringIO()
    assert export(db_path, "json", out, table="orders") == 2
    rows = json.loads(out.getvalue())
    assert [r["client_order_id"] for r in rows] == ["a", "b"]
    assert rows[1]["extended_hours"] is True
    assert rows[0]["qty"] == "10"

    out = io.StringIO()
    assert export(db_path, "csv", out, table="orders") == 2
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(parsed[0]) == list(ORDER_COLUMNS)
    assert parsed[1]["extended_hours"] == "true"
    assert parsed[0]["reconcile_pending"] == "false"


@pytest.mark.parametrize("fmt", ["json", "csv"])
async def test_export_writes_to_a_windows_console_encoding(
    store: AuditStore, db_path: Path, fmt: str
) -> None:
    """Anyone on the LAN can put any character in the journal (a refused request's path);
    the export to a cp1252 file, as Windows makes one, must not stop half way."""
    await store.journal("access_refused", {"path": "/\u2713\u00e9"})
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="cp1252")
    assert export(db_path, fmt, out) == 1
    out.flush()
    text = raw.getvalue().decode("cp1252")
    data = json.loads(text)[0]["data"] if fmt == "json" else json.loads(
        next(csv.DictReader(io.StringIO(text)))["data"])  # fmt: skip
    assert data == {"path": "/\u2713\u00e9"}


async def test_export_of_an_empty_journal(store: AuditStore, db_path: Path) -> None:
    out = io.StringIO()
    assert export(db_path, "json", out) == 0
    assert json.loads(out.getvalue()) == []
    out = io.StringIO()
    assert export(db_path, "csv", out) == 0
    assert out.getvalue().strip() == ",".join(audit.JOURNAL_COLUMNS)
