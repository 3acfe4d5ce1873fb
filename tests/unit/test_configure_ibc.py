"""IBC's config.ini and jts.ini as `configure ibc` writes them: checked by the ibc launcher."""

from __future__ import annotations

import re
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from node.ibc_setup import (
    IbcSetupError,
    default_jts_ini,
    ini_value,
    java_escape,
    parse_trusted_ips,
    render_config_ini,
    script_config_path,
    set_ini_key,
)
from node.plugins.launchers.base import LaunchError
from node.plugins.launchers.ibc import check_ibc_settings, parse_ibc_ini


def java_properties_value(escaped: str) -> str:
    """What java.util.Properties.load reads for a value (leading blanks, escapes)."""
    text = escaped.lstrip(" \t\f")
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u":
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
            continue
        out.append({"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(nxt, nxt))
        i += 2
    return "".join(out).encode("utf-16", "surrogatepass").decode("utf-16")


@pytest.mark.parametrize(
    "value",
    ["hunter2", r"back\slash\\", " leading space", "trailing ", "tab\there", "é ß ñ",
     "emoji 😀", "=:#!", "#start", "!start", "semi;colon,comma", "\\u0041"],
)  # fmt: skip
def test_credentials_read_back_as_ibc_reads_them(value: str) -> None:
    escaped = java_escape(value)
    assert escaped.isascii()
    assert java_properties_value(escaped) == value


@pytest.mark.parametrize(
    ("mode", "command_port", "gateway_port"),
    [("paper", 7462, 4002), ("live", 7462, 4001), ("paper", 7999, 4102)],
)
def test_the_config_ini_passes_the_launchers_check(
    mode: str, command_port: int, gateway_port: int
) -> None:
    text = render_config_ini(
        username="paperuser",
        password=r"p@ss\word",
        trading_mode=mode,
        command_port=command_port,
        gateway_port=gateway_port,
    )
    settings = parse_ibc_ini(text)
    check_ibc_settings(settings, ini=Path("config.ini"), trading_mode=mode,
                       command_port=command_port)  # fmt: skip
    assert settings["IbLoginId"] == "paperuser"
    assert settings["IbPassword"] == r"p@ss\\word"
    assert settings["AcceptIncomingConnectionAction"] == "reject"
    assert settings["ExistingSessionDetectedAction"] == "primary"
    assert settings["BindAddress"] == "127.0.0.1"
    assert settings["ControlFrom"] == ""
    assert settings["OverrideTwsApiPort"] == ("4102" if gateway_port == 4102 else "")
    # The other mode or port is refused: the file says what it was written for.
    other = "live" if mode == "paper" else "paper"
    with pytest.raises(LaunchError, match="TradingMode"):
        check_ibc_settings(settings, ini=Path("c"), trading_mode=other, command_port=command_port)
    with pytest.raises(LaunchError, match="CommandServerPort"):
        check_ibc_settings(settings, ini=Path("c"), trading_mode=mode, command_port=1)


def test_every_key_is_written_once() -> None:
    text = render_config_ini(username="u", password="p", trading_mode="paper",
                             command_port=7462, gateway_port=4002)  # fmt: skip
    keys = re.findall(r"^(\w+)=", text, re.MULTILINE)
    assert len(keys) == len(set(keys))
    assert text.isascii()


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [("", "Sekr1t!", "username is empty"), ("u", "", "password is empty"),
     ("u", "Sek\nr1t", "password holds a line break")],
)  # fmt: skip
def test_empty_or_multiline_credentials_are_refused(
    username: str, password: str, reason: str
) -> None:
    with pytest.raises(IbcSetupError, match=reason) as caught:
        render_config_ini(username=username, password=password, trading_mode="paper",
                          command_port=7462, gateway_port=4002)  # fmt: skip
    assert password not in str(caught.value) or not password


@pytest.mark.parametrize(
    ("gateway", "expected"),
    [
        (PureWindowsPath(r"C:\Jts\ibgateway\1030"), PureWindowsPath(r"C:\Jts\jts.ini")),
        (
            PureWindowsPath(r"C:\Jts\ibgateway\1030\ibgateway.exe"),
            PureWindowsPath(r"C:\Jts\jts.ini"),
        ),
        (PureWindowsPath(r"D:\apps\JTS\ibgateway\1019"), PureWindowsPath(r"D:\apps\JTS\jts.ini")),
        (PurePosixPath("/home/op/Jts/ibgateway/1030"), PurePosixPath("/home/op/Jts/jts.ini")),
        (PureWindowsPath(r"C:\IBGateway\1030"), None),
    ],
)
def test_jts_ini_is_in_the_jts_folder_above_the_gateway(
    gateway: PureWindowsPath | PurePosixPath, expected: object
) -> None:
    assert default_jts_ini(gateway) == expected


JTS = (
    "[IBGateway]\r\n"
    "WriteDebug=false\r\n"
    "TrustedIPs=10.0.0.9\r\n"
    "LocalServerPort=4000\r\n"
    "\r\n"
    "[Logon]\r\n"
    "Locale=en\r\n"
    "TrustedIPs=not-this-section\r\n"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (JTS, JTS.replace("TrustedIPs=10.0.0.9", "TrustedIPs=127.0.0.1")),
        ("[ibgateway]\ntrustedips = 1.2.3.4\n", "[ibgateway]\nTrustedIPs=127.0.0.1\n"),
        ("[IBGateway]\nApiOnly=true\n\n[Logon]\nx=1\n",
         "[IBGateway]\nApiOnly=true\nTrustedIPs=127.0.0.1\n\n[Logon]\nx=1\n"),
        ("[IBGateway]\nApiOnly=true", "[IBGateway]\nApiOnly=true\nTrustedIPs=127.0.0.1\n"),
        ("[Logon]\r\nLocale=en\r\n", "[Logon]\r\nLocale=en\r\n\r\n[IBGateway]\r\nTrustedIPs=127.0.0.1\r\n"),  # noqa: E501
        ("", "[IBGateway]\nTrustedIPs=127.0.0.1\n"),
    ],
)  # fmt: skip
def test_trusted_ips_set_in_place(text: str, expected: str) -> None:
    out = set_ini_key(text, "IBGateway", "TrustedIPs", "127.0.0.1")
    assert out == expected
    assert ini_value(out, "IBGateway", "TrustedIPs") == "127.0.0.1"
    assert set_ini_key(out, "IBGateway", "TrustedIPs", "127.0.0.1") == out  # idempotent


def test_trusted_ips_are_addresses() -> None:
    assert parse_trusted_ips(" 127.0.0.1, ::1,127.0.0.1 ") == ["127.0.0.1", "::1"]
    with pytest.raises(IbcSetupError, match=r"'10\.0\.0\.0/8' is not an IP address"):
        parse_trusted_ips("127.0.0.1,10.0.0.0/8")
    with pytest.raises(IbcSetupError, match="no address"):
        parse_trusted_ips(" , ")


@pytest.mark.parametrize(
    ("windows", "name", "line", "expected"),
    [
        (False, "gatewaystart.sh", "IBC_INI=/opt/ibc/my.ini\n", Path("/opt/ibc/my.ini")),
        (False, "gatewaystart.sh", "TWS_PATH=~/Jts\n", None),
        (False, "gatewaystart.sh", "IBC_INI=$UNSET_VARIABLE_X/c.ini\n", None),
        (True, "StartGateway.bat", "set CONFIG=C:\\IBC\\config.ini\r\n", Path("C:\\IBC\\config.ini")),  # noqa: E501
    ],
)  # fmt: skip
def test_script_config_path_reads_the_start_script(
    tmp_path: Path, windows: bool, name: str, line: str, expected: Path | None
) -> None:
    (tmp_path / name).write_text("#!/bin/sh\n" + line, encoding="utf-8")
    assert script_config_path(tmp_path, windows=windows) == expected


def test_script_config_path_without_a_script(tmp_path: Path) -> None:
    assert script_config_path(tmp_path, windows=sys.platform == "win32") is None
