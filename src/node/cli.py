"""The ``ibkr-node`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from node.config import ConfigError, Settings, load_settings
from node.logs import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ibkr-node",
        description="Execution node for Interactive Brokers: gateway supervisor and LAN API.",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="the .env file to read (default: .env in the current folder)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = commands.add_parser(
        "sim",
        help="run the simulated IB Gateway (TWS API protocol, paper account)",
        description="Serve a simulated IB Gateway until interrupted. The control channel's "
        "commands are listed in docs/simulator.md.",
    )
    sim.add_argument(
        "--host", default=None, help="address to bind (default: IBKR_GATEWAY_HOST, 127.0.0.1)"
    )
    sim.add_argument(
        "--port",
        type=_port,
        default=None,
        help="TCP port (default: PAPER_GATEWAY_PORT, 4002; 0 = a free port)",
    )
    sim.add_argument(
        "--account",
        default="DU1234567",
        type=_paper_account,
        help="paper account id, starting with DU (default: DU1234567)",
    )
    sim.add_argument("--seed", type=int, default=0, help="price model seed (default: 0)")
    sim.add_argument(
        "--control-port",
        type=_port,
        default=None,
        help="open the loopback control channel on this port (0 = a free port; "
        "default: SIM_CONTROL_PORT, else none)",
    )
    sim.add_argument(
        "--state-file",
        type=Path,
        default=None,
        help="keep account, orders and executions in this file across restarts",
    )
    sim.add_argument(
        "--tick-interval",
        type=float,
        default=1.0,
        help="seconds between price model steps (0 = prices move only on command)",
    )
    sim.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="exit when stdin closes (used by the node's sim launcher)",
    )
    sim.set_defaults(handler=_run_sim)
    return parser


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port from 0 to 65535")
    return value


def _paper_account(text: str) -> str:
    if not text.startswith("DU") or not text[2:].isalnum():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a paper account id (DU followed by letters or digits)"
        )
    return text


def _run_sim(args: argparse.Namespace, settings: Settings) -> int:
    from node.sim.runner import serve
    from node.sim.server import SimConfig
    from node.sim.state import StateFileError

    control = args.control_port if args.control_port is not None else settings.SIM_CONTROL_PORT
    config = SimConfig(
        host=args.host or settings.IBKR_GATEWAY_HOST,
        port=args.port if args.port is not None else settings.PAPER_GATEWAY_PORT,
        account=args.account,
        seed=args.seed,
        control_port=control,
        state_file=args.state_file,
        tick_interval=args.tick_interval or None,
    )
    try:
        anyio.run(lambda: serve(config, exit_with_parent=args.exit_with_parent))
    except StateFileError as exc:
        print(f"ibkr-node sim: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"ibkr-node sim: cannot listen on {config.host}:{config.port}: {exc.strerror}; "
            "choose another --port (0 picks a free one)",
            file=sys.stderr,
        )
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.env_file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    try:
        result: int = args.handler(args, settings)
    except KeyboardInterrupt:
        return 0
    return result
