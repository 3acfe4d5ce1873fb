"""OFF: outside the window, stopped by the operator, or latched "needs human"."""

from __future__ import annotations

from node.events import Event
from node.states.context import StateContext


async def run(ctx: StateContext, event: Event) -> None:
    await ctx.before_stop(event)
    await ctx.stop_gateway()
