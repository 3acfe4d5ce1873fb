"""The dead-man's switch: a GET to `NOTIFY_PUSH_URL` every minute while SERVING.

An outside monitor (healthchecks, Uptime Kuma) alerts when the pings stop, which covers what no
notice can: a dead laptop, a hung daemon, a lost network. So the node stops pinging whenever it
is not SERVING, rather than reporting its state.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from loguru import logger

from node.clock import Clock, RealClock
from node.plugins.notifiers.base import Notice, redact_url, scrub_url

__all__ = ["SERVING", "PushNotifier"]

SERVING = "SERVING"


class PushNotifier:
    name = "push"

    def __init__(
        self,
        url: str,
        clock: Clock | None = None,
        interval: float = 60,
        client: httpx.AsyncClient | None = None,
        *,
        timeout: float = 5.0,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"push interval must be > 0 seconds, got {interval}")
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self._clock: Clock = clock if clock is not None else RealClock()
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()
        self._safe_url = redact_url(url)
        self._failing = False

    async def notify(self, notice: Notice) -> None:
        # The pings carry the news: their absence is the alert.
        return None

    async def run(self, status: Callable[[], str]) -> None:
        """Ping now and every `interval` s while `status()` is SERVING, until cancelled."""
        while True:
            try:
                serving = status() == SERVING
            except Exception as exc:  # a broken status source means "not known to serve"
                logger.error("push: reading the node status failed ({!r})", exc)
                serving = False
            if serving:
                await self.ping()
            await self._clock.sleep(self.interval)

    async def ping(self) -> bool:
        """One GET; failures are logged, loudly only on the first of a run of them."""
        try:
            response = await self._client.get(self.url, timeout=self.timeout)
        except httpx.HTTPError as exc:
            problem = scrub_url(f"{type(exc).__name__}: {exc}", self.url)
        except Exception as exc:
            # No traceback: loguru's diagnose mode would print the locals, URL token included.
            problem = f"unexpected {type(exc).__name__}"
        else:
            if response.is_success:
                if self._failing:
                    logger.info("push {}: ping delivered again", self._safe_url)
                self._failing = False
                return True
            problem = f"HTTP {response.status_code}"
        # One warning per outage; every failed minute at WARNING would bury the log.
        logger.log(
            "DEBUG" if self._failing else "WARNING",
            "push {}: ping failed ({})",
            self._safe_url,
            problem,
        )
        self._failing = True
        return False

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
