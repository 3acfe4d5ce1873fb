"""``ibkr-node configure``: the .env wizard, IBC's config.ini, ALLOWED_IPS and ``show``.

These run before a valid .env exists, so each loads the settings itself. Exit codes: 0 done,
1 nothing written because the operator declined or the input ended, 2 a usage or
configuration error (the reason on stderr, starting with ``ibkr-node configure``).

The wizard reads its answers with input(), so a terminal, a pseudo-terminal or a pipe all
work; passwords are read with getpass (no echo) from a terminal, or from stdin only with
``--password-stdin``. They are never printed, logged or passed on a command line.
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from node import envfile, ibc_setup
from node.config import PATH_SETTINGS, ConfigError, Settings, default_state_dir, load_settings
from node.plugins.launchers.ibc import parse_ibc_ini, start_script

T = TypeVar("T")

PROG = "ibkr-node configure"
LAUNCHERS = ("ibc", "exe", "external", "sim")
MODES = ("paper", "live")
NONE_WORDS = ("none", "-")

# The .env the wizard writes: DESIGN.md section 8's groups, each variable with a comment.
# A variable without a value (answer, current value or default) is written commented out.
TEMPLATE: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("Safety", (
        ("TRADING_MODE", "paper or live. Live orders also need LIVE_TRADING_OVERRIDE_FILE."),
        ("ORDERS_ENABLED", "Orders go out only when this is true AND the arm file exists\n"
                           "(ibkr-node ctl arm), with the other gates."),
        ("ARM_ORDERS_FILE", "The arm file [default: arm_orders_confirmed.txt in the sync "
                            "folder,\nelse in STATE_DIR]."),
        ("LIVE_TRADING_OVERRIDE_FILE", "Unset: live orders are impossible."),
        ("API_KEY_FILE", "The API key(s) the Pi sends; `ibkr-node keygen` writes it."),
    )),
    ("Network", (
        ("API_BIND_HOST", "This laptop's LAN address: the API listens there."),
        ("API_PORT", "The API's TCP port (the firewall rule allows it from the Pi)."),
        ("PI_IP", "The Pi, allowed to call the API."),
        ("ALLOWED_IPS", "More allowed callers: comma-separated addresses or networks\n"
                        "(`ibkr-node configure allow-ips` adds to it)."),
        ("IBKR_GATEWAY_HOST", "Where the gateway's API listens."),
        ("PAPER_GATEWAY_PORT", "The gateway's API port in paper mode."),
        ("LIVE_GATEWAY_PORT", "The gateway's API port in live mode."),
        ("IBC_COMMAND_PORT", "IBC's command server on 127.0.0.1 (the node stops IBC there)."),
    )),
    ("Run window", (
        ("RUN_WINDOW_START", "HH:MM: the gateway starts then..."),
        ("RUN_WINDOW_END", "...and stops then (24:00 = end of day)."),
        ("RUN_WINDOW_DAYS", "e.g. Mon,Tue,Wed,Thu,Fri or Mon-Fri."),
        ("RUN_WINDOW_TIMEZONE", "IANA zone of the window."),
    )),
    ("Paths", (
        ("GDRIVE_BASE_PATH", "The sync folder (Google Drive): snapshots and logs go there.\n"
                             "Commented out: no sync folder (an empty value would mean this "
                             "file's folder)."),
        ("STATE_DIR", "The node's own state: audit database, lock, latches."),
        ("AUDIT_DB_PATH", "[default: STATE_DIR/audit.db]"),
        ("LOG_FILE_PATH", "The log folder [default: logs in the sync folder, else in "
                          "STATE_DIR]."),
    )),
    ("Gateway", (
        ("GATEWAY_LAUNCHER", "ibc (IBC logs in), exe (you log in), external (someone else "
                             "runs it)\nor sim (the simulator, fake money)."),
        ("IBKR_GATEWAY_PATH", "IB Gateway: its install folder (ibc) or executable (exe)."),
        ("IBC_PATH", "IBC's folder (holding its gateway start script)."),
        ("IBC_INI", "IBC's config.ini, with the login (`ibkr-node configure ibc` writes it)."),
    )),
)  # fmt: skip
TEMPLATE_KEYS = frozenset(name for _, entries in TEMPLATE for name, _ in entries)

# What `configure show` prints: what the scripts need, resolved; never a secret.
SHOWN = (
    "TRADING_MODE", "ORDERS_ENABLED", "API_BIND_HOST", "API_PORT", "PI_IP", "ALLOWED_IPS",
    "IBKR_GATEWAY_HOST", "PAPER_GATEWAY_PORT", "LIVE_GATEWAY_PORT", "IBC_COMMAND_PORT",
    "RUN_WINDOW_START", "RUN_WINDOW_END", "RUN_WINDOW_DAYS", "RUN_WINDOW_TIMEZONE",
    "STATE_DIR", "GDRIVE_BASE_PATH", "AUDIT_DB_PATH", "LOG_FILE_PATH", "ARM_ORDERS_FILE",
    "API_KEY_FILE", "GATEWAY_LAUNCHER", "IBKR_GATEWAY_PATH", "IBC_PATH", "IBC_INI",
)  # fmt: skip


class Refused(Exception):
    """A value the non-interactive wizard cannot take; str() is the reason and the fix."""


# --------------------------------------------------------------------------- the parser


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "configure",
        help="write .env for this laptop (interactive wizard, or flags)",
        description="Without an ACTION: the .env wizard. Each question shows its default or "
        "the current value (Enter keeps it); a flag answers its question. Writes the env "
        "file with a backup of the one it replaces, and creates the folders.",
    )
    parser.add_argument(
        "--non-interactive",
        action="store_true",
        help="never prompt: flags, then current values, then defaults",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing env file without asking (a backup is kept)",
    )
    parser.add_argument(
        "--lan-ip",
        type=_argument(check_ip),
        metavar="IP",
        help="this laptop's LAN IP (API_BIND_HOST)",
    )
    parser.add_argument(
        "--pi-ip", type=_argument(check_ip), metavar="IP", help="the Pi's IP (PI_IP)"
    )
    parser.add_argument(
        "--sync-folder",
        metavar="PATH",
        help="the sync folder (GDRIVE_BASE_PATH); 'none' for no sync folder",
    )
    parser.add_argument("--state-dir", metavar="PATH", help="STATE_DIR")
    parser.add_argument("--api-port", type=_argument(check_port), metavar="N", help="API_PORT")
    parser.add_argument("--launcher", choices=LAUNCHERS, help="GATEWAY_LAUNCHER (default: ibc)")
    parser.add_argument(
        "--gateway-path",
        metavar="PATH",
        help="IBKR_GATEWAY_PATH: the gateway's folder (ibc) or executable (exe)",
    )
    parser.add_argument("--ibc-path", metavar="PATH", help="IBC_PATH: IBC's folder")
    parser.add_argument(
        "--ibc-ini",
        metavar="PATH",
        help="IBC_INI (default: what IBC's start script reads, else IBC_PATH/config.ini)",
    )
    parser.add_argument("--trading-mode", choices=MODES, help="TRADING_MODE (default: paper)")
    parser.set_defaults(standalone_handler=run_wizard)

    actions = parser.add_subparsers(dest="configure_action", required=False, metavar="ACTION")
    ibc = actions.add_parser(
        "ibc",
        help="write IBC's config.ini (login for auto-login) and jts.ini's trusted IPs",
        description="Write IBC's config.ini at IBC_INI with the settings the ibc launcher "
        "checks and the IBKR login, owner-only; set TrustedIPs in jts.ini. The password is "
        "read without echo, or as the first line of stdin with --password-stdin; it is never "
        "printed.",
    )
    ibc.add_argument("--username", help="the IBKR username (prompted if absent)")
    ibc.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from stdin's first line (needs --username; "
        "no other question is asked)",
    )
    ibc.add_argument(
        "--jts-ini",
        type=Path,
        metavar="PATH",
        help="the gateway's jts.ini (default: jts.ini in the Jts folder above IBKR_GATEWAY_PATH)",
    )
    ibc.add_argument(
        "--trusted-ips",
        type=_argument(ibc_setup.parse_trusted_ips),
        default=["127.0.0.1"],
        metavar="IPS",
        help="comma-separated addresses for jts.ini's TrustedIPs (default: 127.0.0.1)",
    )
    ibc.add_argument(
        "--non-interactive",
        action="store_true",
        help="never prompt (needs --username and --password-stdin)",
    )
    ibc.add_argument(
        "--force",
        action="store_true",
        help="replace an existing config.ini without asking (a backup is kept)",
    )
    ibc.set_defaults(standalone_handler=configure_ibc)

    allow = actions.add_parser(
        "allow-ips",
        help="add addresses to ALLOWED_IPS in the env file",
        description="Add the comma-separated addresses (or networks) to ALLOWED_IPS, keeping "
        "its order and the rest of the file; a backup is kept. Already there: no change.",
    )
    allow.add_argument(
        "ips", type=_argument(parse_allowed), metavar="IPS", help="e.g. 192.168.1.60,10.0.0.7"
    )
    allow.set_defaults(standalone_handler=allow_ips)

    show = actions.add_parser(
        "show",
        help="print the resolved settings the scripts need (no secrets)",
        description="Print the resolved settings (never API_KEY); exit 2 if the env file is "
        "invalid.",
    )
    show.add_argument("--json", action="store_true", help="one JSON object, keyed by variable")
    show.set_defaults(standalone_handler=show_settings)


def _argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a check that raises ValueError with the reason."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


# ------------------------------------------------------------------ checks (one reason)


def check_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address (e.g. 192.168.1.100)") from None


def check_port(text: str) -> str:
    if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{text!r} is not a TCP port from 1 to 65535")
    return str(int(text))


def allowed_entry(text: str) -> str:
    """An address or network as ALLOWED_IPS takes it (config.py: ip_network, not strict)."""
    item = text.strip()
    try:
        if "/" in item:
            return str(ipaddress.ip_network(item, strict=False))
        return str(ipaddress.ip_address(item))
    except ValueError:
        raise ValueError(f"{item!r} is not an IP address or network") from None


def parse_allowed(text: str) -> list[str]:
    entries: list[str] = []
    for item in text.split(","):
        if item.strip():
            entry = allowed_entry(item)
            if entry not in entries:
                entries.append(entry)
    if not entries:
        raise ValueError("no address given")
    return entries


def unquote(text: str) -> str:
    """An answer without the quotes Explorer's "Copy as path" puts around it."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1].strip()
    return text


# -------------------------------------------------------------------------- the wizard


def prompt_line(prompt: str) -> str:
    """input(), echoing the answer when stdin is not a terminal, so a transcript reads well."""
    answer = input(prompt)
    if not sys.stdin.isatty():
        print(answer)
    return answer


def detect_lan_ip() -> str | None:
    """The address of the interface that routes to the LAN, or None.

    A UDP socket "connected" toward a private address makes the OS choose the route and
    the source address; UDP's connect sends no packet.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))
            address = str(probe.getsockname()[0])
    except OSError:
        return None
    if address.startswith("127.") or address == "0.0.0.0":
        return None
    return address


@dataclass
class Wizard:
    """Collects the answers: a flag, else a question (interactive), else current/default."""

    env_file: Path
    current: dict[str, str]
    interactive: bool
    ask_line: Callable[[str], str] = prompt_line

    @property
    def base(self) -> Path:
        return self.env_file.resolve().parent

    def resolve(self, text: str) -> Path:
        path = Path(text)
        return path if path.is_absolute() else self.base / path

    def field(
        self,
        name: str,
        *,
        flag: str | None,
        flag_name: str,
        question: str,
        default: str | None,
        check: Callable[[str], str],
        optional: bool = False,
    ) -> str | None:
        if flag is not None:
            if optional and flag.strip().lower() in NONE_WORDS:
                return None
            try:
                return check(unquote(flag))
            except ValueError as exc:
                raise Refused(f"{flag_name} {flag}: {exc}") from None
        current = self.current.get(name)
        if name in PATH_SETTINGS and not current:
            current = None  # `NAME=` is not "none": an empty path means the env file's folder
        proposal = current if current is not None else default
        if self.interactive:
            return self.ask(question, proposal, check, optional=optional)
        if proposal is None:
            if optional:
                return None
            raise Refused(f"{flag_name} is needed ({question}; no value in {self.env_file})")
        try:
            return check(proposal)
        except ValueError as exc:
            where = f"{name} in {self.env_file}" if current is not None else f"default {name}"
            raise Refused(f"{where}: {exc}; pass {flag_name}") from None

    def ask(
        self,
        question: str,
        proposal: str | None,
        check: Callable[[str], str],
        *,
        optional: bool = False,
    ) -> str | None:
        shown = proposal if proposal is not None else ("none" if optional else "")
        suffix = f" [{shown}]" if shown else ""
        while True:
            answer = unquote(self.ask_line(f"{question}{suffix}: "))
            if not answer:
                if proposal is None:
                    if optional:
                        return None
                    print("  an answer is needed; try again")
                    continue
                answer = proposal
            if optional and answer.lower() in NONE_WORDS:
                return None
            try:
                return check(answer)
            except ValueError as exc:
                print(f"  {exc}; try again")

    # ---------------------------------------------------------------- the questions

    def collect(self, args: argparse.Namespace) -> dict[str, str | None]:
        answers: dict[str, str | None] = {}
        detected = detect_lan_ip()
        lan_question = "This laptop's LAN IP (the API listens there)"
        current_lan = self.current.get("API_BIND_HOST")
        if detected is None and current_lan is None:
            lan_question += " (not detected: see ipconfig)"
        elif detected is not None and current_lan is not None and current_lan != detected:
            lan_question += f" (detected now: {detected})"
        lan = self.field("API_BIND_HOST", flag=args.lan_ip, flag_name="--lan-ip",
                         question=lan_question, default=detected, check=check_ip)  # fmt: skip
        answers["API_BIND_HOST"] = lan
        answers["API_PORT"] = self.field(
            "API_PORT", flag=args.api_port, flag_name="--api-port", question="API port",
            default=_default("API_PORT"), check=check_port,
        )  # fmt: skip

        def check_pi(text: str) -> str:
            address = check_ip(text)
            if address == lan and lan not in ("127.0.0.1", "::1"):
                raise ValueError(f"{address} is this laptop's own address (the LAN IP above)")
            return address

        answers["PI_IP"] = self.field(
            "PI_IP",
            flag=args.pi_ip,
            flag_name="--pi-ip",
            question="The Pi's IP",
            default=None,
            check=check_pi,
        )
        answers["GDRIVE_BASE_PATH"] = self.field(
            "GDRIVE_BASE_PATH", flag=args.sync_folder, flag_name="--sync-folder",
            question="Sync folder (Google Drive) for logs and snapshots ('none' for none)",
            default=None, check=self.check_folder, optional=True,
        )  # fmt: skip
        launcher = self.field("GATEWAY_LAUNCHER", flag=args.launcher, flag_name="--launcher",
                              question="Gateway launcher (ibc, exe, external, sim)",
                              default="ibc", check=check_launcher)  # fmt: skip
        answers["GATEWAY_LAUNCHER"] = launcher
        if launcher in ("ibc", "exe"):
            exe = launcher == "exe"
            answers["IBKR_GATEWAY_PATH"] = self.field(
                "IBKR_GATEWAY_PATH", flag=args.gateway_path, flag_name="--gateway-path",
                question="IB Gateway's executable" if exe else "IB Gateway's install folder",
                default=_find_gateway(exe=exe),
                check=self.check_gateway_exe if exe else self.check_exists,
            )  # fmt: skip
        if launcher == "ibc":
            ibc_path = self.field(
                "IBC_PATH", flag=args.ibc_path, flag_name="--ibc-path",
                question="IBC's folder", default=_find_ibc(), check=self.check_ibc_folder,
            )  # fmt: skip
            answers["IBC_PATH"] = ibc_path
            assert ibc_path is not None
            from_script = ibc_setup.script_config_path(self.resolve(ibc_path))
            ini_question = "IBC's config.ini"
            if from_script is not None:
                current_ini = self.current.get("IBC_INI")
                same = current_ini is None or self.resolve(current_ini) == from_script
                ini_question += (" (the one IBC's start script reads)" if same else
                                 f" (IBC's start script reads {from_script})")  # fmt: skip
            answers["IBC_INI"] = self.field(
                "IBC_INI", flag=args.ibc_ini, flag_name="--ibc-ini", question=ini_question,
                default=str(from_script or Path(ibc_path) / "config.ini"),
                check=self.check_ini,
            )  # fmt: skip
        answers["TRADING_MODE"] = self.trading_mode(args.trading_mode)
        answers["STATE_DIR"] = self.field(
            "STATE_DIR", flag=args.state_dir, flag_name="--state-dir",
            question="State folder (audit database, lock, latches)",
            default=str(default_state_dir()), check=self.check_state_dir,
        )  # fmt: skip
        return answers

    def trading_mode(self, flag: str | None) -> str:
        mode = self.field("TRADING_MODE", flag=flag, flag_name="--trading-mode",
                          question="Trading mode (paper, live)", default="paper",
                          check=check_mode)  # fmt: skip
        if mode != "live":
            return "paper"
        print(LIVE_WARNING, file=sys.stderr if not self.interactive else sys.stdout)
        if not self.interactive:
            return "live"
        if self.ask_line("Type live again to confirm live trading: ").strip() == "live":
            return "live"
        print("  not confirmed: paper")
        return "paper"

    # ------------------------------------------------------------------ path checks

    def _existing(self, text: str, holds: Callable[[Path], bool], problem: str) -> str:
        path = os.path.expanduser(text)
        if not holds(self.resolve(path)):
            raise ValueError(f"{path} {problem}")
        return path

    def check_folder(self, text: str) -> str:
        return self._existing(text, Path.is_dir, "is not a folder (is the sync client running?)")

    def check_exists(self, text: str) -> str:
        return self._existing(text, Path.exists, "does not exist")

    def check_gateway_exe(self, text: str) -> str:
        return self._existing(
            text, Path.is_file, "is not a file (the gateway's executable, ibgateway.exe)"
        )

    def check_ibc_folder(self, text: str) -> str:
        path = os.path.expanduser(text)
        folder = self.resolve(path)
        if not folder.is_dir():
            raise ValueError(f"{path} is not a folder")
        script = start_script(folder)
        if not script.is_file():
            raise ValueError(f"{path} has no {script.name}: is it IBC's folder?")
        return path

    def check_ini(self, text: str) -> str:
        path = os.path.expanduser(text)
        if self.resolve(path).is_dir():
            raise ValueError(f"{path} is a folder; give the file's path (config.ini)")
        return path

    def check_state_dir(self, text: str) -> str:
        path = os.path.expanduser(text)
        target = self.resolve(path)
        if target.exists() and not target.is_dir():
            raise ValueError(f"{path} is a file, not a folder")
        return path


LIVE_WARNING = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!  LIVE TRADING: the node will connect to your REAL-MONEY account.          !!
!!  Orders still need ORDERS_ENABLED=true, the arm file and                   !!
!!  LIVE_TRADING_OVERRIDE_FILE; test everything on paper first.               !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"""


def check_launcher(text: str) -> str:
    if text.strip().lower() not in LAUNCHERS:
        raise ValueError(f"{text!r} is not one of {', '.join(LAUNCHERS)}")
    return text.strip().lower()


def check_mode(text: str) -> str:
    if text.strip().lower() not in MODES:
        raise ValueError(f"{text!r} is not paper or live")
    return text.strip().lower()


def _default(name: str) -> str | None:
    """Settings' own default for a variable, as .env text (None: unset by default)."""
    field = Settings.model_fields[name]
    value = field.default
    if value is None or field.default_factory is not None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return value.as_posix()
    return str(value)


def _find_gateway(*, exe: bool) -> str | None:
    """The newest IB Gateway under the usual Jts folder, if one is installed there."""
    root = Path(r"C:\Jts") if sys.platform == "win32" else Path.home() / "Jts"
    try:
        versions = sorted(
            (p for p in (root / "ibgateway").iterdir() if p.is_dir()),
            key=lambda p: (len(p.name), p.name),
        )
    except OSError:
        return None
    if not versions:
        return None
    folder = versions[-1]
    if not exe:
        return str(folder)
    binary = folder / ("ibgateway.exe" if sys.platform == "win32" else "ibgateway")
    return str(binary) if binary.is_file() else None


def _find_ibc() -> str | None:
    candidates = (
        [Path(r"C:\IBC")] if sys.platform == "win32" else [Path("/opt/ibc"), Path.home() / "ibc"]
    )
    return next((str(p) for p in candidates if p.is_dir()), None)


def render_env(
    values: dict[str, str | None], kept: list[str], *, now: datetime | None = None
) -> str:
    """The wizard's .env: the template's groups, then the previous file's other variables."""
    stamp = (now or datetime.now()).strftime("%Y-%m-%d %H:%M")
    lines = [
        "# ibkr-node settings for this laptop (DESIGN.md section 8 lists every variable).",
        f"# Written by `ibkr-node configure` on {stamp}. Run it again to change the answers",
        "# (it keeps a backup), or edit by hand and check with `ibkr-node verify`.",
        "# Relative paths resolve against this file's folder. A commented-out variable is",
        "# unset: the default in brackets applies.",
    ]
    for title, entries in TEMPLATE:
        lines += ["", f"# --- {title} " + "-" * max(3, 74 - len(title))]
        for name, comment in entries:
            lines += [f"# {line}" for line in comment.split("\n")]
            value = values.get(name)
            lines.append(f"# {name}=" if value is None else f"{name}={envfile.format_value(value)}")
    lines += [
        "",
        "# Timings, risk limits (MAX_ORDER_QTY, MAX_ORDER_NOTIONAL, MAX_OPEN_ORDERS,",
        "# MAX_ORDERS_PER_MINUTE, SYMBOL_ALLOWLIST), notifiers (NOTIFY_WEBHOOK_URL,",
        "# NOTIFY_PUSH_URL), LOG_LEVEL, TLS: DESIGN.md section 8.",
    ]
    if kept:
        lines += ["", "# --- Kept from the previous file " + "-" * 46, *kept]
    return "\n".join(lines) + "\n"


def kept_lines(text: str | None) -> list[str]:
    """The previous file's assignments of variables the template does not hold, verbatim."""
    if text is None:
        return []
    return [original.strip() for name, original in envfile.bindings(text)
            if name is not None and name not in TEMPLATE_KEYS]  # fmt: skip


def run_wizard(args: argparse.Namespace) -> int:
    env_file: Path = args.env_file or Path(".env")
    if env_file.is_dir():
        return _fail(f"{env_file} is a folder; give the env file's path with --env-file")
    existing: str | None = None
    if env_file.exists():
        try:
            existing = envfile.read_text(env_file)
        except (OSError, envfile.EnvFileError) as exc:
            return _fail(f"cannot read {env_file}: {exc}")
    interactive = not args.non_interactive
    if existing is not None and not interactive and not args.force:
        return _fail(f"{env_file} exists; pass --force to replace it (a backup is kept)")
    current = envfile.parse_values(existing) if existing is not None else {}
    wizard = Wizard(env_file, current, interactive)
    try:
        if interactive:
            intro = f"Configuring {env_file.resolve()}"
            print(
                intro
                + (
                    ": Enter keeps the value in brackets."
                    if existing is None
                    else " (it exists: its values are in brackets; Enter keeps one)."
                )
            )
        answers = wizard.collect(args)
        if interactive and existing is not None and not args.force:
            reply = wizard.ask_line(f"Replace {env_file} (a backup is kept)? [y/N]: ")
            if reply.strip().lower() not in ("y", "yes"):
                print(f"kept {env_file} unchanged: nothing written")
                return 1
    except EOFError:
        print(f"\n{PROG}: the input ended before the last answer: nothing written",
              file=sys.stderr)  # fmt: skip
        return 1
    except Refused as exc:
        return _fail(str(exc))

    values: dict[str, str | None] = {}
    for name in TEMPLATE_KEYS:
        current_value = current.get(name)
        if name in PATH_SETTINGS and not current_value:
            current_value = None
        values[name] = current_value if current_value is not None else _default(name)
    values.update(answers)
    try:
        text = render_env(values, kept_lines(existing))
    except envfile.EnvFileError as exc:  # a multi-line value kept from the previous file
        return _fail(f"{env_file}: {exc}; fix that variable first")
    try:
        saved = envfile.backup(env_file) if existing is not None else None
        envfile.write_atomic(env_file, text.encode("utf-8"))
    except OSError as exc:
        return _fail(f"cannot write {env_file}: {exc.strerror or exc}")
    print(f"wrote {env_file}" + (f" (the previous file is in {saved.name})" if saved else ""))
    try:
        settings = load_settings(env_file)
    except ConfigError as exc:
        print(f"{PROG}: {env_file} was written but does not load; fix these lines:\n{exc}",
              file=sys.stderr)  # fmt: skip
        return 2
    print("checked: the settings load")
    failed = _make_folders(settings)
    _next_steps(args, settings)
    return 2 if failed else 0


def _make_folders(settings: Settings) -> bool:
    failed = False
    folders = [settings.STATE_DIR, settings.log_dir, settings.API_KEY_FILE.parent,
               settings.audit_db_path.parent]  # fmt: skip
    for folder in dict.fromkeys(folders):
        if folder.is_dir():
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"{PROG}: cannot create {folder}: {exc.strerror or exc}", file=sys.stderr)
            failed = True
        else:
            print(f"created {folder}")
    return failed


def _next_steps(args: argparse.Namespace, settings: Settings) -> None:
    cli = "ibkr-node" + (f' --env-file "{args.env_file}"' if args.env_file else "")
    steps = [(f"{cli} keygen", "the API key the Pi sends (printed once)")]
    if settings.GATEWAY_LAUNCHER == "ibc":
        steps.append((f"{cli} configure ibc", "IBC's config.ini with the IBKR login"))
    steps.append((f"{cli} verify", "the pre-flight checks"))
    width = max(len(command) for command, _ in steps)
    print("Next steps (on Windows: generate-api-key.ps1, setup-ibkr-autologin.ps1, verify.ps1):")
    for number, (command, what) in enumerate(steps, 1):
        print(f"  {number}. {command.ljust(width)}  {what}")


# ----------------------------------------------------------------------- configure ibc


def configure_ibc(args: argparse.Namespace) -> int:
    env_file: Path | None = args.env_file
    try:
        settings = load_settings(env_file)
    except ConfigError as exc:
        return _fail(f"the env file does not load; run `ibkr-node configure` or fix:\n{exc}")
    ini = settings.ibc_ini
    if ini is None:
        return _fail("IBC_INI and IBC_PATH are unset; run `ibkr-node configure --launcher ibc` "
                     "or set IBC_INI to IBC's config.ini")  # fmt: skip
    jts: Path | None = args.jts_ini
    if jts is None and settings.IBKR_GATEWAY_PATH is not None:
        found = ibc_setup.default_jts_ini(settings.IBKR_GATEWAY_PATH)
        jts = Path(found) if found is not None else None
    if jts is None:
        return _fail("cannot tell where jts.ini is (no Jts folder above IBKR_GATEWAY_PATH); "
                     "pass --jts-ini PATH")  # fmt: skip
    if jts.is_dir():
        return _fail(f"--jts-ini {jts} is a folder; give the file's path")
    if args.password_stdin and not args.username:
        return _fail("--password-stdin needs --username (stdin holds only the password)")
    interactive = not (args.non_interactive or args.password_stdin)
    if args.non_interactive and not (args.username and args.password_stdin):
        return _fail("--non-interactive needs --username and --password-stdin")
    if not interactive and ini.exists() and not args.force:
        return _fail(f"{ini} exists; pass --force to replace it (a backup is kept)")
    if settings.GATEWAY_LAUNCHER != "ibc":
        print(f"note: GATEWAY_LAUNCHER is {settings.GATEWAY_LAUNCHER or 'unset'}; the node "
              "uses this file only with GATEWAY_LAUNCHER=ibc")  # fmt: skip
    try:
        if settings.TRADING_MODE == "live":
            print(LIVE_WARNING, file=sys.stderr)
            print("Auto-login to a live account is at your own risk: anyone who can read "
                  f"{ini} can log in to your account.", file=sys.stderr)  # fmt: skip
            if interactive and prompt_line("Type live to write a live login: ").strip() != "live":
                print("not confirmed: nothing written")
                return 1
        if interactive and ini.exists() and not args.force:
            reply = prompt_line(f"Replace {ini} (a backup is kept)? [y/N]: ")
            if reply.strip().lower() not in ("y", "yes"):
                print(f"kept {ini} unchanged: nothing written")
                return 1
        username = args.username or _ask_username(ini)
        password = _read_password(args.password_stdin)
    except EOFError:
        print(f"\n{PROG}: the input ended before the last answer: nothing written",
              file=sys.stderr)  # fmt: skip
        return 1
    except Refused as exc:
        return _fail(str(exc))
    try:
        ibc_setup.check_credential("username", username)
        text = ibc_setup.render_config_ini(
            username=username,
            password=password,
            trading_mode=settings.TRADING_MODE,
            command_port=settings.IBC_COMMAND_PORT,
            gateway_port=settings.gateway_port,
        )
    except ValueError as exc:  # IbcSetupError; never holds the password itself
        return _fail(f"{exc}: nothing written")
    try:
        saved = envfile.backup(ini) if ini.exists() else None
        # ASCII: every other character is escaped (IBC reads the file as ISO-8859-1).
        envfile.write_atomic(ini, text.encode("ascii"), mode=envfile.OWNER_ONLY)
    except OSError as exc:
        return _fail(f"cannot write {ini}: {exc.strerror or exc}")
    private = (
        "owner-only" if os.name == "posix" else "restrict its ACL: setup-ibkr-autologin.ps1 does"
    )
    print(f"wrote {ini} (TradingMode={settings.TRADING_MODE}, CommandServerPort="
          f"{settings.IBC_COMMAND_PORT}; {private})"
          + (f"; the previous file is in {saved.name}" if saved else ""))  # fmt: skip
    code = _write_jts(jts, args.trusted_ips)
    if settings.IBC_PATH is not None:
        configured = ibc_setup.script_config_path(settings.IBC_PATH)
        if configured is not None and configured.resolve() != ini.resolve():
            print(
                f"warning: IBC's start script reads {configured}, not {ini}: set IBC_INI "
                "or the script's config line so they agree (the launcher refuses otherwise)"
            )
    return code


def _ask_username(ini: Path) -> str:
    previous = None
    if ini.is_file():
        try:
            previous = parse_ibc_ini(ini.read_text("latin-1")).get("IbLoginId")
        except OSError:
            previous = None
    while True:
        shown = f" [{previous}]" if previous else ""
        answer = prompt_line(f"IBKR username{shown}: ").strip() or (previous or "")
        if answer:
            return answer
        print("  an answer is needed; try again")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            raise Refused("no password on stdin's first line (an empty password is refused)")
        return password
    if not sys.stdin.isatty():
        raise Refused("the password is read without echo from a terminal; to give it "
                      "through a pipe, use --username NAME --password-stdin")  # fmt: skip
    while True:
        password = getpass.getpass("IBKR password (not shown): ")
        if not password:
            print("  an empty password is refused; try again")
            continue
        if getpass.getpass("The same password again: ") == password:
            return password
        print("  the two passwords differ; try again")


def _write_jts(jts: Path, trusted: list[str]) -> int:
    value = ",".join(trusted)
    try:
        old = jts.read_bytes().decode("latin-1") if jts.exists() else None
    except OSError as exc:
        return _fail(f"cannot read {jts}: {exc.strerror or exc}")
    new = ibc_setup.set_ini_key(old or "", ibc_setup.JTS_SECTION, ibc_setup.JTS_KEY, value)
    if new == old:
        print(f"{jts} already has {ibc_setup.JTS_KEY}={value}")
        return 0
    try:
        saved = envfile.backup(jts) if old is not None else None
        mode = envfile.file_mode(jts) if old is not None else 0o644
        envfile.write_atomic(jts, new.encode("latin-1"), mode=mode)
    except OSError as exc:
        return _fail(f"cannot write {jts}: {exc.strerror or exc}")
    action = "set" if old is not None else "created with"
    print(f"{jts}: {action} [{ibc_setup.JTS_SECTION}] {ibc_setup.JTS_KEY}={value}"
          + (f" (the previous file is in {saved.name})" if saved else ""))  # fmt: skip
    print("note: IB Gateway rewrites jts.ini when it exits: run this with the gateway closed")
    return 0


# ------------------------------------------------------------------- allow-ips and show


def allow_ips(args: argparse.Namespace) -> int:
    env_file: Path = args.env_file or Path(".env")
    if not env_file.is_file():
        return _fail(f"no env file at {env_file}; run `ibkr-node configure` first")
    try:
        text = envfile.read_text(env_file)
    except (OSError, envfile.EnvFileError) as exc:
        return _fail(f"cannot read {env_file}: {exc}")
    raw = envfile.parse_values(text).get("ALLOWED_IPS", "")
    entries = [item.strip() for item in raw.split(",") if item.strip()]
    try:
        present = {allowed_entry(item) for item in entries}
    except ValueError as exc:
        return _fail(f"ALLOWED_IPS in {env_file}: {exc}; fix that line first")
    added = [entry for entry in args.ips if entry not in present]
    if not added:
        print(f"ALLOWED_IPS already has {', '.join(args.ips)}: {env_file} unchanged")
        return 0
    value = ",".join([*entries, *added])
    new = envfile.set_value(text, "ALLOWED_IPS", value)
    try:
        saved = envfile.backup(env_file)
        envfile.write_atomic(env_file, new.encode("utf-8"), mode=envfile.file_mode(env_file))
    except OSError as exc:
        return _fail(f"cannot write {env_file}: {exc.strerror or exc}")
    print(f"ALLOWED_IPS={value} (added {', '.join(added)}; the previous file is in "
          f"{saved.name})")  # fmt: skip
    return 0


def resolved(settings: Settings) -> dict[str, Any]:
    """The SHOWN variables as the node uses them: derived paths filled in."""
    derived: dict[str, Any] = {
        "AUDIT_DB_PATH": settings.audit_db_path,
        "LOG_FILE_PATH": settings.log_dir,
        "ARM_ORDERS_FILE": settings.arm_orders_file,
        "IBC_INI": settings.ibc_ini,
    }
    out: dict[str, Any] = {}
    for name in SHOWN:
        value = derived[name] if name in derived else getattr(settings, name)
        out[name] = str(value) if isinstance(value, Path) else value
    return out


def show_settings(args: argparse.Namespace) -> int:
    env_file: Path | None = args.env_file
    try:
        settings = load_settings(env_file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if env_file is None and not Path(".env").is_file():
        print(f"{PROG}: no .env in {Path.cwd()}: these are the defaults", file=sys.stderr)
    values = resolved(settings)
    if args.json:
        print(json.dumps(values, indent=2))
        return 0
    for name, value in values.items():
        text = "" if value is None else str(value).lower() if isinstance(value, bool) else value
        print(f"{name}={text}")
    return 0


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2
