"""JSON POST of every notice to `NOTIFY_WEBHOOK_URL`, with a few spaced retries."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from loguru import logger

from node.clock import Clock, RealClock
from node.plugins.notifiers.base import Notice, redact_url, scrub_url

__all__ = ["WebhookNotifier"]

# A receiver that answers these may accept the same notice a moment later; any other 4xx means
# it never will, so retrying would only delay the next notice.
_RETRYABLE_STATUS = frozenset({408, 425, 429})


class WebhookNotifier:
    """POST each notice as JSON; `retries` further attempts after a failed first one.

    The waits between attempts (`retry_delay`, doubling) are Clock sleeps; each attempt is bounded
    by `timeout` seconds of real time. Only the URL's scheme, host and port are ever logged.
    """

    name = "webhook"

    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient | None = None,
        retries: int = 3,
        clock: Clock | None = None,
        *,
        retry_delay: float = 1.0,
        timeout: float = 5.0,
    ) -> None:
        if retries < 0:
            raise ValueError(f"webhook retries must be >= 0, got {retries}")
        self.url = url
        self.retries = retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self._clock: Clock = clock if clock is not None else RealClock()
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()
        self._safe_url = redact_url(url)

    async def notify(self, notice: Notice) -> None:
        try:
            await self._deliver(notice)
        except Exception as exc:  # notify must never raise; anything unforeseen is logged
            logger.error(
                "webhook {}: notice {} not delivered ({})",
                self._safe_url,
                notice.kind,
                self._scrub(f"{type(exc).__name__}: {exc}"),
            )

    async def _deliver(self, notice: Notice) -> None:
        payload = notice.to_json()
        attempts = self.retries + 1
        problem = ""
        for attempt in range(attempts):
            if attempt:
                await self._clock.sleep(self.retry_delay * 2 ** (attempt - 1))
            try:
                response = await self._client.post(self.url, json=payload, timeout=self.timeout)
            except httpx.HTTPError as exc:
                problem = self._scrub(f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))
            else:
                if response.is_success:
                    return
                problem = f"HTTP {response.status_code}"
                if response.is_client_error and response.status_code not in _RETRYABLE_STATUS:
                    break
            logger.debug(
                "webhook {}: attempt {}/{} for {} failed: {}",
                self._safe_url,
                attempt + 1,
                attempts,
                notice.kind,
                problem,
            )
        logger.warning(
            "webhook {}: notice {} not delivered ({}); giving up",
            self._safe_url,
            notice.kind,
            problem,
        )

    def _scrub(self, text: str) -> str:
        # httpx errors sometimes quote the request URL, token and all.
        return scrub_url(text, self.url)

    async def run(self, status: Callable[[], str]) -> None:
        return None

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
