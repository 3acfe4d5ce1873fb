"""CONNECTED: socket up and synced; check the account, reconcile, then serve."""

from __future__ import annotations

import anyio

from node.broker import BrokerError
from node.events import Event, Trigger
from node.states.context import StateContext


async def run(ctx: StateContext, event: Event) -> None:
    visit = event.visit
    # LOGIN_FAILURE_LIMIT counts failed starts that never reached CONNECTED.
    ctx.consecutive_start_failures = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(ctx.broker.run_heartbeat)

        async def deadline() -> None:
            await ctx.clock.sleep(ctx.settings.RECONCILE_TIMEOUT)
            ctx.post(Event(Trigger.RECONCILE_FAILED,
                           f"reconcile did not finish within {ctx.settings.RECONCILE_TIMEOUT:g} s",
                           visit))  # fmt: skip

        tg.start_soon(deadline)
        try:
            synced = ctx.broker.sync_summary()
            reconciled = await ctx.reconcile()
        except BrokerError as exc:
            ctx.post(Event(Trigger.RECONCILE_FAILED, str(exc), visit))
        else:
            # The account check is the transition's guard; the machine reads it from
            # the broker's connection info.
            ctx.post(Event(Trigger.RECONCILED, f"{synced.describe()}; {reconciled}", visit))
        await anyio.sleep_forever()  # the heartbeat runs until the state is left
