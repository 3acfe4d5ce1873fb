"""The operator's decisions that survive a daemon restart: force, stop and the latch."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from loguru import logger

from node.atomic import write_json_atomic


@dataclass
class OperatorDecisions:
    forced_until: str | None = None  # ISO UTC: `ctl start --force` holds the window open
    stopped: bool = False  # `ctl stop` keeps the node OFF until `ctl start`
    latched: str | None = None  # "needs human": why the node latched OFF


class OperatorState:
    """Read at start-up, written on every change (STATE_DIR/operator_state.json)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.decisions = self._load()

    def _load(self) -> OperatorDecisions:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return OperatorDecisions(
                forced_until=raw.get("forced_until"),
                stopped=bool(raw.get("stopped", False)),
                latched=raw.get("latched"),
            )
        except FileNotFoundError:
            return OperatorDecisions()
        except (OSError, ValueError, AttributeError) as exc:
            logger.warning("{} is unreadable ({}); starting with no force, stop or latch",
                           self.path, exc)  # fmt: skip
            return OperatorDecisions()

    def _save(self) -> None:
        write_json_atomic(self.path, asdict(self.decisions))

    def forced(self, now: datetime) -> bool:
        until = self.forced_until
        return until is not None and now < until

    @property
    def forced_until(self) -> datetime | None:
        value = self.decisions.forced_until
        return datetime.fromisoformat(value) if value else None

    @property
    def stopped(self) -> bool:
        return self.decisions.stopped

    @property
    def latched(self) -> str | None:
        return self.decisions.latched

    def force(self, until: datetime | None) -> None:
        self.decisions.forced_until = until.isoformat() if until else None
        self._save()

    def set_stopped(self, stopped: bool) -> None:
        self.decisions.stopped = stopped
        self._save()

    def latch(self, reason: str | None) -> None:
        self.decisions.latched = reason
        self._save()
