"""SERVING: healthy; the order gate may open."""

from __future__ import annotations

import anyio
from loguru import logger

from node.events import Event, Trigger
from node.states.context import StateContext


async def run(ctx: StateContext, event: Event) -> None:
    if ctx.last_state in ("DEGRADED", "BACKOFF") or ctx.budget.attempt:
        ctx.notify("recovered", f"serving again: {event.reason}", "SERVING")
    ctx.next_retry_at = None
    # A loss reported while CONNECTED had no transition there; act on it now.
    if ctx.broker.connectivity_lost:
        ctx.post(Event(Trigger.CONNECTIVITY_LOST, "IB connectivity lost (1100)", event.visit))
    elif ctx.broker.heartbeat_lost:
        ctx.post(Event(Trigger.HEARTBEAT_LOST, "heartbeats missed", event.visit))
    async with anyio.create_task_group() as tg:
        tg.start_soon(ctx.broker.run_heartbeat)
        # Long enough in SERVING: the next failure starts the delays from the beginning.
        await ctx.clock.sleep(ctx.settings.BACKOFF_RESET_AFTER)
        if ctx.budget.attempt:
            logger.info("serving for {:g} s: backoff delays start over",
                        ctx.settings.BACKOFF_RESET_AFTER)  # fmt: skip
            ctx.budget.set_attempt(0)
