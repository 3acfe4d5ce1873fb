"""Log set-up: one line per event on stderr, as text or JSON lines."""

from __future__ import annotations

import sys

from loguru import logger

TEXT_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}"


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    logger.remove()
    if fmt == "json":
        logger.add(sys.stderr, level=level, serialize=True)
    else:
        logger.add(sys.stderr, level=level, format=TEXT_FORMAT, colorize=False)
