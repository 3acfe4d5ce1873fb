"""The lifecycle machine (DESIGN.md §3): states, transitions, guards, and the one event loop.

transitions' AsyncMachine (queued) holds the states; guards are the pure predicates of
guards.py over a GuardContext built at the moment of the decision. Entering a state only
starts that state's work (states/) as a task in the daemon's task group; leaving the
state cancels it. Nothing else changes the lifecycle state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import anyio
from anyio.abc import TaskGroup
from loguru import logger
from transitions.extensions.asyncio import AsyncMachine

from node import guards
from node.clock import utc_text
from node.events import Event, Trigger
from node.states import backoff, connected, degraded, off, serving, starting_gateway
from node.states.context import StateContext


class State(StrEnum):
    OFF = "OFF"
    STARTING_GATEWAY = "STARTING_GATEWAY"
    CONNECTED = "CONNECTED"
    SERVING = "SERVING"
    DEGRADED = "DEGRADED"
    BACKOFF = "BACKOFF"


WORK: dict[State, Callable[[StateContext, Event], Awaitable[None]]] = {
    State.OFF: off.run,
    State.STARTING_GATEWAY: starting_gateway.run,
    State.CONNECTED: connected.run,
    State.SERVING: serving.run,
    State.DEGRADED: degraded.run,
    State.BACKOFF: backoff.run,
}
RUNNING = [s.value for s in State if s is not State.OFF]
# BACKOFF and OFF have nothing to fall back to: their failure is left to the operator.
WORK_FAILED_SOURCES = [State.STARTING_GATEWAY, State.CONNECTED, State.SERVING, State.DEGRADED]
RECENT_TRANSITIONS = 50

S = State
T = Trigger
# (trigger, sources, destination, conditions, unless, before)
TRANSITIONS: list[dict[str, Any]] = [
    # Leaving for OFF from anywhere.
    {"trigger": T.WINDOW_CLOSED, "source": RUNNING, "dest": S.OFF},
    {"trigger": T.OPERATOR_STOP, "source": RUNNING, "dest": S.OFF},
    {"trigger": T.SHUTDOWN, "source": RUNNING, "dest": S.OFF},
    # Leaving OFF.
    *(
        {"trigger": t, "source": S.OFF, "dest": S.STARTING_GATEWAY, "conditions": "may_start"}
        for t in (T.WINDOW_OPENED, T.OPERATOR_START, T.LATCH_CLEARED)
    ),
    # Starting.
    {"trigger": T.CONNECTED, "source": S.STARTING_GATEWAY, "dest": S.CONNECTED},
    {"trigger": T.START_FAILED, "source": S.STARTING_GATEWAY, "dest": S.OFF,
     "conditions": "login_failures_exhausted", "before": "latch_login_failures"},
    {"trigger": T.START_FAILED, "source": S.STARTING_GATEWAY, "dest": S.BACKOFF},
    # Connected: the account must match the trading mode (checked while still connected:
    # a disconnect racing the reconcile is a failure to retry, not a wrong account).
    {"trigger": T.RECONCILED, "source": S.CONNECTED, "dest": S.BACKOFF,
     "conditions": "gateway_lost"},
    {"trigger": T.RECONCILED, "source": S.CONNECTED, "dest": S.SERVING,
     "conditions": "account_matches_mode"},
    {"trigger": T.RECONCILED, "source": S.CONNECTED, "dest": S.OFF,
     "before": "latch_account_mismatch"},
    *(
        {"trigger": t, "source": S.CONNECTED, "dest": S.BACKOFF}
        for t in (T.DISCONNECTED, T.HEARTBEAT_LOST, T.RECONCILE_FAILED)
    ),
    # Serving.
    {"trigger": T.HEARTBEAT_LOST, "source": S.SERVING, "dest": S.DEGRADED},
    {"trigger": T.CONNECTIVITY_LOST, "source": S.SERVING, "dest": S.DEGRADED},
    {"trigger": T.DISCONNECTED, "source": S.SERVING, "dest": S.BACKOFF},
    # Degraded.
    {"trigger": T.RECOVERED, "source": S.DEGRADED, "dest": S.SERVING},
    {"trigger": T.GRACE_EXPIRED, "source": S.DEGRADED, "dest": S.BACKOFF},
    {"trigger": T.DISCONNECTED, "source": S.DEGRADED, "dest": S.BACKOFF},
    # A bug in a state's work: retry from a fresh start, as after any other failure.
    {"trigger": T.WORK_FAILED, "source": WORK_FAILED_SOURCES, "dest": S.BACKOFF},
    # Backoff: a restart takes a slot of the budget.
    {"trigger": T.BACKOFF_ELAPSED, "source": S.BACKOFF, "dest": S.STARTING_GATEWAY,
     "conditions": ["window_allows", "budget_allows"], "before": "take_slot"},
]  # fmt: skip


@dataclass(frozen=True)
class TransitionRecord:
    at: datetime
    source: str
    dest: str
    trigger: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"at": utc_text(self.at) or "", "from": self.source,
                "to": self.dest, "trigger": self.trigger, "reason": self.reason}  # fmt: skip


class Lifecycle:
    """The model transitions drives; also the event loop that feeds it."""

    state: str
    trigger: Callable[..., Awaitable[bool]]  # bound by transitions

    def __init__(
        self,
        ctx: StateContext,
        task_group: TaskGroup,
        window_open: Callable[[], bool],
        on_transition: Callable[[TransitionRecord], None] = lambda record: None,
    ) -> None:
        self.ctx = ctx
        self._tg = task_group
        self._window_open = window_open
        self._on_transition = on_transition
        self.visit = 0
        self.since = ctx.clock.now()
        self.reason = "daemon started"
        # The state as observers see it: set together with since, reason and the record, so a
        # snapshot never shows a new state with the old reason (the machine's own `state`
        # changes a step before its after-callback runs).
        self.current = State.OFF.value
        self.transitions: deque[TransitionRecord] = deque(maxlen=RECENT_TRANSITIONS)
        self._work: anyio.CancelScope | None = None
        self.machine = AsyncMachine(
            model=self,
            states=[s.value for s in State],
            transitions=TRANSITIONS,
            initial=State.OFF.value,
            queued=True,
            send_event=True,
            auto_transitions=False,
            ignore_invalid_triggers=True,
            after_state_change="_entered",
        )

    # ------------------------------------------------------------------ the event loop

    async def handle(self, event: Event) -> bool:
        """Feed one event to the machine; returns whether the state changed."""
        if event.visit is not None and event.visit != self.visit:
            logger.debug("dropped stale {} from an earlier visit", event.trigger)
            return False
        before = self.state
        if event.trigger is T.START_FAILED and before == State.STARTING_GATEWAY:
            self.ctx.consecutive_start_failures += 1  # counted before the guards read it
        await self.trigger(event.trigger.value, event=event)
        changed = self.state != before
        if (
            not changed
            and event.trigger in (T.OPERATOR_START, T.WINDOW_OPENED, T.LATCH_CLEARED)
            and before == State.OFF
        ):
            logger.info("{} ignored: {}", event.trigger, self.blocked_reason())
        return changed

    async def _entered(self, data: Any) -> None:
        event: Event = data.kwargs["event"]
        source = data.transition.source
        self.ctx.last_state = source
        self.visit += 1
        self.since = self.ctx.clock.now()
        reason = self._reason_for(event)
        self.reason = reason
        record = TransitionRecord(self.since, source, self.state, event.trigger.value, reason)
        self.transitions.append(record)
        self.current = self.state
        logger.info("{} -> {} on {}: {}", source, self.state, event.trigger.value, reason)
        self._on_transition(record)
        if self._work is not None:
            self._work.cancel()
        scope = anyio.CancelScope()
        self._work = scope
        state = State(self.state)
        work = WORK[state]
        entry = Event(event.trigger, reason, self.visit)

        async def run() -> None:
            with scope:
                try:
                    await work(self.ctx, entry)
                except* Exception as group:  # the work's own task groups raise groups
                    self._work_failed(state, entry, group)

        self._tg.start_soon(run)

    def _work_failed(self, state: State, entry: Event, group: BaseExceptionGroup[Exception]
                     ) -> None:  # fmt: skip
        """A bug in one state's work must not end the daemon (its task group would): log it
        and leave the state as one of its own failures would."""
        failure = group.exceptions[0] if len(group.exceptions) == 1 else group
        reason = f"{state}'s work failed: {type(failure).__name__}: {failure}"
        if state in WORK_FAILED_SOURCES:
            then = "restarting the gateway through BACKOFF"
        elif state is State.BACKOFF:
            then = "no restart is scheduled; `ibkr-node ctl reset-backoff` retries now"
        else:
            then = "the gateway may still run; `ibkr-node ctl stop` stops it"
        logger.opt(exception=failure).error(
            "{}; {} (an ibkr-node bug: please report it with this log)", reason, then
        )
        if state in WORK_FAILED_SOURCES:
            self.ctx.post(Event(T.WORK_FAILED, reason, entry.visit))  # stale if already left
        elif entry.visit == self.visit:
            self.ctx.notify("needs_human", f"{reason}; {then}", state.value)

    def _reason_for(self, event: Event) -> str:
        if self.state == State.OFF and self.ctx.operator.latched:
            return f"latched: {self.ctx.operator.latched}"
        return event.reason or event.trigger.value.replace("_", " ")

    # ------------------------------------------------------------------ guards

    def guard_context(self) -> guards.GuardContext:
        ctx = self.ctx
        now = ctx.clock.now()
        info = ctx.broker.info
        return guards.GuardContext(
            window_open=self._window_open(),
            forced=ctx.operator.forced(now),
            latched=ctx.operator.latched,
            operator_stopped=ctx.operator.stopped,
            budget_available=ctx.budget.available(now),
            trading_mode=ctx.settings.TRADING_MODE,
            account=info.account if info else None,
            consecutive_start_failures=ctx.consecutive_start_failures,
            login_failure_limit=ctx.settings.LOGIN_FAILURE_LIMIT,
        )

    def blocked_reason(self) -> str:
        g = self.guard_context()
        if g.latched:
            return f"latched ({g.latched}); run `ibkr-node ctl clear-latch`"
        if g.operator_stopped:
            return "stopped by the operator; run `ibkr-node ctl start`"
        if not guards.window_allows(g):
            return "outside the run window; `ibkr-node ctl start --force` overrides it"
        return "no reason"

    def may_start(self, data: Any) -> bool:
        return self.ctx.restarts_enabled and guards.may_start(self.guard_context())

    def window_allows(self, data: Any) -> bool:
        g = self.guard_context()
        return self.ctx.restarts_enabled and guards.window_allows(g) and guards.may_start(g)

    def budget_allows(self, data: Any) -> bool:
        return guards.budget_allows(self.guard_context())

    def gateway_lost(self, data: Any) -> bool:
        return not self.ctx.broker.connected

    def account_matches_mode(self, data: Any) -> bool:
        return guards.account_matches_mode(self.guard_context())

    def login_failures_exhausted(self, data: Any) -> bool:
        return guards.login_failures_exhausted(self.guard_context())

    # ------------------------------------------------------------------ transition effects

    def take_slot(self, data: Any) -> None:
        self.ctx.budget.take(self.ctx.clock.now())
        self.ctx.budget.set_attempt(self.ctx.budget.attempt + 1)

    def latch_login_failures(self, data: Any) -> None:
        event: Event = data.kwargs["event"]
        reason = (
            f"needs human: {self.ctx.consecutive_start_failures} failed starts in a row "
            f"(last: {event.reason})"
        )
        self.ctx.operator.latch(reason)
        self.ctx.notify("needs_human", reason, State.OFF.value)

    def latch_account_mismatch(self, data: Any) -> None:
        reason = guards.account_mismatch_reason(self.guard_context()) or "account check failed"
        self.ctx.operator.latch(f"needs human: {reason}")
        self.ctx.notify("needs_human", reason, State.OFF.value)
