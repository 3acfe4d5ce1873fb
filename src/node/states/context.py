"""What a state's work may use: the daemon's parts, handed in once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import anyio
from loguru import logger

from node.backoff import BackoffSchedule, RestartBudget
from node.broker import Broker
from node.clock import Clock
from node.config import Settings
from node.events import Event
from node.latches import OperatorState
from node.plugins.launchers.base import Launcher


@dataclass
class StateContext:
    settings: Settings
    clock: Clock
    broker: Broker
    launcher: Launcher
    budget: RestartBudget
    schedule: BackoffSchedule
    operator: OperatorState
    post: Callable[[Event], None]
    notify: Callable[[str, str, str], None]  # (kind, message, state)
    # CONNECTED and DEGRADED's recovery: carry out a pending kill, then reconcile orders;
    # returns a summary.
    reconcile: Callable[[], Awaitable[str]]
    # OFF: what to do with the node's working orders before the gateway stops.
    before_stop: Callable[[Event], Awaitable[None]]
    # The gateway is started and stopped by one state's work at a time.
    gateway_lock: anyio.Lock = field(default_factory=anyio.Lock)
    consecutive_start_failures: int = 0
    last_state: str = "OFF"
    next_retry_at: datetime | None = None
    restarts_enabled: bool = True

    async def stop_gateway(self) -> None:
        """Disconnect, then stop the gateway process tidily (kill after GATEWAY_STOP_TIMEOUT).

        Shielded: a state change must not leave a gateway half-stopped.
        """
        with anyio.CancelScope(shield=True):
            async with self.gateway_lock:
                self.broker.disconnect()
                if self.launcher.pid is not None:
                    logger.info("stopping the gateway (pid {})", self.launcher.pid)
                await self.launcher.stop(self.settings.GATEWAY_STOP_TIMEOUT)
