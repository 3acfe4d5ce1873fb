"""The ``external`` launcher: attach only. Someone else runs the gateway; the node never starts
or stops it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio

from node.plugins.launchers.base import GatewayEndpoint


class ExternalLauncher:
    name = "external"
    simulated = False

    def __init__(self, endpoint: GatewayEndpoint) -> None:
        self.endpoint = endpoint

    @property
    def pid(self) -> int | None:
        return None

    def running(self) -> AbstractAsyncContextManager[object]:
        return self._running()

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[object]:
        yield self

    async def start(self) -> None:
        """Nothing to launch: the gateway is someone else's."""

    async def wait_exited(self) -> int | None:
        await anyio.sleep_forever()
        return None  # pragma: no cover - never reached

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 - the contract
        """Nothing to stop: the gateway is someone else's."""

    def check_config(self) -> None:
        """Nothing to check before attaching; the handshake tells whether the gateway is there."""

    def port_holder(self) -> str | None:
        """Always None: a listener on the port is the gateway we attach to, not a squatter."""
        return None
