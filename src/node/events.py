"""The events that drive the lifecycle machine: one queue, one consumer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Trigger(StrEnum):
    """Every name here is a trigger on the machine (DESIGN.md §3)."""

    # From the clock and the operator
    WINDOW_OPENED = "window_opened"
    WINDOW_CLOSED = "window_closed"
    OPERATOR_START = "operator_start"
    OPERATOR_STOP = "operator_stop"
    LATCH_CLEARED = "latch_cleared"
    SHUTDOWN = "shutdown"
    # From the work a state started
    CONNECTED = "connected"
    START_FAILED = "start_failed"
    RECONCILED = "reconciled"
    RECONCILE_FAILED = "reconcile_failed"
    RECOVERED = "recovered"
    GRACE_EXPIRED = "grace_expired"
    BACKOFF_ELAPSED = "backoff_elapsed"
    WORK_FAILED = "work_failed"  # the state's work raised: a bug, not a gateway problem
    # From the broker
    DISCONNECTED = "disconnected"
    HEARTBEAT_LOST = "heartbeat_lost"
    CONNECTIVITY_LOST = "connectivity_lost"


@dataclass(frozen=True)
class Event:
    trigger: Trigger
    reason: str = ""
    # The state visit that started the work posting this event. An event from an
    # earlier visit (work that finished just as its state was left) is stale and dropped.
    visit: int | None = None
