"""The ``ibc`` launcher: IB Gateway through IBC's start script, with IBC logging in.

IBC's config.ini (``IBC_INI``) was written once, with the credentials, by
``setup-ibkr-autologin.ps1``; this launcher never writes or passes credentials. It checks the
settings it relies on and refuses, naming the line to fix, when one differs.

How IBC finds its config.ini: the gateway start scripts take no path argument (only
``/INLINE`` or ``-inline``); each sets the location in a variable near its top
(``set CONFIG=...`` in ``StartGateway.bat``, ``IBC_INI=...`` in ``gatewaystart.sh``) and
overrides the environment with it. So ``check_config`` reads that line and refuses when it
names another file than ``IBC_INI``; it also refuses a ``TRADING_MODE`` set there that differs
from ours, because the script's value overrides config.ini's ``TradingMode``.

Stopping: IBC's command server (``CommandServerPort`` on 127.0.0.1) takes ``STOP``, answers a
line starting with ``OK`` or ``ERROR`` and closes the gateway; after ``timeout`` the process
tree is killed.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream
from loguru import logger

from node.plugins.launchers.base import (
    GatewayEndpoint,
    LaunchError,
    LoginFailure,
    ProcessLauncher,
    Run,
)

COMMAND_HOST = "127.0.0.1"
COMMAND_TIMEOUT = 10.0  # seconds to connect, send a command and read its reply
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# IBC's exit code when the second-factor dialog timed out (ErrorCodes.java; a POSIX exit code
# keeps it modulo 256). Best effort: IBC's scripts may not pass it through.
SECOND_FACTOR_TIMEOUT_CODES = frozenset({1111, 1111 % 256})


def parse_ibc_ini(text: str) -> dict[str, str]:
    """IBC's config.ini: ``Key=Value`` lines, ``#`` (or ``!``) comments, no sections.

    Keys are case-sensitive as IBC reads them; a repeated key keeps its last value.
    """
    settings: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if sep:
            settings[key.strip()] = value.strip()
    return settings


def check_ibc_settings(
    settings: dict[str, str], *, ini: Path, trading_mode: str, command_port: int
) -> None:
    """Refuse (LaunchError naming the key, the expected value and the file) what we rely on."""

    def refuse(key: str, expected: str, why: str) -> LaunchError:
        actual = settings.get(key)
        found = f"is {actual!r}" if actual is not None else "is missing"
        return LaunchError(f"{ini}: {key} {found}; set the line `{key}={expected}` ({why})")

    mode = trading_mode.strip().lower()
    if settings.get("TradingMode", "").lower() != mode:
        raise refuse("TradingMode", mode, f"TRADING_MODE is {mode}")
    if settings.get("AcceptNonBrokerageAccountWarning", "").lower() != "yes":
        raise refuse(
            "AcceptNonBrokerageAccountWarning", "yes", "the paper-account warning blocks login"
        )
    if settings.get("ExistingSessionDetectedAction", "").lower() != "primary":
        raise refuse(
            "ExistingSessionDetectedAction",
            "primary",
            "this node's session must win over another login",
        )
    if settings.get("CommandServerPort", "") != str(command_port):
        raise refuse(
            "CommandServerPort", str(command_port), "IBC_COMMAND_PORT; the node stops IBC there"
        )
    if settings.get("BindAddress", "") != COMMAND_HOST:
        raise refuse(
            "BindAddress", COMMAND_HOST, "IBC's command server has no password: loopback only"
        )
    allowed = [entry.strip() for entry in settings.get("ControlFrom", "").split(",")]
    if any(entry and entry.lower() not in LOOPBACK for entry in allowed):
        raise refuse("ControlFrom", "", "commands from other hosts are not accepted; empty is fine")


def start_script(ibc_path: Path, *, windows: bool | None = None) -> Path:
    windows = sys.platform == "win32" if windows is None else windows
    return ibc_path / ("StartGateway.bat" if windows else "gatewaystart.sh")


def script_settings(text: str, *, windows: bool) -> dict[str, str]:
    """The config location and trading mode a start script sets (``CONFIG``/``IBC_INI``)."""
    pattern = (
        r"^\s*set\s+(CONFIG|TRADING_MODE)=(.*)$" if windows else r"^\s*(IBC_INI|TRADING_MODE)=(.*)$"
    )
    found: dict[str, str] = {}
    for match in re.finditer(pattern, text, re.MULTILINE | (re.IGNORECASE if windows else 0)):
        key = "IBC_INI" if match.group(1).upper() in ("CONFIG", "IBC_INI") else "TRADING_MODE"
        found[key] = match.group(2).strip().strip('"').strip("'")
    return found


def _expand(value: str, *, windows: bool) -> str | None:
    """A start script's path with its variables expanded; None if one cannot be."""
    if windows:
        value = re.sub(r"%([^%]+)%", lambda m: os.environ.get(m.group(1), m.group(0)), value)
        return None if "%" in value else value
    value = os.path.expandvars(os.path.expanduser(value))
    return None if "$" in value else value


def _same_path(a: Path, b: Path, *, windows: bool) -> bool:
    left, right = str(a.expanduser().resolve()), str(b.expanduser().resolve())
    return left.lower() == right.lower() if windows else left == right


async def send_ibc_command(
    port: int,
    command: str = "STOP",
    *,
    host: str = COMMAND_HOST,
    prompt: str = "",
) -> str:
    """Send one command to IBC's command server; return its ``OK ...``/``ERROR ...`` line.

    ``INFO`` lines are skipped; a connection closed before a reply returns "". Raises OSError
    when nothing listens. Unbounded: the caller wraps it in ``anyio.fail_after``.
    """
    async with await anyio.connect_tcp(host, port) as stream:
        await stream.send(command.encode() + b"\n")
        reader = BufferedByteReceiveStream(stream)
        while True:
            try:
                raw = await reader.receive_until(b"\n", 64 * 1024)
            except (
                anyio.IncompleteRead,
                anyio.EndOfStream,
                anyio.BrokenResourceError,
                anyio.DelimiterNotFound,
            ):
                return ""
            line = raw.decode(errors="replace").strip()
            if prompt and line.startswith(prompt):
                line = line[len(prompt) :].strip()
            if line.startswith(("OK", "ERROR")):
                return line


class IbcLauncher(ProcessLauncher):
    """IBC's gateway start script, inline; stop with IBC's STOP command, then kill the tree."""

    name = "ibc"
    log_prefix = "ibc"

    def __init__(
        self,
        ibc_path: Path,
        ibc_ini: Path,
        gateway_path: Path | None,
        trading_mode: str,
        command_port: int,
        endpoint: GatewayEndpoint,
        *,
        stop_timeout: float = 60.0,
    ) -> None:
        super().__init__(endpoint, stop_timeout=stop_timeout)
        self.ibc_path = Path(ibc_path)
        self.ibc_ini = Path(ibc_ini)
        self.gateway_path = Path(gateway_path) if gateway_path is not None else None
        self.trading_mode = trading_mode
        self.command_port = command_port
        self._prompt = ""

    @property
    def script(self) -> Path:
        return start_script(self.ibc_path)

    def check_config(self) -> None:
        windows = sys.platform == "win32"
        if not self.ibc_path.is_dir():
            raise LaunchError(f"IBC_PATH {self.ibc_path} is not a folder; set it to IBC's folder")
        script = self.script
        if not script.is_file():
            raise LaunchError(
                f"IBC's start script {script} is missing; check IBC_PATH ({self.ibc_path})"
            )
        if not windows and not os.access(script, os.X_OK):
            raise LaunchError(f"IBC's start script {script} is not executable; chmod +x it")
        if not self.ibc_ini.is_file():
            raise LaunchError(
                f"IBC_INI {self.ibc_ini} does not exist; run setup-ibkr-autologin.ps1 or set "
                "IBC_INI to IBC's config.ini"
            )
        if self.gateway_path is not None and not self.gateway_path.exists():
            raise LaunchError(
                f"IBKR_GATEWAY_PATH {self.gateway_path} does not exist; set it to the gateway's "
                "install folder"
            )
        self._check_script(script, windows=windows)
        try:
            text = self.ibc_ini.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise LaunchError(f"IBC_INI {self.ibc_ini} cannot be read: {exc.strerror}") from exc
        settings = parse_ibc_ini(text)
        check_ibc_settings(
            settings,
            ini=self.ibc_ini,
            trading_mode=self.trading_mode,
            command_port=self.command_port,
        )
        self._prompt = settings.get("CommandPrompt", "")

    def _check_script(self, script: Path, *, windows: bool) -> None:
        try:
            text = script.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise LaunchError(f"IBC's start script {script} cannot be read: {exc}") from exc
        found = script_settings(text, windows=windows)
        variable = "set CONFIG" if windows else "IBC_INI"
        configured = found.get("IBC_INI")
        if configured is None:
            logger.warning("ibc: {} sets no {}; cannot check it names IBC_INI", script, variable)
        else:
            expanded = _expand(configured, windows=windows)
            if expanded is None:
                logger.warning(
                    "ibc: {}: cannot expand {}={}; cannot check it names IBC_INI",
                    script,
                    variable,
                    configured,
                )
            elif not _same_path(Path(expanded), self.ibc_ini, windows=windows):
                raise LaunchError(
                    f"{script}: {variable}={configured} but IBC_INI is {self.ibc_ini}; IBC reads "
                    f"its config from that line: set it to `{variable}={self.ibc_ini}`"
                )
        mode = found.get("TRADING_MODE", "")
        if mode and mode.lower() != self.trading_mode.lower():
            name = "set TRADING_MODE" if windows else "TRADING_MODE"
            raise LaunchError(
                f"{script}: {name}={mode} overrides config.ini's TradingMode but TRADING_MODE is "
                f"{self.trading_mode}; set the line to `{name}=` (empty)"
            )

    def _command(self) -> list[str]:
        script = str(self.script)
        if sys.platform == "win32":
            return [os.environ.get("COMSPEC", "cmd.exe"), "/c", script, "/INLINE"]
        return [script, "-inline"]

    async def start(self) -> None:
        self.check_config()
        await self._spawn()

    async def wait_exited(self) -> int | None:
        code = await super().wait_exited()
        if code in SECOND_FACTOR_TIMEOUT_CODES:
            raise LoginFailure(
                f"ibc: the login's second factor was not confirmed in time (IBC exit code {code})"
            )
        return code

    async def _request_stop(self, run: Run) -> None:
        try:
            with anyio.fail_after(COMMAND_TIMEOUT):
                reply = await send_ibc_command(self.command_port, "STOP", prompt=self._prompt)
        except (OSError, TimeoutError) as exc:
            logger.warning(
                "ibc: STOP to 127.0.0.1:{} failed ({}); terminating the process tree",
                self.command_port,
                exc or type(exc).__name__,
            )
            run.child.terminate_tree()
            return
        if reply.startswith("ERROR"):
            logger.warning("ibc: STOP answered {!r}; terminating the process tree", reply)
            run.child.terminate_tree()
        else:
            logger.info("ibc: STOP answered {!r}", reply or "(closed)")
