"""STARTING_GATEWAY: launch the gateway and wait for the API handshake."""

from __future__ import annotations

import anyio
from loguru import logger

from node.broker import BrokerError
from node.events import Event, Trigger
from node.plugins.launchers.base import LaunchError
from node.states.context import StateContext

RETRY_EVERY = 2.0  # seconds between connect attempts (DESIGN.md §3)


async def run(ctx: StateContext, event: Event) -> None:
    visit = event.visit
    settings = ctx.settings
    try:
        async with ctx.gateway_lock:
            ctx.launcher.check_config()
            holder = await anyio.to_thread.run_sync(ctx.launcher.port_holder)
            if holder is not None:
                raise LaunchError(
                    f"port {ctx.launcher.endpoint.port} is already held by {holder}, "
                    "which this node did not start; stop it or change the gateway port"
                )
            await ctx.launcher.start()
    except LaunchError as exc:  # a LoginFailure too: every failed start counts the same
        ctx.post(Event(Trigger.START_FAILED, str(exc), visit))
        return

    async with anyio.create_task_group() as tg:

        async def deadline() -> None:
            await ctx.clock.sleep(settings.GATEWAY_START_TIMEOUT)
            ctx.post(Event(Trigger.START_FAILED,
                           f"the gateway API was not ready within "
                           f"{settings.GATEWAY_START_TIMEOUT:g} s", visit))  # fmt: skip
            tg.cancel_scope.cancel()

        async def exited() -> None:
            try:
                code = await ctx.launcher.wait_exited()
            except LaunchError as exc:  # LoginFailure: the launcher read why it exited
                reason = str(exc)
            else:
                reason = f"the gateway process exited (code {code}) before the API was up"
            ctx.post(Event(Trigger.START_FAILED, reason, visit))
            tg.cancel_scope.cancel()

        async def connect() -> None:
            endpoint = ctx.launcher.endpoint
            attempt = 0
            while True:
                attempt += 1
                try:
                    info = await ctx.broker.connect(
                        endpoint.host, endpoint.port, settings.CONNECT_ATTEMPT_TIMEOUT
                    )
                except BrokerError as exc:
                    logger.info("connect attempt {} failed: {}; retrying in {:g} s",
                                attempt, exc, RETRY_EVERY)  # fmt: skip
                    await ctx.clock.sleep(RETRY_EVERY)
                    continue
                ctx.post(Event(Trigger.CONNECTED,
                               f"API handshake done (server version {info.server_version})",
                               visit))  # fmt: skip
                tg.cancel_scope.cancel()
                return

        tg.start_soon(deadline)
        tg.start_soon(exited)
        tg.start_soon(connect)
