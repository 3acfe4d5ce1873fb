"""What the benchmarks share: a time budget, free loopback ports, what was measured where."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent


class OutOfTime(Exception):
    """The run's budget is spent."""


class Budget:
    def __init__(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.hit = False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def cap(self, seconds: float) -> float:
        left = self.remaining()
        if left <= 0:
            self.hit = True
            raise OutOfTime
        return min(seconds, left)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


PERFORMANCE_DOC = ROOT / "docs" / "PERFORMANCE.md"


def write_section(begin: str, end: str, block: str) -> None:
    """Replace the text between the markers in docs/PERFORMANCE.md (append it if absent)."""
    text = f"{begin}\n{block}\n{end}"
    doc = PERFORMANCE_DOC.read_text() if PERFORMANCE_DOC.exists() else "# Performance\n"
    if begin in doc and end in doc:
        before, rest = doc.split(begin, 1)
        PERFORMANCE_DOC.write_text(before + text + rest.split(end, 1)[1])
        return
    PERFORMANCE_DOC.parent.mkdir(parents=True, exist_ok=True)
    PERFORMANCE_DOC.write_text(doc.rstrip() + "\n\n" + text + "\n")


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held together while chosen, then released)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()  # fmt: skip

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "src")
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"
    return f"commit {head}" + (" with uncommitted changes in src/" if dirty else "")


def load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"
