"""IB Gateway simulator: a TWS API socket server over a paper account and a price model."""

from node.sim.control import send_command
from node.sim.server import SimConfig, Simulator

__all__ = ["SimConfig", "Simulator", "send_command"]
