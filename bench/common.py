"""What the benchmarks share: a time budget and free loopback ports."""

from __future__ import annotations

import socket
import time

HOST = "127.0.0.1"


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
