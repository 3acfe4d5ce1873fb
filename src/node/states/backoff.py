"""BACKOFF: wait before a restart, within the restart budget."""

from __future__ import annotations

from datetime import timedelta

from loguru import logger

from node.events import Event, Trigger
from node.states.context import StateContext


async def run(ctx: StateContext, event: Event) -> None:
    ctx.notify("entered_backoff", event.reason, "BACKOFF")
    await ctx.stop_gateway()
    delay = ctx.schedule.delay(ctx.budget.attempt)
    ctx.next_retry_at = ctx.clock.now() + timedelta(seconds=delay)
    logger.info("restarting the gateway in {:.1f} s (attempt {})", delay, ctx.budget.attempt + 1)
    await ctx.clock.sleep(delay)
    told = False
    while not ctx.budget.available(ctx.clock.now()):
        slot = ctx.budget.next_slot_at(ctx.clock.now())
        if slot is None:
            break
        ctx.next_retry_at = slot
        if not told:
            message = (
                f"restart budget spent ({ctx.budget.used(ctx.clock.now())} restarts in the "
                f"last hour); next try at {slot.isoformat()}; `ibkr-node ctl reset-backoff` "
                "retries now"
            )
            logger.warning(message)
            ctx.notify("budget_exhausted", message, "BACKOFF")
            told = True
        await ctx.clock.sleep_until(slot)
    ctx.post(Event(Trigger.BACKOFF_ELAPSED, f"waited {delay:.1f} s", event.visit))
