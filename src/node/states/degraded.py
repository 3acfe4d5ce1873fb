"""DEGRADED: socket up but the gateway is not trustworthy; orders blocked."""

from __future__ import annotations

import anyio

from node.events import Event, Trigger
from node.states.context import StateContext


async def run(ctx: StateContext, event: Event) -> None:
    visit = event.visit
    ctx.notify("entered_degraded", event.reason, "DEGRADED")
    async with anyio.create_task_group() as tg:
        tg.start_soon(ctx.broker.run_heartbeat)

        async def grace() -> None:
            await ctx.clock.sleep(ctx.settings.CONNECTIVITY_GRACE)
            ctx.post(
                Event(
                    Trigger.GRACE_EXPIRED,
                    f"not recovered within {ctx.settings.CONNECTIVITY_GRACE:g} s",
                    visit,
                )
            )

        tg.start_soon(grace)
        await ctx.broker.wait_healthy()
        summary = ctx.broker.sync_summary()
        ctx.post(Event(Trigger.RECOVERED, f"gateway answers again; {summary.describe()}", visit))
        await anyio.sleep_forever()
