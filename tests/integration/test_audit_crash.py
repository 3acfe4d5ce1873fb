"""A writer killed with SIGKILL mid-stream loses nothing it acknowledged; the chain stays valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from node.audit import AuditStore, verify_chain

pytestmark = pytest.mark.anyio

ACKED_BEFORE_KILL = 150  # lines the child must have printed before it is killed
ROW_LIMIT = 50_000  # the child stops by itself after this many rows, whatever happens
ROUNDS = 2  # the second child appends to the file the first one left after its kill
DEADLINE = 60

# Prints a line only after the call that committed the row has returned: each line is an
# acknowledgement the child would have given a client.
CHILD = """
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import anyio

from node.audit import AuditStore, OrderRecord


async def main() -> None:
    store = await AuditStore.open(Path(sys.argv[1]))
    tag = sys.argv[2]
    for n in range(int(sys.argv[3])):
        seq = await store.journal("transition", {"n": n, "tag": tag}, request_id=f"{tag}-{n}")
        print("j", seq, flush=True)
        if n % 5 == 0:
            cid = f"{tag}-{n}"
            await store.insert_order(OrderRecord(
                client_order_id=cid, request_hash="0" * 64, symbol="AAPL", side="buy",
                type="market", qty=Decimal(1), trading_mode="paper",
                created_at=datetime.now(UTC),
            ))
            print("o", cid, flush=True)
            await store.update_order(cid, status="new", broker_order_id=n + 1)
            print("u", cid, flush=True)


anyio.run(main)
"""


async def run_and_kill(db: Path, tag: str) -> tuple[list[int], list[str], list[str]]:
    """Start the writer, SIGKILL it once it has acknowledged enough rows; return every ack."""
    process = await anyio.open_process(
        [sys.executable, "-c", CHILD, str(db), tag, str(ROW_LIMIT)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    lines: list[bytes] = []
    try:
        assert process.stdout is not None
        reader = BufferedByteReceiveStream(process.stdout)
        with anyio.fail_after(DEADLINE):
            while len(lines) < ACKED_BEFORE_KILL:
                lines.append(await reader.receive_until(b"\n", 1024))
            process.kill()
            await process.wait()
            # Lines already in the pipe were printed, so acknowledged, before the kill landed.
            while True:
                try:
                    lines.append(await reader.receive_until(b"\n", 1024))
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    break  # a line cut short by the kill was never a complete ack
    finally:
        if process.returncode is None:
            process.kill()
            with anyio.move_on_after(10, shield=True):
                await process.wait()
        await process.aclose()
    assert process.returncode != 0, "the child finished before it was killed"

    seqs: list[int] = []
    inserted: list[str] = []
    updated: list[str] = []
    for line in lines:
        what, value = line.decode().split()
        if what == "j":
            seqs.append(int(value))
        elif what == "o":
            inserted.append(value)
        else:
            updated.append(value)
    return seqs, inserted, updated


async def test_sigkill_loses_no_acknowledged_row(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    acked_seqs: list[int] = []
    for round_ in range(ROUNDS):
        seqs, inserted, updated = await run_and_kill(db, f"r{round_}")
        assert len(seqs) >= ACKED_BEFORE_KILL // 3
        acked_seqs.extend(seqs)

        result = verify_chain(db)
        assert result.ok, result.problem

        async with await AuditStore.open(db) as store:
            last = await store.last_seq()
            assert result.rows == last
            present = {entry.seq for entry in await store.journal_since(0, limit=last)}
            assert set(acked_seqs) <= present, "an acknowledged journal row was lost"
            for cid in inserted:
                record = await store.get_order(cid)
                assert record is not None, f"acknowledged order {cid} was lost"
            for cid in updated:
                record = await store.get_order(cid)
                assert record is not None
                assert record.status == "new"
            # The chain goes on from where the killed writer left it.
            assert await store.journal("reconcile", {"after": "kill"}) == last + 1
        assert verify_chain(db).ok
