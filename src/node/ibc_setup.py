"""IBC's config.ini and the gateway's jts.ini, as ``ibkr-node configure ibc`` writes them.

config.ini: IBC reads it with ``java.util.Properties`` (ISO-8859-1, backslash escapes), so
the login is escaped accordingly; the settings are those the ibc launcher checks at each
start (``node.plugins.launchers.ibc.check_ibc_settings``) plus IBC's keys for an unattended
gateway. jts.ini: an INI file the gateway owns; only ``TrustedIPs`` in ``[IBGateway]`` is
changed, every other byte kept.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from datetime import datetime
from pathlib import Path, PurePath

from node.plugins.launchers.ibc import (
    COMMAND_HOST,
    check_ibc_settings,
    parse_ibc_ini,
    script_settings,
    start_script,
)

# The gateway's own API ports; OverrideTwsApiPort is set only when the node expects another.
IB_DEFAULT_PORTS = {"paper": 4002, "live": 4001}
JTS_SECTION = "IBGateway"
JTS_KEY = "TrustedIPs"


class IbcSetupError(ValueError):
    """A credential or address that cannot be written."""


def java_escape(value: str) -> str:
    """``value`` as a java.util.Properties value: read back exactly, whatever it holds."""
    out: list[str] = []
    for index, char in enumerate(value):
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif char == " " and index == 0:
            out.append("\\ ")  # Properties drops the value's leading whitespace
        elif char in "\t\f":
            out.append({"\t": "\\t", "\f": "\\f"}[char])
        elif code < 0x20 or code > 0x7E:
            if code > 0xFFFF:  # a surrogate pair, as Java strings hold it
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
            else:
                out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def check_credential(name: str, value: str) -> str:
    if not value:
        raise IbcSetupError(f"the {name} is empty")
    if "\n" in value or "\r" in value:
        raise IbcSetupError(f"the {name} holds a line break")
    return value


def render_config_ini(
    *,
    username: str,
    password: str,
    trading_mode: str,
    command_port: int,
    gateway_port: int,
    now: datetime | None = None,
) -> str:
    """IBC's config.ini for this node. ``check_ibc_settings`` accepts it (tested)."""
    check_credential("username", username)
    check_credential("password", password)
    mode = trading_mode.strip().lower()
    override = "" if IB_DEFAULT_PORTS.get(mode) == gateway_port else str(gateway_port)
    stamp = (now or datetime.now()).strftime("%Y-%m-%d %H:%M")
    lines = [
        f"# IBC's config.ini for ibkr-node, written by `ibkr-node configure ibc` on {stamp}.",
        "# It holds the IBKR login in plain text: keep it owner-only (created 0600 here; on",
        "# Windows setup-ibkr-autologin.ps1 restricts its ACL) and out of synced folders.",
        "# At each start the node's ibc launcher checks TradingMode, AcceptNonBrokerage-",
        "# AccountWarning, ExistingSessionDetectedAction, CommandServerPort, BindAddress and",
        "# ControlFrom, and refuses to start the gateway when one differs from below.",
        "# Run `ibkr-node configure ibc --force` to change the login (a backup is kept).",
        "# Key names and meanings: the config.ini shipped with IBC.",
        "",
        "FIX=no",
        "",
        "# The login. IBC reads this file as Java properties: backslashes and characters",
        "# outside ASCII are escaped (\\\\, \\uXXXX).",
        f"IbLoginId={java_escape(username)}",
        f"IbPassword={java_escape(password)}",
        "",
        "# Must equal TRADING_MODE in .env (IBC's own default is live).",
        f"TradingMode={mode}",
        "",
        "# A second factor not confirmed in time makes IBC exit (code 1111): the node counts",
        "# it as a failed login and retries within its restart budget, instead of IBC",
        "# re-prompting without end.",
        "ExitAfterSecondFactorAuthenticationTimeout=yes",
        "ReloginAfterSecondFactorAuthenticationTimeout=no",
        "LoginDialogDisplayTimeout=60",
        "ReadOnlyLogin=no",
        "",
        "# This node's session wins, and cannot be taken over by another login.",
        "ExistingSessionDetectedAction=primary",
        "# The paper account's 'not a brokerage account' dialog blocks the API until accepted.",
        "AcceptNonBrokerageAccountWarning=yes",
        "# API clients come only from jts.ini's TrustedIPs; any other connection is refused.",
        "AcceptIncomingConnectionAction=reject",
        "# Empty: the gateway's own Read-Only API setting is left as it is (the node's gates",
        "# decide about orders; set it to no if the gateway rejects them as read-only).",
        "ReadOnlyApi=",
        f"# Empty when the node expects the gateway's default {mode} port.",
        f"OverrideTwsApiPort={override}",
        "",
        "# The node starts and stops the gateway with its run window: no closedown of IBC's own.",
        "ClosedownAt=",
        "AllowBlindTrading=no",
        "DismissPasswordExpiryWarning=no",
        "MinimizeMainWindow=no",
        "StoreSettingsOnServer=",
        "IbDir=",
        "",
        "# IBC's command server: the node sends STOP here. No password, so loopback only.",
        f"CommandServerPort={command_port}",
        f"BindAddress={COMMAND_HOST}",
        "ControlFrom=",
        "CommandPrompt=",
        "SuppressInfoMessages=yes",
        "",
        "LogComponents=never",
        "",
    ]
    text = "\n".join(lines)
    # The launcher's own check, so a file this writes is one the launcher accepts.
    check_ibc_settings(
        parse_ibc_ini(text), ini=Path("config.ini"), trading_mode=mode, command_port=command_port
    )
    return text


def script_config_path(ibc_path: Path, *, windows: bool | None = None) -> Path | None:
    """Where IBC's start script reads config.ini from (its ``CONFIG``/``IBC_INI`` line)."""
    windows = sys.platform == "win32" if windows is None else windows
    script = start_script(ibc_path, windows=windows)
    try:
        text = script.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    configured = script_settings(text, windows=windows).get("IBC_INI")
    if not configured:
        return None
    expanded = os.path.expandvars(os.path.expanduser(configured))
    if "%" in expanded or "$" in expanded:
        return None
    return Path(expanded)


# ------------------------------------------------------------------------------- jts.ini


def default_jts_ini(gateway_path: PurePath) -> PurePath | None:
    """jts.ini in the ``Jts`` folder above the gateway (C:\\Jts\\ibgateway\\1030 -> C:\\Jts)."""
    for folder in (gateway_path, *gateway_path.parents):
        if folder.name.lower() == "jts":
            return folder / "jts.ini"
    return None


def parse_trusted_ips(text: str) -> list[str]:
    """Comma-separated IP addresses (jts.ini's TrustedIPs takes addresses, not networks)."""
    found: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            address = str(ipaddress.ip_address(item))
        except ValueError:
            raise IbcSetupError(f"{item!r} is not an IP address") from None
        if address not in found:
            found.append(address)
    if not found:
        raise IbcSetupError("no address given")
    return found


_SECTION = re.compile(r"^\s*\[([^\]]*)\]\s*$")


def set_ini_key(text: str, section: str, key: str, value: str) -> str:
    """``text`` with ``key=value`` in ``[section]``; everything else unchanged.

    Section and key names compare case-insensitively; every line of the key in the first
    such section is set; a missing key goes after the section's last line, a missing
    section at the end.
    """
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    start = next(
        (i for i, line in enumerate(lines) if _section_name(line) == section.lower()), None
    )
    if start is None:
        head = text if not text or text.endswith(("\n", "\r")) else text + newline
        gap = newline if head.strip() else ""
        return f"{head}{gap}[{section}]{newline}{key}={value}{newline}"
    end = next(
        (i for i in range(start + 1, len(lines)) if _section_name(lines[i]) is not None),
        len(lines),
    )
    pattern = re.compile(rf"^(\s*){re.escape(key)}(\s*)=.*?(\r\n|\n|\r)?$", re.IGNORECASE)
    found = False
    for i in range(start + 1, end):
        match = pattern.match(lines[i])
        if match:
            lines[i] = f"{match.group(1)}{key}={value}{match.group(3) or ''}"
            found = True
    if not found:
        last = start
        for i in range(start + 1, end):
            if lines[i].strip():
                last = i
        if not lines[last].endswith(("\n", "\r")):
            lines[last] += newline
        lines.insert(last + 1, f"{key}={value}{newline}")
    return "".join(lines)


def _section_name(line: str) -> str | None:
    match = _SECTION.match(line)
    return match.group(1).strip().lower() if match else None


def ini_value(text: str, section: str, key: str) -> str | None:
    """The value of ``key`` in ``[section]`` (the last one), or None."""
    current: str | None = None
    value: str | None = None
    for line in text.splitlines():
        name = _section_name(line)
        if name is not None:
            current = name
            continue
        if current == section.lower():
            left, sep, right = line.partition("=")
            if sep and left.strip().lower() == key.lower():
                value = right.strip()
    return value
