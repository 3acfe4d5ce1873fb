"""Running the simulator as a process: announce the ports, stop on a signal or a closed stdin."""

from __future__ import annotations

import contextlib
import sys
import threading

import anyio
from loguru import logger

from node.signals import on_stop_signals
from node.sim.server import SimConfig, Simulator


async def serve(config: SimConfig, *, exit_with_parent: bool = False) -> None:
    """Serve until SIGINT/SIGTERM, or until stdin closes when ``exit_with_parent``."""
    sim = Simulator(config)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(on_stop_signals, lambda name: tg.cancel_scope.cancel())
            await tg.start(sim.run)
            # The announcement is the contract with whoever started us (tests, the sim
            # launcher): one line each, on stdout, flushed.
            print(f"listening on {config.host}:{sim.port}", flush=True)
            if sim.control_port is not None:
                print(f"control channel on 127.0.0.1:{sim.control_port}", flush=True)
            if exit_with_parent:
                _watch_parent(tg.cancel_scope)
    except BaseExceptionGroup as group:
        raise _sole_cause(group) from None
    logger.info("simulator stopped")


def _sole_cause(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside nested groups (a failed bind), else the group itself."""
    while len(group.exceptions) == 1:
        inner = group.exceptions[0]
        if not isinstance(inner, BaseExceptionGroup):
            return inner
        group = inner
    return group


def _watch_parent(scope: anyio.CancelScope) -> None:
    """Stop when stdin reaches EOF: the parent died or closed the pipe on purpose.

    A blocking read in a daemon thread works on every OS, where polling a pipe does not.
    """
    token = anyio.lowlevel.current_token()

    def wait_for_eof() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        logger.warning("stdin closed: the parent is gone; stopping")
        with contextlib.suppress(RuntimeError):  # the event loop already finished
            anyio.from_thread.run_sync(scope.cancel, token=token)

    threading.Thread(target=wait_for_eof, name="exit-with-parent", daemon=True).start()
