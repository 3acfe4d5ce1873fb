"""DEGRADED: socket up but the gateway is not trustworthy; orders blocked."""

from __future__ import annotations

import anyio
from loguru import logger

from node.broker import BrokerError
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
        # IB delivers no execution while it is unreachable (1100), nor re-sends one after
        # 1101/1102: what filled meanwhile is found only by reconciling, as after a reconnect.
        while True:
            await ctx.broker.wait_healthy()
            try:
                reconciled = await ctx.reconcile()
            except BrokerError as exc:
                # A retry could only repeat the request; the grace timer restarts the gateway.
                logger.warning("the gateway answers again but the reconcile failed ({}); "
                               "staying DEGRADED until the grace ends", exc)  # fmt: skip
                break
            if ctx.broker.healthy:  # else lost again while reconciling: wait once more
                ctx.post(Event(Trigger.RECOVERED, f"gateway answers again; {reconciled}", visit))
                break
        await anyio.sleep_forever()
