"""The daemon: one task group holding the event loop, the clock, the API server and notifiers.

Everything that happens is an Event on one queue; one task feeds the queue to the
lifecycle machine. The API reads the status document and posts commands as events.
"""

from __future__ import annotations

import asyncio
import math
import signal
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from loguru import logger

from node.api.metrics import NodeMetrics
from node.audit import KIND_TRANSITION, AuditStore
from node.backoff import BackoffSchedule, RestartBudget
from node.broker import Broker
from node.clock import Clock, RunWindow, utc_text
from node.config import Settings
from node.events import Event, Trigger
from node.latches import OperatorState
from node.machine import Lifecycle, State, TransitionRecord
from node.orders import OrderService
from node.plugins.launchers.base import Launcher
from node.plugins.notifiers.base import Notice, Notifier
from node.states.context import StateContext
from node.trading import Trading

TIME_JUMP = 5.0  # seconds between expected and actual wake-up that mean the clock jumped
SHUTDOWN_DRAIN_TIMEOUT = 10.0  # seconds for the last reports and journal rows at shutdown


class Daemon:
    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        launcher: Launcher,
        window: RunWindow,
        notifiers: Sequence[Notifier] = (),
        *,
        store: AuditStore,
        armed_by_demo: bool = False,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.launcher = launcher
        self.window = window
        self.notifiers = list(notifiers)
        self.armed_by_demo = armed_by_demo
        state_dir = settings.STATE_DIR
        self._send: MemoryObjectSendStream[Event]
        self._receive: MemoryObjectReceiveStream[Event]
        self._send, self._receive = anyio.create_memory_object_stream[Event](math.inf)
        self.operator = OperatorState(state_dir / "operator_state.json")
        self.budget = RestartBudget(
            state_dir / "restart_state.json", settings.MAX_RESTARTS_PER_HOUR
        )
        self.broker = Broker(
            clock,
            self.post,
            client_id=settings.IB_CLIENT_ID,
            heartbeat_interval=settings.HEARTBEAT_INTERVAL,
            heartbeat_timeout=settings.HEARTBEAT_TIMEOUT,
            heartbeat_misses=settings.HEARTBEAT_MISSES,
        )
        self.ctx = StateContext(
            settings=settings,
            clock=clock,
            broker=self.broker,
            launcher=launcher,
            budget=self.budget,
            schedule=BackoffSchedule(settings.backoff_delays, settings.BACKOFF_JITTER),
            operator=self.operator,
            post=self.post,
            notify=self.notify,
            reconcile=self._reconcile,
            before_stop=self._before_stop,
        )
        self.metrics = NodeMetrics(lambda: self.state, lambda: self.broker.heartbeat.latency_ms)
        self.trading = Trading(
            settings, clock, store, self.broker, self.operator, self.metrics,
            lambda: self.state, self.retry_after, armed_by_demo=armed_by_demo,
            alert=lambda kind, message: self.notify(kind, message, self.state),
        )  # fmt: skip
        self.lifecycle: Lifecycle | None = None
        self._tg: TaskGroup | None = None
        self.stopped = anyio.Event()  # set once the daemon has shut down
        self.shutting_down = False
        self.events_handled = 0
        self._window_open = False
        self._notices: list[MemoryObjectSendStream[Notice]] = []

    # ------------------------------------------------------------------ inputs

    def post(self, event: Event) -> None:
        self._send.send_nowait(event)

    def notify(self, kind: str, message: str, state: str) -> None:
        notice = Notice(kind=kind, message=message, state=state, at=self.clock.now())
        for queue in self._notices:
            queue.send_nowait(notice)

    def command(self, action: str, *, force: bool = False) -> str:
        """An operator command (ctl / admin route): persist the decision, post the event."""
        now = self.clock.now()
        if self.shutting_down:
            return "ignored: the daemon is shutting down"
        if action == "start":
            self.operator.set_stopped(False)
            done = "start requested"
            if force:
                until = now + timedelta(hours=self.settings.FORCE_MAX_HOURS)
                self.operator.force(until)
                done = f"start forced until {utc_text(until)}"
            self.post(Event(Trigger.OPERATOR_START, done))
            blocked = self._start_blocked()
            return f"not started: {blocked}" if blocked else done
        if action == "stop":
            self.operator.set_stopped(True)
            self.post(Event(Trigger.OPERATOR_STOP, "operator stop"))
            return "stopped until `ibkr-node ctl start`"
        if action == "release":
            self.operator.force(None)
            self._evaluate_window(now, announce=True)
            return "force released"
        if action == "reset-backoff":
            self.budget.reset()
            if self.lifecycle is not None and self.state == State.BACKOFF:
                # Retry now rather than at the end of the delay or budget wait.
                self.post(Event(Trigger.BACKOFF_ELAPSED, "the operator reset the backoff",
                                self.lifecycle.visit))  # fmt: skip
                return "restart budget and backoff delays reset; restarting now"
            return "restart budget and backoff delays reset"
        if action == "clear-latch":
            self.operator.latch(None)
            self.ctx.consecutive_start_failures = 0
            self.budget.set_attempt(0)
            self.post(Event(Trigger.LATCH_CLEARED, "latch cleared by the operator"))
            return "latch cleared"
        if action == "clear-kill":
            self.trading.journal_later("kill_switch", {"engaged": False})
            self.operator.clear_kill()
            return "kill switch cleared"
        if action == "shutdown":
            self.shutting_down = True
            self.post(Event(Trigger.SHUTDOWN, "operator shutdown"))
            return "shutting down"
        raise ValueError(f"unknown command {action!r}")

    def _start_blocked(self) -> str | None:
        """Why a start would not happen now (a latch, or the window), else None."""
        if self.lifecycle is None or self.state != State.OFF:
            return None
        reason = self.lifecycle.blocked_reason()
        return None if reason == "no reason" else reason

    # ------------------------------------------------------------------ status

    @property
    def state(self) -> str:
        return self.lifecycle.current if self.lifecycle is not None else State.OFF.value

    def state_document(self) -> dict[str, Any]:
        s = self.settings
        now = self.clock.now()
        lc = self.lifecycle
        info = self.broker.info
        heartbeat = self.broker.heartbeat
        next_change = self.window.next_change(now)
        used, attempt = self.budget.usage(now)  # one read of restart_state.json
        return {
            "state": self.state,
            "since": utc_text(lc.since if lc else now),
            "reason": lc.reason if lc else "starting",
            "latched": self.operator.latched,
            "simulated": self.launcher.simulated,
            "trading_mode": s.TRADING_MODE,
            "window": {
                "open": self.window.is_open(now),
                "forced": self.operator.forced(now),
                "next_change": next_change.isoformat() if next_change else None,
                "timezone": s.RUN_WINDOW_TIMEZONE,
            },
            "gateway": {
                "launcher": self.launcher.name,
                "host": self.launcher.endpoint.host,
                "port": self.launcher.endpoint.port,
                "pid": self.launcher.pid,
                "server_version": info.server_version if info else None,
                "account": info.account if info else None,
                "connected_since": utc_text(info.connected_since) if info else None,
                "market_data": self.broker.market_data if info else None,
            },
            "heartbeat": {
                "last_ok": utc_text(heartbeat.last_ok),
                "latency_ms": round(heartbeat.latency_ms, 2) if heartbeat.latency_ms else None,
                "misses": heartbeat.misses,
            },
            "restarts": {
                "used": used,
                "limit": s.MAX_RESTARTS_PER_HOUR,
                "window_s": 3600,
                "next_retry_at": utc_text(self.ctx.next_retry_at)
                if self.state == State.BACKOFF
                else None,
                "attempt": attempt,
            },
            "gates": self.trading.gates_document(),
            "transitions": [t.as_dict() for t in reversed(lc.transitions)] if lc else [],
        }

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:  # fmt: skip
        """Run until shutdown; ``task_status.started()`` once the machine takes events."""
        async with self.launcher.running(), anyio.create_task_group() as tg:
            self._tg = tg
            self.lifecycle = Lifecycle(self.ctx, tg, lambda: self._window_open,
                                       self._journal_transition)  # fmt: skip
            tg.start_soon(self.trading.run)
            self.trading.journal_later("startup_config", self.settings.redacted())
            for notifier in self.notifiers:
                tg.start_soon(notifier.run, lambda: self.state)
                # One queue per notifier: notices reach each one in the order they happened.
                send, receive = anyio.create_memory_object_stream[Notice](math.inf)
                self._notices.append(send)
                tg.start_soon(self._deliver, notifier, receive)
            self._evaluate_window(self.clock.now(), announce=True)
            tg.start_soon(self._watch_window)
            task_status.started()
            await self._consume()
            await self._drain(tg)
            tg.cancel_scope.cancel()
        for notifier in self.notifiers:
            with anyio.CancelScope(shield=True):
                await notifier.aclose()
        await self.trading.close()
        self.stopped.set()
        logger.info("daemon stopped")

    async def _drain(self, tg: anyio.abc.TaskGroup) -> None:
        """What IB and the lifecycle said last reaches the audit trail before the tasks that
        write it stop; bounded, so a store that no longer answers cannot hold the shutdown."""
        drained = anyio.Event()

        async def drain() -> None:
            await self.trading.drain()
            drained.set()

        tg.start_soon(drain)
        if not await self.clock.wait(drained, SHUTDOWN_DRAIN_TIMEOUT):
            logger.error("shutdown: the audit trail's last rows were not all written within "
                         "{:g} s; the log has them", SHUTDOWN_DRAIN_TIMEOUT)  # fmt: skip

    async def _deliver(
        self, notifier: Notifier, notices: MemoryObjectReceiveStream[Notice]
    ) -> None:
        async with notices:
            async for notice in notices:
                await notifier.notify(notice)

    async def _consume(self) -> None:
        assert self.lifecycle is not None
        async for event in self._receive:
            if event.trigger is Trigger.SHUTDOWN:
                self.shutting_down = True
                await self._shutdown(event)
                return
            await self.lifecycle.handle(event)
            self.events_handled += 1

    async def _shutdown(self, event: Event) -> None:
        assert self.lifecycle is not None
        logger.info("shutting down: {}", event.reason)
        self.ctx.restarts_enabled = False
        await self.lifecycle.handle(event)
        await self.ctx.stop_gateway()

    def _journal_transition(self, record: TransitionRecord) -> None:
        self.metrics.transitions.labels(record.source, record.dest, record.trigger).inc()
        if record.dest == State.CONNECTED:
            self.metrics.reconnects.inc()
        self.trading.journal_later(KIND_TRANSITION, record.as_dict())

    # ------------------------------------------------------------------ the trading side

    @property
    def orders(self) -> OrderService:
        return self.trading.orders

    @property
    def store(self) -> AuditStore:
        return self.trading.store

    def retry_after(self) -> float:
        """Seconds a refused client should wait: until the next restart try, else 5."""
        if self.state == State.BACKOFF and self.ctx.next_retry_at is not None:
            return max(1.0, (self.ctx.next_retry_at - self.clock.now()).total_seconds())
        return 5.0

    async def kill(self, scope: str, request_id: str) -> dict[str, Any]:
        return await self.trading.kill(scope, request_id)

    @property
    def trading_mode(self) -> str:
        return self.settings.TRADING_MODE

    def reads_as_of(self) -> datetime | None:
        return self.broker.heartbeat.last_ok

    async def _reconcile(self) -> str:
        await self.trading.carry_out_pending_kill()
        return await self.trading.orders.reconcile()

    async def _before_stop(self, event: Event) -> None:
        if (
            event.trigger is Trigger.WINDOW_CLOSED
            and self.settings.WINDOW_CLOSE_ORDERS == "cancel_all"
            and self.broker.connected
        ):
            results = await self.trading.orders.cancel_open("window-close")
            logger.info("window closed: {} open order(s) canceled (WINDOW_CLOSE_ORDERS="
                        "cancel_all)", len(results))  # fmt: skip

    # ------------------------------------------------------------------ the window

    def _window_allows(self, now: datetime) -> bool:
        return self.window.is_open(now) or self.operator.forced(now)

    def _evaluate_window(self, now: datetime, *, announce: bool = False) -> None:
        forced_until = self.operator.forced_until
        if forced_until is not None and now >= forced_until:
            logger.info("the forced start expired at {}", utc_text(forced_until))
            self.operator.force(None)
        is_open = self._window_allows(now)
        if is_open == self._window_open and not announce:
            return
        self._window_open = is_open
        if is_open:
            self.post(Event(Trigger.WINDOW_OPENED, f"run window open ({self.window.describe()})"))
        else:
            self.post(Event(Trigger.WINDOW_CLOSED,
                            f"run window closed ({self.window.describe()})"))  # fmt: skip

    def _next_wake(self, now: datetime) -> datetime:
        candidates = [now + timedelta(seconds=self.settings.CLOCK_TICK)]
        change = self.window.next_change(now)
        if change is not None:
            candidates.append(change)
        forced_until = self.operator.forced_until
        if forced_until is not None and forced_until > now:
            candidates.append(forced_until)
        return min(candidates)

    async def _watch_window(self) -> None:
        """Wake at the next window change, force expiry or CLOCK_TICK; notice time jumps."""
        while True:
            now = self.clock.now()
            expected = self._next_wake(now)
            await self.clock.sleep_until(expected)
            woke = self.clock.now()
            drift = abs((woke - expected).total_seconds())
            if drift > TIME_JUMP:
                logger.warning("the clock jumped {:.0f} s (sleep or resume?); re-checking the "
                               "window and the gateway", drift)  # fmt: skip
                self.broker.probe_now()
            self._evaluate_window(woke)


def install_break_handler(daemon: Daemon) -> None:
    """Windows: CTRL_BREAK (a parent's GenerateConsoleCtrlEvent, or Ctrl+Break in the console)
    shuts down tidily. Task Scheduler's End and `taskkill /F` terminate the process instead: the
    Job Object then ends the gateway, and `ibkr-node ctl shutdown` is the tidy way.

    The handler runs on the event loop's own thread between two steps of the loop, so it
    must not wait for the loop (anyio.from_thread would deadlock): it only schedules.
    """
    if sys.platform != "win32":
        return
    loop = asyncio.get_running_loop()

    def on_break(signum: int, frame: object) -> None:  # pragma: no cover - Windows only
        loop.call_soon_threadsafe(daemon.post, Event(Trigger.SHUTDOWN, "CTRL_BREAK received"))

    signal.signal(signal.SIGBREAK, on_break)  # type: ignore[attr-defined,unused-ignore]
