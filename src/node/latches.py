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
    kill_switch: bool = False  # POST /v1/kill; cleared only by `ctl clear-kill` on the laptop
    kill_pending: str | None = None  # "node" or "account": a cancel to carry out on connect


class OperatorState:
    """Read at start-up, written on every change (STATE_DIR/operator_state.json)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.decisions = self._load()

    def _load(self) -> OperatorDecisions:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return _decode(raw)
        except FileNotFoundError:
            return OperatorDecisions()
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # It may have held an engaged kill switch: fail closed, as if it had.
            logger.error(
                "{} is unusable ({}); starting with no force, stop or latch and the KILL SWITCH "
                "ENGAGED, since it may have been: check the open orders, then run `ibkr-node "
                "ctl clear-kill` (and `ctl stop`/`ctl start --force` again to restore those)",
                self.path, exc,
            )  # fmt: skip
            return OperatorDecisions(kill_switch=True)

    def _save(self) -> None:
        try:
            write_json_atomic(self.path, asdict(self.decisions))
        except OSError as exc:
            # The decision holds in memory; it is lost only if the daemon restarts too.
            logger.error("cannot write {} ({}): the operator's decision will not survive a "
                         "restart until the folder is writable", self.path, exc)  # fmt: skip

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

    @property
    def kill_switch(self) -> bool:
        return self.decisions.kill_switch

    @property
    def kill_pending(self) -> str | None:
        return self.decisions.kill_pending

    def engage_kill(self, scope: str) -> None:
        """Latch, with its cancel pending (an account-wide one is never narrowed)."""
        self.decisions.kill_switch = True
        if self.decisions.kill_pending != "account":
            self.decisions.kill_pending = scope
        self._save()

    def kill_carried_out(self) -> None:
        self.decisions.kill_pending = None
        self._save()

    def clear_kill(self) -> None:
        self.decisions.kill_switch = False
        self.decisions.kill_pending = None
        self._save()


def _decode(raw: object) -> OperatorDecisions:
    """Check every field, so a hand-edited file fails here, once, and not at each use."""
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    forced_until = raw.get("forced_until")
    if forced_until is not None:
        if not isinstance(forced_until, str):
            raise TypeError("forced_until is not a date")
        if datetime.fromisoformat(forced_until).tzinfo is None:
            raise ValueError("forced_until has no time zone")
    stopped = raw.get("stopped", False)
    if not isinstance(stopped, bool):
        raise TypeError("stopped is not true or false")
    latched = raw.get("latched")
    if latched is not None and not isinstance(latched, str):
        raise TypeError("latched is not a text")
    kill_switch = raw.get("kill_switch", False)
    if not isinstance(kill_switch, bool):
        raise TypeError("kill_switch is not true or false")
    kill_pending = raw.get("kill_pending")
    if kill_pending not in (None, "node", "account"):
        raise ValueError("kill_pending is not node or account")
    return OperatorDecisions(forced_until=forced_until, stopped=stopped, latched=latched,
                             kill_switch=kill_switch, kill_pending=kill_pending)  # fmt: skip
