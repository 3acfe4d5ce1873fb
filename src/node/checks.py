"""The checks of ``ibkr-node verify``: each looks at one precondition and says PASS, WARN or FAIL.

A FAIL always carries the fix; a WARN is an advisory (the node runs, but look at this). Every
check reads the settings and the disk, probes loopback ports, and at most asks the running
daemon over 127.0.0.1; none of them writes anything but a temporary file it removes at once.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from node.config import ConfigError, Settings

Status = Literal["PASS", "WARN", "FAIL"]
CONFIGURE = "`ibkr-node configure`"
SHORT_KEY = 16  # characters; `ibkr-node keygen` writes 43


@dataclass(frozen=True)
class Check:
    """One line of the report: ``check`` names what was looked at."""

    check: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status} {self.check}: {self.detail}"
        return f"{text} -> {self.fix}" if self.fix else text

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def passed(check: str, detail: str) -> Check:
    return Check(check, "PASS", detail)


def warned(check: str, detail: str, fix: str = "") -> Check:
    return Check(check, "WARN", detail, fix)


def failed(check: str, detail: str, fix: str) -> Check:
    return Check(check, "FAIL", detail, fix)


def split_fix(check: str, message: str, default_fix: str) -> Check:
    """A FAIL from an operator-facing message "what is wrong; what to do"."""
    detail, sep, fix = message.partition("; ")
    return failed(check, detail, fix if sep else default_fix)


# ---------------------------------------------------------------------- configuration

_CONFIG_LINE = re.compile(r"^configuration error: (?P<what>.+?) is invalid: (?P<fix>.+)$")


def env_file_check(env_file: Path | None) -> Check:
    path = env_file if env_file is not None else Path(".env")
    if path.is_file():
        return passed("env file", str(path.resolve()))
    if path.exists():
        return failed("env file", f"{path} is not a file", "give --env-file the path of your .env")
    where = "" if env_file is not None else " (the default: .env in the current folder)"
    return failed(
        "env file",
        f"{path.resolve()} does not exist{where}",
        f"run {CONFIGURE} (writes it), or give `--env-file PATH` before the command",
    )


def config_error_checks(error: ConfigError) -> list[Check]:
    """One FAIL per line of a ConfigError (one line per bad variable)."""
    results = []
    for line in str(error).splitlines():
        match = _CONFIG_LINE.match(line)
        if match:
            results.append(failed("configuration", f"{match['what']} is invalid", match["fix"]))
        else:
            results.append(split_fix("configuration", line, "correct it in the env file"))
    return results


# ---------------------------------------------------------------------- folders


def _writable(folder: Path) -> OSError | None:
    """None when a file can be created (and removed) in ``folder``; the error otherwise."""
    try:
        fd, name = tempfile.mkstemp(prefix=".ibkr-node-verify-", dir=folder)
    except OSError as exc:
        return exc
    os.close(fd)
    try:
        os.unlink(name)
    except OSError as exc:
        return exc
    return None


def _nearest_existing(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(path.anchor or ".")


def folder_check(check: str, variable: str, folder: Path, *, created_by_daemon: bool) -> Check:
    """The folder exists (or the daemon can create it) and a file can be written there.

    ``created_by_daemon``: the daemon creates the folder at start (log dir, audit db folder),
    so a missing one is fine when its nearest existing parent is writable. STATE_DIR is one
    that ``ibkr-node configure`` creates: missing means configure was not run.
    """
    change = f"or set {variable} to a folder this account can write"
    if not folder.exists():
        if created_by_daemon:
            parent = _nearest_existing(folder)
            problem = _writable(parent) if parent.is_dir() else None
            if parent.is_dir() and problem is None:
                return passed(
                    check,
                    f"{folder} does not exist yet; the daemon creates it ({parent} is writable)",
                )
            reason = problem.strerror if problem else "not a folder"
            return failed(
                check,
                f"{folder} does not exist and cannot be created ({parent}: {reason})",
                f"create it (mkdir {folder}) with write access for this account, {change}",
            )
        return failed(
            check,
            f"{variable} {folder} does not exist",
            f"run {CONFIGURE} (creates it) or create it: mkdir {folder}",
        )
    if not folder.is_dir():
        return failed(check, f"{folder} is not a folder", f"move that file aside, {change}")
    problem = _writable(folder)
    if problem is not None:
        return failed(
            check,
            f"{folder} is not writable ({problem.strerror or problem})",
            f"give this account write access to {folder}, {change}",
        )
    return passed(check, f"{folder} is writable")


def state_dir_check(settings: Settings) -> Check:
    return folder_check("state dir", "STATE_DIR", settings.STATE_DIR, created_by_daemon=False)


def log_dir_check(settings: Settings) -> Check:
    folder, sync = settings.log_dir, settings.GDRIVE_BASE_PATH
    if sync is not None and not sync.exists() and _inside(folder, sync):
        # The sync folder line fails for this; creating logs/ there would fake the folder.
        return warned(
            "log dir",
            f"{folder} is inside the sync folder {sync}, which does not exist",
            "see the sync folder line",
        )
    return _in_state_dir(settings, "log dir", folder) or folder_check(
        "log dir", "LOG_FILE_PATH", folder, created_by_daemon=True
    )


def _in_state_dir(settings: Settings, check: str, folder: Path) -> Check | None:
    """A WARN pointing at the state dir line when ``folder`` is in a STATE_DIR that failed."""
    state = settings.STATE_DIR
    if state.is_dir() or not _inside(folder, state):
        return None
    return warned(
        check,
        f"not checked: {folder} goes in STATE_DIR {state}, which is not a folder yet",
        "see the state dir line",
    )


def audit_db_check(settings: Settings) -> Check:
    path = settings.audit_db_path
    sync = settings.GDRIVE_BASE_PATH
    if sync is not None and _inside(path, sync):
        return failed(
            "audit db",
            f"AUDIT_DB_PATH {path} is inside the sync folder {sync}: the daemon refuses it "
            "(a sync client copying a live SQLite database can corrupt or fork it)",
            f"set AUDIT_DB_PATH to a local folder outside {sync}, e.g. "
            f"{settings.STATE_DIR / 'audit.db'} (snapshots still go to {sync / 'audit.db'})",
        )
    if path.is_dir():
        return failed(
            "audit db",
            f"AUDIT_DB_PATH {path} is a folder",
            "set AUDIT_DB_PATH to a file name, e.g. audit.db in STATE_DIR",
        )
    deferred = _in_state_dir(settings, "audit db", path)
    if deferred is not None:
        return deferred
    result = folder_check("audit db", "AUDIT_DB_PATH", path.parent, created_by_daemon=True)
    if result.status == "PASS":
        return passed("audit db", f"{path}: {result.detail}")
    return result


# ---------------------------------------------------------------------- launcher and gateway

LAUNCHER_NOTES = {
    "ibc": "IBC starts IB Gateway and logs in",
    "exe": "the node starts IB Gateway; you log in by hand",
    "external": "the node attaches to a gateway someone else runs; it never starts or stops it",
}


def launcher_check(settings: Settings) -> Check:
    name = settings.GATEWAY_LAUNCHER
    if name is None:
        return failed(
            "launcher",
            "GATEWAY_LAUNCHER is not set: `ibkr-node run` refuses to start",
            "set GATEWAY_LAUNCHER to ibc, exe, external or sim in the env file "
            "(`ibkr-node configure --launcher ibc`), or try the node with `ibkr-node run --demo`",
        )
    if name == "sim":
        return warned(
            "launcher",
            "sim: a SIMULATED gateway with fake money; nothing reaches Interactive Brokers",
            "set GATEWAY_LAUNCHER to ibc, exe or external to trade through IB",
        )
    return passed("launcher", f"{name}: {LAUNCHER_NOTES.get(name, 'a launcher plugin')}")


def gateway_check(settings: Settings) -> Check | None:
    """The gateway (and IBC) installed where the launcher needs them; None without a launcher."""
    name = settings.GATEWAY_LAUNCHER
    if name is None:
        return None
    if name == "sim":
        return passed("gateway", "sim: nothing to install (the simulator is built in)")
    if name == "external":
        return passed(
            "gateway",
            f"external: nothing to install; the gateway must listen on "
            f"{settings.IBKR_GATEWAY_HOST}:{settings.gateway_port}",
        )
    if name == "ibc":
        return _ibc_installed(settings)
    if name == "exe":
        return _exe_installed(settings)
    return _plugin_installed(settings)


def _ibc_installed(settings: Settings) -> Check:
    from node.plugins.launchers.ibc import start_script

    ibc_path = settings.IBC_PATH
    set_it = "(`ibkr-node configure --ibc-path PATH`)"
    if ibc_path is None:
        return failed(
            "gateway",
            "GATEWAY_LAUNCHER=ibc but IBC_PATH is not set",
            f"set IBC_PATH to IBC's folder {set_it}",
        )
    if not ibc_path.exists():
        return failed(
            "gateway",
            f"IBC_PATH {ibc_path} does not exist",
            f"install IBC there, or set IBC_PATH to IBC's folder {set_it}",
        )
    if not ibc_path.is_dir():
        return failed(
            "gateway",
            f"IBC_PATH {ibc_path} is not a folder",
            f"set IBC_PATH to IBC's folder {set_it}",
        )
    script = start_script(ibc_path)
    if not script.is_file():
        return failed(
            "gateway",
            f"IBC's start script {script} is missing",
            f"set IBC_PATH to the folder holding {script.name} (IBC's install folder) {set_it}",
        )
    if sys.platform != "win32" and not os.access(script, os.X_OK):
        return failed(
            "gateway", f"IBC's start script {script} is not executable", f"chmod +x {script}"
        )
    gateway = settings.IBKR_GATEWAY_PATH
    if gateway is not None and not gateway.exists():
        return failed(
            "gateway",
            f"IBKR_GATEWAY_PATH {gateway} does not exist",
            "install IB Gateway there, or set IBKR_GATEWAY_PATH to its install folder "
            "(`ibkr-node configure --gateway-path PATH`)",
        )
    where = f"gateway {gateway}" if gateway is not None else "gateway as the start script says"
    return passed("gateway", f"ibc: {script}, {where}")


def _exe_installed(settings: Settings) -> Check:
    from node.plugins.launchers.base import GatewayEndpoint, LaunchError
    from node.plugins.launchers.exe import ExeLauncher

    path = settings.IBKR_GATEWAY_PATH
    set_it = "(`ibkr-node configure --gateway-path PATH`)"
    if path is None:
        return failed(
            "gateway",
            "GATEWAY_LAUNCHER=exe but IBKR_GATEWAY_PATH is not set",
            f"set IBKR_GATEWAY_PATH to the gateway executable {set_it}",
        )
    endpoint = GatewayEndpoint(settings.IBKR_GATEWAY_HOST, settings.gateway_port)
    try:
        ExeLauncher(path, endpoint).check_config()
    except LaunchError as exc:
        return split_fix("gateway", str(exc), f"fix IBKR_GATEWAY_PATH {set_it}")
    return passed("gateway", f"exe: {path}")


def _plugin_installed(settings: Settings) -> Check:
    from node.plugins.launchers.base import LaunchError
    from node.runtime import StartupError, build_launcher

    name = settings.GATEWAY_LAUNCHER
    try:
        build_launcher(settings).check_config()
    except (LaunchError, StartupError, ValueError) as exc:
        return split_fix("gateway", f"{name}: {exc}", f"fix the settings the {name} launcher reads")
    return passed("gateway", f"{name}: the launcher plugin's own checks pass")


def ibc_config_check(settings: Settings) -> Check | None:
    """IBC's config.ini has what the ibc launcher relies on; None for other launchers."""
    if settings.GATEWAY_LAUNCHER != "ibc":
        return None
    from node.plugins.launchers.base import LaunchError
    from node.plugins.launchers.ibc import check_ibc_settings, parse_ibc_ini

    ibc_path = settings.IBC_PATH
    if settings.IBC_INI is None and ibc_path is not None and not ibc_path.is_dir():
        return warned(
            "ibc config",
            f"not checked: config.ini is looked for in IBC_PATH {ibc_path}, which is not a folder",
            "see the gateway line",
        )
    ini = settings.ibc_ini
    write_it = "run `ibkr-node configure ibc` (setup-ibkr-autologin.ps1 on Windows)"
    if ini is None:
        return failed(
            "ibc config",
            "IBC_INI is not set and neither is IBC_PATH",
            "set IBC_PATH (config.ini is looked for there) or IBC_INI",
        )
    if not ini.is_file():
        return failed(
            "ibc config",
            f"IBC_INI {ini} does not exist",
            f"{write_it}, or set IBC_INI to IBC's config.ini",
        )
    try:
        text = ini.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return failed(
            "ibc config",
            f"IBC_INI {ini} cannot be read ({exc.strerror})",
            f"give this account read access to {ini}",
        )
    values = parse_ibc_ini(text)
    try:
        check_ibc_settings(
            values,
            ini=ini,
            trading_mode=settings.TRADING_MODE,
            command_port=settings.IBC_COMMAND_PORT,
        )
    except LaunchError as exc:
        return split_fix("ibc config", str(exc), write_it)
    script_problem = _ibc_script_problem(settings, ini)
    if script_problem is not None:
        return script_problem
    if _open_to_others(ini):
        return warned(
            "ibc config",
            f"{ini} (it holds the IB login) is readable by other users",
            f"chmod 600 {ini}",
        )
    return passed(
        "ibc config",
        f"{ini}: TradingMode={values['TradingMode']}, command server on "
        f"127.0.0.1:{settings.IBC_COMMAND_PORT}",
    )


def _ibc_script_problem(settings: Settings, ini: Path) -> Check | None:
    """The start script's own IBC_INI / TRADING_MODE lines, which override config.ini."""
    from node.plugins.launchers.ibc import _expand, _same_path, script_settings, start_script

    if settings.IBC_PATH is None:
        return None
    script = start_script(settings.IBC_PATH)
    windows = sys.platform == "win32"
    try:
        found = script_settings(
            script.read_text(encoding="utf-8", errors="replace"), windows=windows
        )
    except OSError:
        return None  # the gateway check reports a missing or unreadable script
    variable = "set CONFIG" if windows else "IBC_INI"
    configured = found.get("IBC_INI")
    if configured is None:
        return warned(
            "ibc config",
            f"{script} sets no {variable}: cannot check that IBC reads {ini}",
            f"set the line `{variable}={ini}` in {script}",
        )
    expanded = _expand(configured, windows=windows)
    if expanded is None:
        return warned(
            "ibc config",
            f"{script}: cannot expand {variable}={configured}: cannot check that IBC reads {ini}",
            f"write the path out: `{variable}={ini}`",
        )
    if not _same_path(Path(expanded), ini, windows=windows):
        return failed(
            "ibc config",
            f"{script}: {variable}={configured} but IBC_INI is {ini}",
            f"set the line to `{variable}={ini}` (IBC reads its config from it)",
        )
    mode = found.get("TRADING_MODE", "")
    if mode and mode.lower() != settings.TRADING_MODE:
        name = "set TRADING_MODE" if windows else "TRADING_MODE"
        return failed(
            "ibc config",
            f"{script}: {name}={mode} overrides config.ini but TRADING_MODE is "
            f"{settings.TRADING_MODE}",
            f"set the line to `{name}=` (empty)",
        )
    return None


# ---------------------------------------------------------------------- the running daemon


@dataclass(frozen=True)
class DaemonProbe:
    """Whether a daemon holds STATE_DIR's lock, and what its API said."""

    running: bool
    pid: int | None = None
    answers: bool = False
    health: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    problem: str = ""

    @property
    def holder(self) -> str:
        return f"pid {self.pid}" if self.pid is not None else "pid unknown"


def lock_holder(state_dir: Path) -> tuple[bool, int | None]:
    """(held, pid written in it): a probe of the daemon's lock that never creates or writes it.

    Taking the lock for an instant is the only way to ask the OS; it is released at once.
    """
    from node.lockfile import LOCK_NAME, _lock, _read_pid, _unlock

    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False, None
    except OSError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False, None
    try:
        try:
            _lock(fd)
        except OSError:
            return True, _read_pid(fd)
        _unlock(fd)
        return False, None
    finally:
        os.close(fd)


def probe_daemon(settings: Settings) -> DaemonProbe:
    held, pid = lock_holder(settings.STATE_DIR)
    if not held:
        return DaemonProbe(running=False)
    import httpx

    from node import ctl

    key = ctl.local_key(settings)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    scheme = "https" if settings.TLS_CERT_FILE else "http"
    url = f"{scheme}://127.0.0.1:{settings.API_PORT}/health"
    try:
        # verify=False as in ctl: on loopback the peer is us, whatever certificate it shows.
        response = httpx.get(url, headers=headers, timeout=ctl.TIMEOUT, verify=False)
    except httpx.HTTPError as exc:
        return DaemonProbe(True, pid, problem=f"GET /health: {exc or type(exc).__name__}")
    if response.status_code == 401:
        return DaemonProbe(True, pid, answers=True, problem="the daemon refused the API key")
    try:
        health: dict[str, Any] = response.json()
    except ValueError:
        return DaemonProbe(
            True,
            pid,
            problem=f"GET /health answered {response.status_code} without a health document",
        )
    try:
        state = ctl.get_state(settings)
    except ctl.CtlError as exc:
        return DaemonProbe(True, pid, answers=True, health=health, problem=f"GET /v1/state: {exc}")
    return DaemonProbe(True, pid, answers=True, health=health, state=state)


def api_check(settings: Settings, daemon: DaemonProbe) -> Check:
    where = f"127.0.0.1:{settings.API_PORT}"
    if not daemon.running:
        return passed("api", "the daemon is not running (STATE_DIR's lock is free); nothing to ask")
    if not daemon.answers:
        return failed(
            "api",
            f"the daemon ({daemon.holder}) holds STATE_DIR but its API does not answer on "
            f"{where} ({daemon.problem})",
            f"read its log ({settings.log_dir / 'api.log'}); if it hangs, end {daemon.holder} "
            "and start it again; check that API_PORT in the env file is the daemon's",
        )
    if daemon.problem:
        return failed(
            "api",
            f"the daemon ({daemon.holder}) answers on {where} but {daemon.problem}",
            "use the key the daemon loaded: API_KEY / API_KEY_FILE of this env file (a "
            "daemon started with another env file has other keys)",
        )
    health, state = daemon.health or {}, daemon.state or {}
    return passed(
        "api",
        f"the daemon ({daemon.holder}) answers on {where}: /health {health.get('status')}, "
        f"/v1/state {state.get('state')} ({state.get('reason')})",
    )


# ---------------------------------------------------------------------- ports


def _api_hosts(settings: Settings) -> list[str]:
    from node.http_server import bind_addresses

    hosts = []
    for bind in bind_addresses(settings.API_BIND_HOST, settings.API_PORT):
        host = bind.rsplit(":", 1)[0]
        hosts.append(host[1:-1] if host.startswith("[") else host)
    return hosts


def bind_error(host: str, port: int) -> OSError | None:
    """None when ``host:port`` could be bound now, as the daemon binds it; the error otherwise."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            if sys.platform != "win32":
                # As Hypercorn does: a closed connection's TIME_WAIT does not hold the port. On
                # Windows the option would let the bind succeed over a listener; leave it.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        return exc
    return None


def api_port_check(settings: Settings, daemon: DaemonProbe) -> Check:
    from node import procutil

    port = settings.API_PORT
    hosts = _api_hosts(settings)
    for host in hosts:
        problem = bind_error(host, port)
        if problem is None:
            continue
        if problem.errno == errno.EADDRNOTAVAIL or isinstance(problem, socket.gaierror):
            return failed(
                "api port",
                f"API_BIND_HOST {host} is not an address of this machine",
                "set API_BIND_HOST to this laptop's LAN IP (`ibkr-node configure --lan-ip IP`)",
            )
        if problem.errno != errno.EADDRINUSE:
            return failed(
                "api port",
                f"cannot listen on {host}:{port} ({problem.strerror})",
                "choose another API_PORT (`ibkr-node configure --api-port N`)",
            )
        if daemon.running and daemon.answers:
            return passed(
                "api port",
                f"API_PORT {port} on {', '.join(hosts)} is held by the "
                f"node (daemon {daemon.holder})",
            )
        holder = procutil.port_holder(host, port) or "a process that does not accept connections"
        also = f"; the daemon ({daemon.holder}) does not answer there" if daemon.running else ""
        return failed(
            "api port",
            f"API_PORT {port} on {host} is held by {holder}{also}",
            "stop that program, or choose another API_PORT (`ibkr-node configure --api-port N`)",
        )
    return passed("api port", f"API_PORT {port} is free on {', '.join(hosts)}")


def _held_port_check(
    check: str, variable: str, host: str, port: int, daemon: DaemonProbe, fix: str
) -> Check:
    from node import procutil

    holder = procutil.port_holder(host, port)
    if holder is None:
        return passed(check, f"{variable} {port} is free on {host}")
    held = f"{variable} {port} on {host} is held by {holder}"
    if daemon.running and daemon.answers:
        gateway_pid = ((daemon.state or {}).get("gateway") or {}).get("pid")
        if gateway_pid is not None:
            if holder.startswith(f"pid {gateway_pid} ") or holder == f"pid {gateway_pid}":
                return passed(check, f"{held}: the node's gateway")
            return passed(
                check,
                f"{held}, while the node's gateway (pid {gateway_pid}) runs: its process tree",
            )
        return failed(check, f"{held}, but the node's gateway is not running", fix)
    return failed(check, f"{held}, which the node would not have started", fix)


def gateway_port_checks(settings: Settings, daemon: DaemonProbe) -> list[Check]:
    """The ports a gateway the node starts will listen on; nothing for ``external``."""
    name = settings.GATEWAY_LAUNCHER
    if name not in ("sim", "ibc", "exe"):
        return []
    variable = "PAPER_GATEWAY_PORT" if settings.TRADING_MODE == "paper" else "LIVE_GATEWAY_PORT"
    results = [
        _held_port_check(
            "gateway port",
            variable,
            settings.IBKR_GATEWAY_HOST,
            settings.gateway_port,
            daemon,
            f"stop it (a gateway started by hand?), set GATEWAY_LAUNCHER=external to attach to "
            f"it, or choose another {variable}",
        )
    ]
    if name == "sim":
        results.append(
            _held_port_check(
                "sim control port",
                "SIM_CONTROL_PORT",
                "127.0.0.1",
                settings.sim_control_port,
                daemon,
                "stop that program, or set SIM_CONTROL_PORT to a free port",
            )
        )
    if name == "ibc":
        results.append(
            _held_port_check(
                "ibc command port",
                "IBC_COMMAND_PORT",
                "127.0.0.1",
                settings.IBC_COMMAND_PORT,
                daemon,
                "stop that program, or choose another IBC_COMMAND_PORT (and "
                "CommandServerPort in config.ini)",
            )
        )
    return results


# ---------------------------------------------------------------------- keys and files


def _open_to_others(path: Path) -> bool:
    """POSIX: group or others may read or write it. Windows: ACLs, which verify.ps1 checks."""
    if sys.platform == "win32":
        return False
    try:
        return bool(stat.S_IMODE(path.stat().st_mode) & 0o077)
    except OSError:
        return False


def api_key_check(settings: Settings) -> Check:
    from node.api.keys import KeyRing

    path = settings.API_KEY_FILE
    notes: list[str] = []
    if settings.API_KEY:
        if len(settings.API_KEY) < SHORT_KEY:
            return warned(
                "api key",
                f"API_KEY is only {len(settings.API_KEY)} characters",
                "use `ibkr-node keygen` for a strong key and remove API_KEY",
            )
        notes.append("API_KEY is set")
        if not path.exists():
            return passed("api key", f"{notes[0]} (no API_KEY_FILE {path})")
    if not path.exists():
        return failed(
            "api key",
            f"no API key: API_KEY is not set and API_KEY_FILE {path} does not exist",
            "run `ibkr-node keygen` (writes it), then give the key to the Pi",
        )
    if not path.is_file():
        return failed(
            "api key",
            f"API_KEY_FILE {path} is not a file",
            "move it aside and run `ibkr-node keygen`",
        )
    try:
        keys = KeyRing.read_file(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        return failed(
            "api key",
            f"API_KEY_FILE {path} cannot be read ({reason})",
            f"give this account read access to {path}, or run `ibkr-node keygen --rotate`",
        )
    if not keys:
        if notes:
            return warned(
                "api key",
                f"API_KEY is set but API_KEY_FILE {path} is empty",
                "remove the empty file or run `ibkr-node keygen`",
            )
        return failed(
            "api key",
            f"API_KEY_FILE {path} is empty: no key",
            "run `ibkr-node keygen` (writes a key), then give it to the Pi",
        )
    if len(keys[0]) < SHORT_KEY:
        return warned(
            "api key",
            f"the key in {path} is only {len(keys[0])} characters",
            "run `ibkr-node keygen --rotate` for a strong key",
        )
    if _open_to_others(path):
        return warned(
            "api key", f"API_KEY_FILE {path} is readable by other users", f"chmod 600 {path}"
        )
    count = "current and previous key" if len(keys) > 1 else "one key"
    notes.append(f"API_KEY_FILE {path} holds {count}")
    return passed("api key", "; ".join(notes))


def _inside(path: Path, folder: Path) -> bool:
    resolved, base = path.expanduser().resolve(), folder.expanduser().resolve()
    return resolved == base or resolved.is_relative_to(base)


def sync_folder_check(settings: Settings) -> Check:
    folder = settings.GDRIVE_BASE_PATH
    change = "(`ibkr-node configure --sync-folder PATH`)"
    if folder is None:
        return passed(
            "sync folder",
            f"GDRIVE_BASE_PATH is not set: no audit snapshots; logs in {settings.log_dir}",
        )
    if not folder.exists():
        return failed(
            "sync folder",
            f"GDRIVE_BASE_PATH {folder} does not exist",
            f"start the sync client (Google Drive for desktop) so the folder appears, or fix "
            f"GDRIVE_BASE_PATH {change}",
        )
    if not folder.is_dir():
        return failed(
            "sync folder",
            f"GDRIVE_BASE_PATH {folder} is not a folder",
            f"set GDRIVE_BASE_PATH to the synced folder {change}",
        )
    problem = _writable(folder)
    if problem is not None:
        return failed(
            "sync folder",
            f"GDRIVE_BASE_PATH {folder} is not writable ({problem.strerror})",
            f"check the sync client and this account's access to {folder}",
        )
    return passed("sync folder", f"{folder} is present and writable")


def arm_file_check(settings: Settings) -> Check:
    path = settings.arm_orders_file
    sync = settings.GDRIVE_BASE_PATH
    orders = f"ORDERS_ENABLED={'true' if settings.ORDERS_ENABLED else 'false'}"
    if sync is not None and _inside(path, sync):
        return warned(
            "arm file",
            f"{path} is inside the synced folder {sync}: anyone signed in to that account, on "
            "any device, can arm orders by creating it",
            f"set ARM_ORDERS_FILE to a local path, e.g. "
            f"{settings.STATE_DIR / 'arm_orders_confirmed.txt'}",
        )
    armed = "present: armed" if path.exists() else "absent: not armed"
    return passed("arm file", f"{path} (local; {armed}; {orders})")


# ---------------------------------------------------------------------- time and mode


def timezone_check(settings: Settings, now: datetime | None = None) -> Check:
    # As node.runtime.run_window builds it; importing the runtime (the daemon, ib_async)
    # would cost verify a second.
    from node.clock import RunWindow, parse_days

    try:
        window = RunWindow(
            parse_days(settings.RUN_WINDOW_DAYS),
            settings.window_start,
            settings.window_end,
            settings.window_zone,
        )
    except ValueError as exc:  # config validated it; tzdata missing would end here
        return split_fix("timezone", str(exc), "set RUN_WINDOW_TIMEZONE to an IANA zone name")
    now = now or datetime.now(UTC)
    is_open = window.is_open(now)
    change = window.next_change(now)
    local = now.astimezone(window.zone)
    text = (
        f"{settings.RUN_WINDOW_TIMEZONE} (now {local:%Y-%m-%d %H:%M %Z}); window "
        f"{window.describe()}, {'open' if is_open else 'closed'} now"
    )
    if change is None:
        return passed("timezone", f"{text}, never changes")
    verb = "closes" if is_open else "opens"
    return passed("timezone", f"{text}, {verb} {change:%a %Y-%m-%d %H:%M %Z}")


def trading_mode_check(settings: Settings) -> Check:
    if settings.TRADING_MODE == "paper":
        return passed("trading mode", "paper")
    override = settings.LIVE_TRADING_OVERRIDE_FILE
    if override is None:
        gate = "no LIVE_TRADING_OVERRIDE_FILE: live orders are refused"
    elif override.exists():
        gate = f"LIVE_TRADING_OVERRIDE_FILE {override} EXISTS: live orders can go out"
    else:
        gate = f"LIVE_TRADING_OVERRIDE_FILE {override} is absent: live orders are refused"
    return warned(
        "trading mode",
        f"LIVE: TRADING_MODE=live, a REAL-MONEY account ({gate})",
        "set TRADING_MODE=paper unless you mean to trade real money",
    )
