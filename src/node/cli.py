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
    sim.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default=None,
        help="log level (default: LOG_LEVEL, INFO: a line per request and per order change)",
    )
    sim.set_defaults(handler=_run_sim)

    run = commands.add_parser(
        "run",
        help="run the daemon: supervise the gateway and serve the API",
        description="Run the node until shutdown (Ctrl+C, SIGTERM, CTRL_BREAK or "
        "`ibkr-node ctl shutdown`).",
    )
    run.add_argument(
        "--demo",
        action="store_true",
        help="try the node on its simulated gateway with fake money: sim "
        "launcher, paper, always-open window, orders enabled and armed for this "
        "process; generates an API key if none is configured",
    )
    run.set_defaults(handler=_run_daemon)

    state = commands.add_parser(
        "state", help="print the daemon's state (exit 0 SERVING, 1 other, 2 unreachable)"
    )
    state.add_argument("--json", action="store_true", help="the state document as JSON")
    state.set_defaults(handler=_state)

    ctl = commands.add_parser("ctl", help="operator commands to the running daemon")
    actions = ctl.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start the gateway now (clears a `ctl stop`)")
    start.add_argument(
        "--force",
        action="store_true",
        help="hold the window open until `ctl release` or FORCE_MAX_HOURS",
    )
    for name, text in [
        ("stop", "stop the gateway and stay OFF until `ctl start` (survives a restart)"),
        ("release", "end a forced start"),
        ("reset-backoff", "clear the restart budget and the backoff delay step"),
        ("clear-latch", "clear a 'needs human' latch and start again"),
        ("clear-kill", "clear the kill switch (orders may go out again)"),
        ("shutdown", "stop the gateway and exit the daemon with code 0"),
    ]:
        actions.add_parser(name, help=text)
    actions.add_parser("arm", help="create the arm file: orders may go out (with the other gates)")
    actions.add_parser("disarm", help="remove the arm file: no order goes out")
    ctl.set_defaults(handler=_ctl)

    audit = commands.add_parser("audit", help="check or export the audit trail")
    audit_actions = audit.add_subparsers(dest="audit_action", required=True, metavar="ACTION")
    audit_actions.add_parser("verify", help="check the journal's hash chain (exit 1 if broken)")
    export = audit_actions.add_parser("export", help="write the journal or orders to stdout")
    export.add_argument("--format", choices=["csv", "json"], default="json")
    export.add_argument("--table", choices=["journal", "orders"], default="journal")
    audit.add_argument(
        "--db", type=Path, default=None, help="the audit database (default: AUDIT_DB_PATH)"
    )
    audit.set_defaults(handler=_audit)

    keygen = commands.add_parser("keygen", help="write a new API key to API_KEY_FILE")
    keygen.add_argument(
        "--rotate",
        action="store_true",
        help="replace the current key; it stays valid until the next rotation",
    )
    keygen.set_defaults(handler=_keygen)

    # These two must work before a valid .env exists: their handlers take the parsed
    # arguments only and load the settings themselves (see main).
    from node import configure, verify

    configure.register(commands)
    verify.register(commands)
    _accept_env_file_after_the_command(parser)
    return parser


def _accept_env_file_after_the_command(parser: argparse.ArgumentParser) -> None:
    """`ibkr-node run --env-file X` works as well as `ibkr-node --env-file X run`: the option
    is added to every command, and left unset there unless given (SUPPRESS), so the one given
    before the command still counts."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for command in action.choices.values():
            if "--env-file" not in command._option_string_actions:
                command.add_argument(
                    "--env-file",
                    type=Path,
                    default=argparse.SUPPRESS,
                    help="the .env file to read (as before the command)",
                )
            _accept_env_file_after_the_command(command)


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

    if args.log_level is not None:
        configure_logging(args.log_level, settings.LOG_FORMAT)
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


def _run_daemon(args: argparse.Namespace, settings: Settings) -> int:
    from node.runtime import Running, StartupError, banner, run_node

    def ready(running: Running) -> None:
        print(banner(settings, running.demo_key, args.demo), flush=True)

    try:
        env_file = args.env_file or Path(".env")
        anyio.run(
            lambda: run_node(
                settings,
                demo=args.demo,
                on_ready=ready,
                env_file=env_file if env_file.is_file() else None,
            )
        )
    except StartupError as exc:
        print(f"ibkr-node run: {exc}", file=sys.stderr)
        return 2
    return 0


def _state(args: argparse.Namespace, settings: Settings) -> int:
    from node import ctl

    try:
        doc = ctl.get_state(settings)
    except ctl.CtlError as exc:
        print(f"ibkr-node state: {exc}", file=sys.stderr)
        return ctl.UNREACHABLE
    print(ctl.dumps(doc) if args.json else ctl.describe_state(doc))
    return ctl.state_exit_code(doc)


def _ctl(args: argparse.Namespace, settings: Settings) -> int:
    from node import ctl

    if args.action in ("arm", "disarm"):
        print(ctl.set_armed(settings.arm_orders_file, args.action == "arm"))
        return 0
    try:
        reply = ctl.admin(settings, args.action, force=getattr(args, "force", False))
    except ctl.CtlError as exc:
        print(f"ibkr-node ctl {args.action}: {exc}", file=sys.stderr)
        return 2
    print(f"{args.action}: {reply['result']} (state {reply['state']})")
    return 0


def _keygen(args: argparse.Namespace, settings: Settings) -> int:
    from node import ctl

    try:
        key = ctl.keygen(settings.API_KEY_FILE, rotate=args.rotate)
    except ctl.CtlError as exc:
        print(f"ibkr-node keygen: {exc}", file=sys.stderr)
        return 2
    # stdout is the key alone, so a script can capture it; the explanation goes to stderr.
    path = settings.API_KEY_FILE
    note = [f"new API key written to {path} (owner-only); it is shown once: give it to the Pi"]
    if args.rotate:
        note.append("the previous key stays valid (line 2) until the next rotation: update "
                    "the Pi, then rotate again to retire it")  # fmt: skip
    if settings.API_KEY:
        note.append("API_KEY is also set (env file or environment): that key stays valid too")
    print("\n".join(note), file=sys.stderr)
    print(key, flush=True)
    return 0


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from node.audit import AuditError, export, verify_chain

    path = args.db or settings.audit_db_path
    try:
        if args.audit_action == "verify":
            result = verify_chain(path)
            if result.ok:
                print(f"{path}: the journal's {result.rows} rows verify")
                return 0
            print(f"{path}: BROKEN at seq {result.first_bad_seq}: {result.problem}",
                  file=sys.stderr)  # fmt: skip
            return 1
        rows = export(path, args.format, sys.stdout, table=args.table)
        print(f"{rows} rows exported", file=sys.stderr)
        return 0
    except (FileNotFoundError, AuditError) as exc:
        print(f"ibkr-node audit: {path}: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    standalone = getattr(args, "standalone_handler", None)
    if standalone is not None:
        configure_logging("WARNING", "text")
        try:
            code: int = standalone(args)
        except KeyboardInterrupt:
            print("\ninterrupted: nothing more was written", file=sys.stderr)
            return 130
        return code
    try:
        settings = load_settings(args.env_file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if getattr(args, "command", None) == "run":
        configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT, settings.log_dir,
                          settings.STATE_DIR / "logs", settings.LOG_RETENTION_DAYS)  # fmt: skip
    else:
        configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    try:
        result: int = args.handler(args, settings)
    except KeyboardInterrupt:
        return 0
    return result
