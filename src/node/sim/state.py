"""The simulator's state file: what IB's servers would remember if the gateway process died."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from node.atomic import write_text_atomic

FORMAT_VERSION = 1


class StateFileError(Exception):
    """The state file exists but cannot be used; the message says what to do."""


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any] | None:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise StateFileError(
                f"{self.path} is not valid JSON ({exc}); "
                "move it aside to start from a fresh account"
            ) from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise StateFileError(
                f"{self.path} is not a simulator state file of format {FORMAT_VERSION}; "
                "move it aside to start from a fresh account"
            )
        state = data.get("state")
        if not isinstance(state, dict):
            raise StateFileError(f"{self.path} has no state; move it aside")
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Write atomically: a temp file in the same folder, fsync, then rename over the old one.

        A kill -9 at any instant leaves either the old or the new file, never a torn one.
        """
        write_text_atomic(
            self.path, json.dumps({"format": FORMAT_VERSION, "state": state}, separators=(",", ":"))
        )
