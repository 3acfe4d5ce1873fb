"""Faults a test (in process) or an operator (through the control channel) can inject."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from loguru import logger

if TYPE_CHECKING:
    from node.sim.server import Simulator

NOTICES: dict[int, str] = {
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    2103: "Market data farm connection is broken:usfarm",
    2104: "Market data farm connection is OK:usfarm",
    2105: "HMDS data farm connection is broken:ushmds",
    2106: "HMDS data farm connection is OK:ushmds",
    2110: "Connectivity between Trader Workstation and server is broken. "
    "It will be restored automatically.",
    2157: "Sec-def data farm connection is broken:secdefnj",
    2158: "Sec-def data farm connection is OK:secdefnj",
}

DEFAULT_REJECT = (201, "Order rejected - reason:Simulated rejection")


class Faults:
    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self.silent = False
        self.handshake_stall = False
        self.latency = 0.0
        self.connectivity_lost = False  # between 1100 and 1101/1102
        self.market_farm_broken = False  # between 2103/2110 and 2104

    @property
    def streaming_paused(self) -> bool:
        return self.connectivity_lost or self.market_farm_broken

    def drop_all(self) -> int:
        """Close every client connection, as a gateway that lost its sockets would."""
        count = self._sim.drop_connections()
        logger.warning("fault: dropped {} connection(s)", count)
        return count

    def set_silent(self, on: bool) -> None:
        """Keep the port open but answer nothing, on every connection, old and new."""
        self.silent = on
        logger.warning("fault: silent {}", "on" if on else "off")

    def set_handshake_stall(self, on: bool) -> None:
        """Accept new connections but never answer their handshake."""
        self.handshake_stall = on
        logger.warning("fault: handshake stall {}", "on" if on else "off")

    def set_latency(self, seconds: float) -> None:
        """Delay every outgoing message by ``seconds``."""
        if seconds < 0:
            raise ValueError("latency cannot be negative")
        self.latency = seconds
        logger.warning("fault: latency {:.3f}s", seconds)

    def reject_next(self, code: int = DEFAULT_REJECT[0], text: str = DEFAULT_REJECT[1]) -> None:
        """Refuse the next order placed by any client with this error."""
        self._sim.engine.reject_next(code, text)
        logger.warning("fault: the next order is rejected with {} {!r}", code, text)

    def send_notice(self, code: int) -> int:
        """Broadcast a connectivity or farm notice (error with id -1) and act on it."""
        if code not in NOTICES:
            raise ValueError(f"unknown notice {code}; known: {sorted(NOTICES)}")
        if code == 1100:
            self.connectivity_lost = True
        elif code in (1101, 1102):
            self.connectivity_lost = False
            self.market_farm_broken = False
            if code == 1101:
                self._sim.drop_subscriptions()
        elif code in (2103, 2110):
            self.market_farm_broken = True
        elif code == 2104:
            self.market_farm_broken = False
        count = self._sim.broadcast_error(-1, code, NOTICES[code])
        logger.warning("fault: notice {} sent to {} client(s)", code, count)
        return count

    def exit_process(self, code: int = 1) -> None:
        """Die at once, as a crashed gateway does: no goodbye on any socket."""
        logger.warning("fault: exiting the process with code {}", code)
        os._exit(code)
