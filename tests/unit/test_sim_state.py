"""The simulator's state file: a snapshot line, then one appended delta per commit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from node.sim.account import Account
from node.sim.engine import OrderEngine
from node.sim.market import Market
from node.sim.server import SimConfig, Simulator
from node.sim.state import FORMAT_VERSION, StateFile, StateFileError
from support import sim_order as order


def make_engine(store: StateFile | None = None) -> OrderEngine:
    engine = OrderEngine(Account("DU1"), Market(seed=3), clock=lambda: 1.7e9)
    if store is not None:
        engine.persist = store.commit
    return engine


def state_of(engine: OrderEngine) -> dict[str, Any]:
    """A snapshot that later changes cannot reach (the account's positions are live dicts)."""
    state: dict[str, Any] = json.loads(json.dumps(engine.snapshot()))
    return state


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def write_lines(path: Path, records: list[bytes]) -> None:
    path.write_bytes(b"\n".join(records) + b"\n")


def committed_file(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """A state file after every kind of commit, and its lines."""
    path = tmp_path / "s.json"
    every_kind_of_commit(make_engine(StateFile(path)))
    return path, lines(path)


def every_kind_of_commit(engine: OrderEngine) -> None:
    """Fills, resting orders, a modification, cancels, refusals, partial fills, an auction."""
    engine.place(order())  # filled at once: order, execution, account
    engine.place(order(order_id=2, order_type="LMT", lmt_price=1.0))  # rests
    engine.place(order(order_id=2, order_type="LMT", lmt_price=1.5, total_quantity=20))
    engine.place(order(order_id=3, action="SELL", symbol="MSFT", total_quantity=5))
    engine.place(order(order_id=4, symbol="NOPE"))  # error 200: only the id counter moves
    engine.place(order(order_id=5, order_type="TRAIL"))  # refused: an Inactive order
    engine.cancel(1, 2)
    engine.cancel(1, 99)  # not found: nothing changes
    engine.place(order(client_id=2, order_id=7, tif="OPG"))
    engine.place(order(client_id=2, order_id=8, order_type="STP", aux_price=10_000.0))
    engine.settings.partial_fill_size = 3
    engine.place(order(client_id=2, order_id=9, total_quantity=7))
    engine.market.step()
    engine.on_market()
    engine.on_market()
    engine.open_auction()
    engine.global_cancel()


def test_round_trip_through_many_commits(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    store = StateFile(path)
    engine = make_engine(store)
    engine.place(order())
    assert StateFile(path).load() == engine.snapshot()
    every_kind_of_commit(engine)
    state = StateFile(path).load()
    assert state == engine.snapshot()
    assert len(state["orders"]) == 7  # NOPE never became one
    assert len(state["executions"]) >= 4
    assert json.loads(lines(path)[0])["format"] == FORMAT_VERSION
    assert len(lines(path)) > 10  # the commits were appended, not rewritten
    copy = OrderEngine(Account("DU0"), Market(seed=3))
    copy.restore(state)
    assert copy.snapshot() == engine.snapshot()
    assert copy.account.account_id == "DU1"
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temp file left behind


def test_each_commit_is_on_file_before_its_events_go_out(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    seen: list[bool] = []
    engine = make_engine(StateFile(path))
    engine.listener = lambda event: seen.append(StateFile(path).load() == engine.snapshot())
    every_kind_of_commit(engine)
    assert seen
    assert all(seen)


def test_a_torn_last_record_loads_as_the_state_before_it(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    engine = make_engine(StateFile(path))
    every_kind_of_commit(engine)
    before, size = state_of(engine), path.stat().st_size
    engine.place(order(order_id=20))  # a fill: order, execution and account in one record
    after, whole = state_of(engine), path.read_bytes()
    assert before != after
    assert len(whole) - size > 300
    for cut in range(size, len(whole) - 1):  # every byte of the record but its last two
        path.write_bytes(whole[:cut])
        assert StateFile(path).load() == before, cut
    path.write_bytes(whole[:-1])  # only the newline missing: the record is whole
    assert StateFile(path).load() == after
    path.write_bytes(whole[: size + 40] + "é".encode()[:1])  # a character cut in two
    assert StateFile(path).load() == before


def test_the_simulator_starts_from_a_torn_file_and_rewrites_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    engine = make_engine(StateFile(path))
    every_kind_of_commit(engine)
    before = state_of(engine)
    engine.place(order(order_id=20))
    path.write_bytes(path.read_bytes()[:-50])
    sim = Simulator(SimConfig(account="DU1", state_file=path, tick_interval=None))
    assert sim.engine.snapshot() == before
    assert len(lines(path)) == 1  # compacted at start-up: the torn record is gone
    sim.engine.place(order(order_id=21))  # and later commits append to the clean file
    assert len(lines(path)) == 2
    assert StateFile(path).load() == sim.engine.snapshot()


@pytest.mark.parametrize(
    "content",
    [
        b"{broken",
        b"",
        b"\x00\xff\xfe garbage",
        b"[]",
        b'{"format": 99, "state": {}}',
        b'{"format": 2}',
        b'{"format": 1, "state": {}}\n{"orders": []}\n',  # format 1 has no deltas
    ],
)
def test_garbage_is_refused_with_what_to_do(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(content)
    with pytest.raises(StateFileError, match="move it aside"):
        StateFile(path).load()


def test_a_damaged_record_before_the_last_is_refused(tmp_path: Path) -> None:
    path, records = committed_file(tmp_path)
    write_lines(path, [*records[:2], records[2][:30], *records[3:]])
    with pytest.raises(StateFileError, match=r"line 3 is damaged.*move it aside"):
        StateFile(path).load()
    write_lines(path, [records[0], b'{"orders": 5}', *records[1:]])
    with pytest.raises(StateFileError, match=r"line 2 is damaged.*move it aside"):
        StateFile(path).load()


def test_a_damaged_last_record_that_was_written_whole_is_refused(tmp_path: Path) -> None:
    """A record ending in its newline was written in one piece, and its commit may have been
    confirmed to a client: damage there is corruption, not a write cut short by a kill."""
    path, records = committed_file(tmp_path)
    write_lines(path, [*records[:-1], b"#" + records[-1][1:]])
    with pytest.raises(StateFileError, match=rf"line {len(records)} is damaged.*move it aside"):
        StateFile(path).load()


def test_a_change_line_with_unknown_or_missing_keys_is_refused(tmp_path: Path) -> None:
    """A damaged key still parses as JSON: without the check its orders would be dropped."""
    path, records = committed_file(tmp_path)
    renamed = records[-1].replace(b'"orders"', b'"ord#rs"', 1)
    assert renamed != records[-1]
    write_lines(path, [*records[:-1], renamed])
    with pytest.raises(StateFileError, match=rf"line {len(records)} is damaged"):
        StateFile(path).load()


def test_a_format_1_file_loads_and_is_rewritten_as_format_2(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    engine = make_engine()
    every_kind_of_commit(engine)
    old = {"format": 1, "state": engine.snapshot()}
    path.write_text(json.dumps(old, separators=(",", ":")), encoding="utf-8")
    assert StateFile(path).load() == engine.snapshot()

    sim = Simulator(SimConfig(account="DU1", state_file=path, tick_interval=None))
    assert sim.engine.snapshot() == engine.snapshot()
    [head] = lines(path)
    assert json.loads(head)["format"] == FORMAT_VERSION
    sim.engine.place(order(order_id=30))
    assert StateFile(path).load() == sim.engine.snapshot()


def test_a_store_never_appends_to_a_file_it_did_not_write(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    engine = make_engine()
    every_kind_of_commit(engine)
    path.write_text(json.dumps({"format": 1, "state": engine.snapshot()}), encoding="utf-8")
    engine.persist = StateFile(path).commit  # no compaction at start-up
    engine.place(order(order_id=30))
    assert len(lines(path)) == 1  # the first commit rewrote it whole, as format 2
    assert json.loads(lines(path)[0])["format"] == FORMAT_VERSION
    assert StateFile(path).load() == engine.snapshot()


def test_a_file_moved_aside_is_started_again_whole(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    engine = make_engine(StateFile(path))
    every_kind_of_commit(engine)
    path.rename(tmp_path / "aside.json")
    engine.place(order(order_id=30))
    assert len(lines(path)) == 1
    assert StateFile(path).load() == engine.snapshot()


def test_after_a_failed_append_the_next_commit_rewrites_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.json"
    store = StateFile(path)
    engine = make_engine(store)
    every_kind_of_commit(engine)
    append = store._append

    def half_then_fail(data: bytes) -> None:
        append(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "_append", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        engine.place(order(order_id=30))
    monkeypatch.undo()
    engine.place(order(order_id=31))
    assert len(lines(path)) == 1  # not appended after the half record
    assert StateFile(path).load() == engine.snapshot()


def test_compaction_keeps_the_state_and_bounds_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    engine = make_engine(StateFile(path, compact_min_bytes=0))
    for i in range(10):
        engine.place(order(order_id=100 + i, order_type="LMT", lmt_price=1.0))
    sizes: list[int] = []
    compactions = 0
    for i in range(300):
        count = len(lines(path))
        engine.place(order(order_id=200 + i))
        compactions += len(lines(path)) < count
        sizes.append(path.stat().st_size)
        snapshot_size = len(json.dumps({"format": 2, "state": engine.snapshot()})) + 1
        assert sizes[-1] <= 2 * snapshot_size + 2_000
    assert compactions >= 2
    assert StateFile(path).load() == engine.snapshot()

    grown = path.stat().st_size
    store = StateFile(path)
    store.save(engine.snapshot())  # as the simulator does at start-up
    assert len(lines(path)) == 1
    assert path.stat().st_size < grown
    assert StateFile(path).load() == engine.snapshot()


def test_a_commit_appends_its_change_not_the_state(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    engine = make_engine(StateFile(path, compact_min_bytes=1 << 40))  # never compacts
    engine.place(order(order_id=1, order_type="LMT", lmt_price=1.0))
    appended: dict[int, int] = {}
    for n in range(2, 801):
        size = path.stat().st_size
        if n in (50, 400, 800):  # the same kind of commit: a market order filled at once
            engine.place(order(order_id=n))
            appended[n] = path.stat().st_size - size
        else:
            engine.place(order(order_id=n, order_type="LMT", lmt_price=1.0))
    assert len(engine.orders) == 800
    assert max(appended.values()) - min(appended.values()) < 20, appended  # ids get longer
    snapshot_size = len(json.dumps(engine.snapshot()))
    assert appended[800] * 100 < snapshot_size
    assert StateFile(path).load() == engine.snapshot()


def test_a_missing_file_is_no_state(tmp_path: Path) -> None:
    assert StateFile(tmp_path / "none.json").load() is None


def test_start_up_compaction_names_an_unwritable_file(tmp_path: Path) -> None:
    folder = tmp_path / "file-not-folder"
    folder.write_text("", encoding="utf-8")
    with pytest.raises(StateFileError, match="cannot write the state file"):
        StateFile(folder / "s.json").compact({"orders": []})
