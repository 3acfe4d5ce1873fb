"""API keys: from API_KEY or the key file (current key first, previous second), compared
in constant time. The file is re-read when it changes (checked at most once a second), so a
rotation needs no restart."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

from loguru import logger

RECHECK_EVERY = 1.0


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyRing:
    def __init__(self, fixed: str | None, path: Path | None) -> None:
        self._fixed = [digest(fixed)] if fixed else []
        self._path = path
        self._file: list[bytes] = []
        self._stamp: tuple[float, int] | None = None
        self._checked = 0.0
        self._reload()

    @staticmethod
    def read_file(path: Path) -> list[str]:
        """The keys in a key file: one per line, current first; blank lines ignored."""
        lines = path.read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()][:2]

    def _reload(self) -> None:
        self._checked = time.monotonic()
        if self._path is None:
            return
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            if self._file:
                logger.warning("API key file {} disappeared; only API_KEY is accepted now",
                               self._path)  # fmt: skip
            self._file, self._stamp = [], None
            return
        stamp = (stat.st_mtime, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            self._file = [digest(k) for k in self.read_file(self._path)]
        except OSError as exc:
            logger.warning("API key file {} unreadable: {}", self._path, exc)
            return
        if self._stamp is not None:
            logger.info("API key file {} changed: {} key(s) loaded", self._path, len(self._file))
        self._stamp = stamp

    @property
    def empty(self) -> bool:
        return not (self._fixed or self._file)

    def accepts(self, presented: str | None) -> bool:
        if time.monotonic() - self._checked >= RECHECK_EVERY:
            self._reload()
        if not presented:
            return False
        candidate = digest(presented)
        # Compare against every key so the time taken does not tell which one matched.
        matches = [hmac.compare_digest(candidate, known) for known in self._fixed + self._file]
        return any(matches)
