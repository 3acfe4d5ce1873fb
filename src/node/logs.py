"""Log set-up: one line per event on stderr and in the log folder, as text or JSON lines."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

TEXT_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}"
LOG_FILE = "api.log"  # the seed deployment guide's name


class _ToLoguru(logging.Handler):
    """Libraries (ib_async, hypercorn) log through stdlib logging; keep one stream of lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(
            level, "{}: {}", record.name, record.getMessage()
        )


@dataclass(frozen=True)
class LogFolder:
    """Where the log file was meant to go and where it went (None: console only)."""

    wanted: Path | None = None
    used: Path | None = None

    @property
    def fell_back(self) -> bool:
        return self.wanted is not None and self.used != self.wanted


# Logging is configured once per process, like loguru's own logger; /v1/health reports it.
_folder = LogFolder()


def log_folder() -> LogFolder:
    return _folder


def configure_logging(
    level: str = "INFO",
    fmt: str = "text",
    log_dir: Path | None = None,
    fallback_dir: Path | None = None,
    retention_days: int = 30,
) -> Path | None:
    """Console always; the log folder when given. Returns the folder actually used.

    If the folder cannot be written (a sync client offline, a removed drive), the
    fallback folder is used and a warning says so.
    """
    logger.remove()
    serialize = fmt == "json"
    text_format = TEXT_FORMAT if not serialize else "{message}"
    logger.add(sys.stderr, level=level, format=text_format, serialize=serialize, colorize=False)
    # Library chatter below WARNING (httpx logs whole URLs at INFO) stays out.
    logging.basicConfig(handlers=[_ToLoguru()], level=logging.WARNING, force=True)
    global _folder
    used: Path | None = None
    for folder in (log_dir, fallback_dir):
        if folder is None:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            logger.add(folder / LOG_FILE, level=level, format=text_format, serialize=serialize,
                       rotation="00:00", retention=f"{retention_days} days", encoding="utf-8",
                       enqueue=False)  # fmt: skip
        except OSError as exc:
            logger.warning("cannot write logs to {} ({}); trying the fallback folder", folder, exc)
            continue
        used = folder
        break
    _folder = LogFolder(log_dir, used)
    return used
