"""SIGINT and SIGTERM as a callback, for the daemon and the simulator alike."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus
from loguru import logger


async def on_stop_signals(
    stop: Callable[[str], None], *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Call ``stop(signal name)`` for every SIGINT or SIGTERM until cancelled.

    ``task_status.started()`` fires once the handlers are installed, so a caller that
    announces itself afterwards can never be killed by a signal nobody handles.
    """
    if sys.platform == "win32":  # pragma: no cover - Ctrl+C arrives as KeyboardInterrupt
        task_status.started()
        await anyio.sleep_forever()
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        task_status.started()
        async for signum in received:
            name = signal.Signals(signum).name
            logger.info("{} received: stopping", name)
            stop(name)
