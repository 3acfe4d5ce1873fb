"""The loopback control channel: inject faults and move prices in a running simulator.

One command per line, one JSON line back (``{"ok": true, ...}`` or ``{"ok": false,
"error": "..."}``). Commands are listed in docs/simulator.md and by ``help``.
"""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream
from loguru import logger

from node.sim.faults import DEFAULT_REJECT

if TYPE_CHECKING:
    from node.sim.server import Simulator

CONTROL_HOST = "127.0.0.1"  # never anything else: the channel has no authentication
MAX_LINE = 4096

HELP = {
    "status": "ports, account, connected clients and active faults",
    "drop": "close every client connection",
    "silent on|off": "keep the port open but answer nothing",
    "stall on|off": "accept new connections but never complete the handshake",
    "notice CODE": "send 1100, 1101, 1102, 2103-2106, 2110, 2157 or 2158 to every client",
    "reject [CODE [TEXT]]": "reject the next order (default 201 'Simulated rejection')",
    "latency SECONDS": "delay every outgoing message (0 turns it off)",
    "price SYMBOL PRICE": "move a symbol's price; resting orders that cross it fill",
    "step [N]": "advance the price model N steps (default 1)",
    "partial SHARES|off": "fill at most SHARES per execution, one chunk per market step",
    "open": "run the opening auction: fill OPG orders",
    "exit [CODE]": "exit the process at once (default code 1), like a crash",
    "help": "this list",
}


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise ValueError("expected on or off")
    return value == "on"


def execute(sim: Simulator, line: str) -> dict[str, Any]:
    """Run one command line against the simulator; return the JSON-able reply."""
    words = shlex.split(line)
    if not words:
        raise ValueError("empty command")
    command, args = words[0].lower(), words[1:]
    faults = sim.faults
    if command not in {key.split()[0] for key in HELP}:
        raise ValueError(f"unknown command {command!r}; try help")
    required = {"silent": 1, "stall": 1, "notice": 1, "latency": 1, "price": 2, "partial": 1}
    if len(args) < required.get(command, 0):
        raise ValueError(f"usage: {_usage(command)}")
    match command:
        case "help":
            return {"commands": HELP}
        case "status":
            return status(sim)
        case "drop":
            return {"dropped": faults.drop_all()}
        case "silent":
            faults.set_silent(_on_off(args[0]))
        case "stall":
            faults.set_handshake_stall(_on_off(args[0]))
        case "notice":
            return {"clients": faults.send_notice(int(args[0]))}
        case "reject":
            code = int(args[0]) if args else DEFAULT_REJECT[0]
            faults.reject_next(code, " ".join(args[1:]) or DEFAULT_REJECT[1])
        case "latency":
            faults.set_latency(float(args[0]))
        case "price":
            sim.set_price(args[0], float(args[1]))
            return {"quote": vars(sim.market.quote(args[0].upper()))}
        case "step":
            sim.step_market(int(args[0]) if args else 1)
        case "partial":
            sim.set_partial_fill(None if args[0] == "off" else float(args[0]))
        case "open":
            sim.open_auction()
        case "exit":
            faults.exit_process(int(args[0]) if args else 1)
    return {}


def _usage(command: str) -> str:
    return next((k for k in HELP if k.split()[0] == command), command)


def status(sim: Simulator) -> dict[str, Any]:
    faults = sim.faults
    return {
        "port": sim.port,
        "control_port": sim.control_port,
        "account": sim.account,
        "clients": sorted(sim.sessions),
        "connections": len(sim.connections),
        "open_orders": len(sim.engine.open_orders()),
        "executions": len(sim.engine.executions),
        "faults": {
            "silent": faults.silent,
            "handshake_stall": faults.handshake_stall,
            "latency": faults.latency,
            "connectivity_lost": faults.connectivity_lost,
            "market_farm_broken": faults.market_farm_broken,
        },
        "partial_fill_size": sim.engine.settings.partial_fill_size,
    }


async def serve_control(
    sim: Simulator, port: int, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
) -> None:
    try:
        listener = await anyio.create_tcp_listener(local_host=CONTROL_HOST, local_port=port)
    except OSError as exc:
        raise OSError(exc.errno, f"control channel {CONTROL_HOST}:{port}: {exc.strerror}") from exc
    async with listener:
        bound = int(listener.extra(SocketAttribute.local_port))
        sim.control_port = bound
        logger.info("control channel listening on {}:{}", CONTROL_HOST, bound)
        task_status.started(bound)
        await listener.serve(lambda stream: _serve_client(sim, stream))


async def _serve_client(sim: Simulator, stream: SocketStream) -> None:
    reader = BufferedByteReceiveStream(stream)
    async with stream:
        while True:
            try:
                raw = await reader.receive_until(b"\n", MAX_LINE)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                return
            except anyio.DelimiterNotFound:
                await stream.send(b'{"ok": false, "error": "line too long"}\n')
                return
            line = raw.decode("utf-8", "replace").strip()
            try:
                reply: dict[str, Any] = {"ok": True, **execute(sim, line)}
                logger.info("control: {}", line)
            except (ValueError, KeyError) as exc:
                reply = {"ok": False, "error": str(exc)}
                logger.warning("control: {!r} refused: {}", line, exc)
            try:
                await stream.send(json.dumps(reply).encode() + b"\n")
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return


async def send_command(port: int, line: str, host: str = CONTROL_HOST) -> dict[str, Any]:
    """Client side of the channel, for tests and the daemon's sim launcher."""
    async with await anyio.connect_tcp(host, port) as stream:
        await stream.send(line.encode() + b"\n")
        reader = BufferedByteReceiveStream(stream)
        raw = await reader.receive_until(b"\n", 1 << 20)
    reply: dict[str, Any] = json.loads(raw)
    return reply
