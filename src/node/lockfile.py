"""One daemon per STATE_DIR: an OS file lock, which the OS drops when the holder dies.

A PID file goes stale after a kill -9; a lock held through an open file cannot: the kernel
releases it with the holder's last descriptor. POSIX uses ``flock``; Windows ``msvcrt.locking``
on one byte far past the file's content (Windows locks are mandatory, so the pid written at the
start stays readable by the process that is refused). The pid in the file is for the message
only; the lock is the truth. The descriptor is not inherited by children (PEP 446), so a
gateway child never keeps the lock alive.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import TracebackType

LOCK_NAME = "daemon.lock"
_WIN_LOCK_OFFSET = 1 << 30  # the locked byte, well past the pid text


class AlreadyRunning(Exception):
    def __init__(self, pid: int | None, path: Path) -> None:
        self.pid = pid
        self.path = path
        holder = f"pid {pid}" if pid is not None else "another process"
        super().__init__(
            f"another ibkr-node daemon ({holder}) holds STATE_DIR {path.parent} "
            f"(lock {path}); stop it first (`ibkr-node ctl shutdown`), or give this one "
            "another STATE_DIR"
        )


class InstanceLock:
    """``with InstanceLock(state_dir):`` or ``acquire()`` / ``release()``."""

    def __init__(self, state_dir: Path, name: str = LOCK_NAME) -> None:
        self.path = Path(state_dir) / name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except OSError:
            pid = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunning(pid, self.path) from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            _unlock(fd)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing drops the lock in any case

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode(errors="replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


if sys.platform == "win32":  # pragma: no cover - untestable here (the suite runs on Linux)
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # OSError when another process holds it

    def _unlock(fd: int) -> None:
        os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError when held elsewhere

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
