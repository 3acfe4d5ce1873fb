"""The default notifier: one log line per notice, so the log alone tells the story."""

from __future__ import annotations

from collections.abc import Callable

from loguru import logger

from node.plugins.notifiers.base import Notice

__all__ = ["LogNotifier"]


class LogNotifier:
    name = "log"

    async def notify(self, notice: Notice) -> None:
        try:
            level = "WARNING" if notice.is_problem else "INFO"
            details = " ".join(f"{key}={value}" for key, value in sorted(notice.details.items()))
            logger.log(
                level,
                "notice {} in {}: {}{}",
                notice.kind,
                notice.state,
                notice.message,
                f" ({details})" if details else "",
            )
        except Exception as exc:  # a broken log sink must not take the caller down
            logger.opt(exception=exc).debug("log notifier failed")

    async def run(self, status: Callable[[], str]) -> None:
        return None

    async def aclose(self) -> None:
        return None
