"""Files rewritten atomically: a kill -9 at any instant leaves the old or the new content."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str, *, mode: int | None = None) -> None:
    """Temp file in the same folder, fsync, rename over the old file.

    ``mode`` (POSIX): the file's permissions, set on the temp file before a byte is written,
    so the content is never readable with wider ones (mkstemp creates it 0600; the rename
    keeps the temp file's mode). Ignored on Windows, where ACLs decide.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None and sys.platform != "win32":
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, separators=(",", ":")))
