"""The simulator's state file: what IB's servers would remember if the gateway process died.

Format 2 is JSON lines. The first line is a whole snapshot, ``{"format": 2, "state": {...}}``,
always written atomically (temp file, fsync, rename). Every later line is one commit's delta,
appended and fsync'd before the commit's events reach a client::

    {"orders": [...], "executions": [...], "account": {...}, "next_order_ids": {...}, ...}

``orders`` replace the orders of the same (client_id, order_id) or are added after the others,
``executions`` are appended, and the other keys, when present, replace the old value. So a
commit costs the size of its change, not of the state. Loading applies the deltas in order;
an unreadable last line without its newline is a write cut short by a kill and is dropped
(that commit was never confirmed to a client); any other damaged line is an error. When the
deltas outweigh the snapshot the file is compacted, rewritten atomically as one snapshot line,
so it stays under about twice the state's size.

Format 1 (one whole-snapshot JSON document) still loads; the simulator rewrites it as format 2
at start-up.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.atomic import write_text_atomic

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)

# Compact once the appended deltas weigh more than the snapshot (so the rewrite's cost is
# paid for by at least as many bytes of cheap appends), and never for less than this.
COMPACT_MIN_BYTES = 1 << 20

_SCALARS = ("next_perm_id", "next_exec_seq")
_REPLACED = ("account", "next_order_ids", *_SCALARS)
# What the engine writes in every change line, and what it may add (the account, when moved).
_REQUIRED_KEYS = frozenset({"orders", "executions", "next_order_ids", *_SCALARS})
_DELTA_KEYS = _REQUIRED_KEYS | {"account"}

Snapshot = Callable[[], dict[str, Any]]


class StateFileError(Exception):
    """The state file exists but cannot be used; the message says what to do."""


class StateFile:
    def __init__(self, path: Path, *, compact_min_bytes: int = COMPACT_MIN_BYTES) -> None:
        self.path = path
        self.compact_min_bytes = compact_min_bytes
        # What this process last wrote: None until it wrote a snapshot, so it never appends
        # to a file it has not checked (an old format, a torn tail, someone else's file).
        self._snapshot_bytes: int | None = None
        self._delta_bytes = 0

    # ------------------------------------------------------------------ reading

    def load(self) -> dict[str, Any] | None:
        """The state the file holds (the snapshot with its deltas applied), None if no file.

        Only reads: safe while a simulator appends to the file.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        # Every record is written in one piece ending in a newline: only a file that does not
        # end in one can hold a record cut short by a kill. A damaged line that does end in
        # one was written whole (and its commit perhaps confirmed): that is corruption.
        complete = raw.endswith(b"\n")
        lines = raw.split(b"\n")
        if lines[-1].strip() == b"":
            lines.pop()  # the newline ending the last record
        head = self._parse(lines[0] if lines else b"", what="is not valid JSON")
        if not isinstance(head, dict) or head.get("format") not in READABLE_FORMATS:
            raise StateFileError(
                f"{self.path} is not a simulator state file of format {FORMAT_VERSION}; "
                "move it aside to start from a fresh account"
            )
        state = head.get("state")
        if not isinstance(state, dict):
            raise StateFileError(f"{self.path} has no state; move it aside")
        deltas = lines[1:]
        if deltas and head["format"] == 1:
            raise StateFileError(
                f"{self.path} has data after its format 1 state; "
                "move it aside to start from a fresh account"
            )
        if not deltas:
            return state
        try:
            orders = {_order_key(o): o for o in state.get("orders", [])}
            executions = list(state.get("executions", []))
        except (TypeError, KeyError, ValueError) as exc:
            raise self._corrupt(1, f"malformed state {exc!r}") from exc
        for number, line in enumerate(deltas, start=2):
            try:
                delta = json.loads(line)
            except ValueError as exc:  # also a multi-byte character cut in two
                if number == len(lines) and not complete:
                    break  # a torn last record: the kill came mid-write, before the fsync
                raise self._corrupt(number, exc) from exc
            if not isinstance(delta, dict):
                raise self._corrupt(number, "not an object")
            if not _REQUIRED_KEYS <= delta.keys() <= _DELTA_KEYS:
                raise self._corrupt(number, f"unexpected keys {sorted(delta)}")
            try:
                for order in delta.get("orders", []):
                    orders[_order_key(order)] = order
                executions.extend(delta.get("executions", []))
                state.update((k, delta[k]) for k in _REPLACED if k in delta)
            except (TypeError, KeyError, ValueError, AttributeError) as exc:
                raise self._corrupt(number, f"malformed change {exc!r}") from exc
        state["orders"] = list(orders.values())
        state["executions"] = executions
        return state

    def _parse(self, line: bytes, *, what: str) -> Any:
        try:
            return json.loads(line)
        except ValueError as exc:
            raise StateFileError(
                f"{self.path} {what} ({exc}); move it aside to start from a fresh account"
            ) from exc

    def _corrupt(self, number: int, why: object) -> StateFileError:
        return StateFileError(
            f"{self.path} line {number} is damaged ({why}); "
            "move it aside to start from a fresh account"
        )

    # ------------------------------------------------------------------ writing

    def save(self, state: dict[str, Any]) -> None:
        """Rewrite the file as one snapshot line, atomically (temp file, fsync, rename).

        A kill -9 at any instant leaves either the old or the new file, never a torn one.
        This is the compaction; later commits append to it.
        """
        text = json.dumps({"format": FORMAT_VERSION, "state": state}, separators=(",", ":"))
        write_text_atomic(self.path, text + "\n")
        self._snapshot_bytes = len(text) + 1
        self._delta_bytes = 0

    def compact(self, state: dict[str, Any]) -> None:
        """``save`` for start-up: a file that cannot be written is a clear StateFileError."""
        try:
            self.save(state)
        except OSError as exc:
            raise StateFileError(
                f"cannot write the state file {self.path} ({exc.strerror or exc}); "
                "check the folder exists and is writable"
            ) from exc

    def commit(self, delta: dict[str, Any], snapshot: Snapshot) -> None:
        """Make one commit durable: append its delta and fsync, or compact via ``snapshot()``.

        ``delta`` is the change (see the module docstring); ``snapshot`` returns the whole
        state after it, called only when the file is rewritten.
        """
        if self._snapshot_bytes is None or self._delta_bytes >= max(
            self.compact_min_bytes, self._snapshot_bytes
        ):
            self.save(snapshot())
            return
        data = json.dumps(delta, separators=(",", ":")).encode("utf-8") + b"\n"
        try:
            self._append(data)
        except FileNotFoundError:  # moved aside under us: start again from a whole snapshot
            self.save(snapshot())
            return
        except BaseException:
            # Part of the line may be on disk (a full disk, say): appending after it would
            # bury a torn record mid-file, so the next commit rewrites the file whole.
            self._snapshot_bytes = None
            raise
        self._delta_bytes += len(data)

    def _append(self, data: bytes) -> None:
        # No O_CREAT: a delta must never start a file of its own. O_BINARY (Windows only)
        # keeps "\n" as is; open, write, fsync, close is portable and holds no handle that
        # would stop the compaction's rename on Windows.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_BINARY", 0))
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)


def _order_key(order: dict[str, Any]) -> tuple[int, int]:
    return int(order["client_id"]), int(order["order_id"])
