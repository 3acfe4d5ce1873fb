"""IBC's config.ini and start script: what the ibc launcher relies on, checked as tables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.plugins.launchers.base import GatewayEndpoint, LaunchError
from node.plugins.launchers.ibc import (
    IbcLauncher,
    check_ibc_settings,
    parse_ibc_ini,
    script_settings,
)

GOOD = {
    "TradingMode": "paper",
    "AcceptNonBrokerageAccountWarning": "yes",
    "ExistingSessionDetectedAction": "primary",
    "CommandServerPort": "7462",
    "BindAddress": "127.0.0.1",
    "ControlFrom": "",
}
INI = Path("/ibc/config.ini")


def check(**changes: str | None) -> None:
    settings = {**GOOD, **changes}
    settings = {key: value for key, value in settings.items() if value is not None}
    check_ibc_settings(settings, ini=INI, trading_mode="paper", command_port=7462)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"TradingMode": "Paper"},
        {"AcceptNonBrokerageAccountWarning": "YES"},
        {"ExistingSessionDetectedAction": "Primary"},
        {"ControlFrom": None},
        {"ControlFrom": "127.0.0.1"},
        {"ControlFrom": "localhost, 127.0.0.1"},
    ],
)
def test_accepted(changes: dict[str, str | None]) -> None:
    check(**changes)


@pytest.mark.parametrize(
    ("changes", "key", "expected"),
    [
        ({"TradingMode": "live"}, "TradingMode", "paper"),
        ({"TradingMode": None}, "TradingMode", "paper"),  # IBC's default is live
        ({"AcceptNonBrokerageAccountWarning": "no"}, "AcceptNonBrokerageAccountWarning", "yes"),
        ({"AcceptNonBrokerageAccountWarning": None}, "AcceptNonBrokerageAccountWarning", "yes"),
        ({"ExistingSessionDetectedAction": "manual"}, "ExistingSessionDetectedAction", "primary"),
        (
            {"ExistingSessionDetectedAction": "secondary"},
            "ExistingSessionDetectedAction",
            "primary",
        ),
        ({"ExistingSessionDetectedAction": None}, "ExistingSessionDetectedAction", "primary"),
        ({"CommandServerPort": "7463"}, "CommandServerPort", "7462"),
        ({"CommandServerPort": "0"}, "CommandServerPort", "7462"),
        ({"CommandServerPort": None}, "CommandServerPort", "7462"),
        ({"BindAddress": ""}, "BindAddress", "127.0.0.1"),  # empty = every local address
        ({"BindAddress": "0.0.0.0"}, "BindAddress", "127.0.0.1"),
        ({"BindAddress": "192.168.1.20"}, "BindAddress", "127.0.0.1"),
        ({"BindAddress": None}, "BindAddress", "127.0.0.1"),
        ({"ControlFrom": "192.168.1.50"}, "ControlFrom", ""),
        ({"ControlFrom": "127.0.0.1,pi.local"}, "ControlFrom", ""),
    ],
)
def test_refused_naming_key_value_and_file(
    changes: dict[str, str | None], key: str, expected: str
) -> None:
    with pytest.raises(LaunchError) as refused:
        check(**changes)
    message = str(refused.value)
    assert str(INI) in message
    assert f"`{key}={expected}`" in message


def test_live_mode_wants_live() -> None:
    settings = {**GOOD, "TradingMode": "live"}
    check_ibc_settings(settings, ini=INI, trading_mode="live", command_port=7462)
    with pytest.raises(LaunchError, match="TradingMode=live"):
        check_ibc_settings(GOOD, ini=INI, trading_mode="live", command_port=7462)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("TradingMode=paper\n", {"TradingMode": "paper"}),
        ("# TradingMode=live\nTradingMode=paper\n", {"TradingMode": "paper"}),
        ("! comment\n  BindAddress = 127.0.0.1  \n", {"BindAddress": "127.0.0.1"}),
        ("ControlFrom=\n", {"ControlFrom": ""}),
        ("TradingMode=live\nTradingMode=paper\n", {"TradingMode": "paper"}),  # last wins
        ("no equals sign here\n\n", {}),
        ("IbPassword=a=b\r\n", {"IbPassword": "a=b"}),
        ("", {}),
    ],
)
def test_parse(text: str, expected: dict[str, str]) -> None:
    assert parse_ibc_ini(text) == expected


@pytest.mark.parametrize(
    ("text", "windows", "expected"),
    [
        (
            "set TWS_MAJOR_VRSN=1037\nset CONFIG=%USERPROFILE%\\Documents\\IBC\\config.ini\n"
            "set TRADING_MODE=\n",
            True,
            {"IBC_INI": "%USERPROFILE%\\Documents\\IBC\\config.ini", "TRADING_MODE": ""},
        ),
        ('SET Config="C:\\IBC\\config.ini"\n', True, {"IBC_INI": "C:\\IBC\\config.ini"}),
        (
            "TWS_MAJOR_VRSN=1037\nIBC_INI=~/ibc/config.ini\nTRADING_MODE=live\n",
            False,
            {"IBC_INI": "~/ibc/config.ini", "TRADING_MODE": "live"},
        ),
        ("#   IBC_INI\nexport IBC_INI\n", False, {}),
    ],
)
def test_script_settings(text: str, windows: bool, expected: dict[str, str]) -> None:
    assert script_settings(text, windows=windows) == expected


def write_install(tmp_path: Path, ini_text: str, script_lines: str) -> IbcLauncher:
    ibc = tmp_path / "ibc"
    ibc.mkdir()
    ini = tmp_path / "config.ini"
    ini.write_text(ini_text)
    script = ibc / "gatewaystart.sh"
    script.write_text(f"#!/bin/bash\n{script_lines}\nexit 0\n")
    script.chmod(0o755)
    return IbcLauncher(ibc, ini, None, "paper", 7462, GatewayEndpoint("127.0.0.1", 4002))


GOOD_INI = "".join(f"{key}={value}\n" for key, value in GOOD.items())


@pytest.mark.skipif(os.name == "nt", reason="POSIX start script layout")
def test_check_config_whole_install(tmp_path: Path) -> None:
    launcher = write_install(tmp_path, GOOD_INI, f"IBC_INI={tmp_path}/config.ini\nTRADING_MODE=")
    launcher.check_config()


@pytest.mark.skipif(os.name == "nt", reason="POSIX start script layout")
@pytest.mark.parametrize(
    ("ini_text", "script_lines", "needle"),
    [
        (GOOD_INI, "IBC_INI=/elsewhere/config.ini", "IBC_INI=/elsewhere/config.ini"),
        (GOOD_INI, "IBC_INI={ini}\nTRADING_MODE=live", "TRADING_MODE=live"),
        (GOOD_INI.replace("yes", "no"), "IBC_INI={ini}", "AcceptNonBrokerageAccountWarning=yes"),
    ],
)
def test_check_config_refuses(
    tmp_path: Path, ini_text: str, script_lines: str, needle: str
) -> None:
    launcher = write_install(tmp_path, ini_text, script_lines.format(ini=tmp_path / "config.ini"))
    with pytest.raises(LaunchError, match=needle):
        launcher.check_config()


def test_check_config_missing_folder_and_script(tmp_path: Path) -> None:
    endpoint = GatewayEndpoint("127.0.0.1", 4002)
    missing = IbcLauncher(tmp_path / "nope", tmp_path / "c.ini", None, "paper", 7462, endpoint)
    with pytest.raises(LaunchError, match="IBC_PATH"):
        missing.check_config()
    (tmp_path / "ibc").mkdir()
    no_script = IbcLauncher(tmp_path / "ibc", tmp_path / "c.ini", None, "paper", 7462, endpoint)
    with pytest.raises(LaunchError, match="start script"):
        no_script.check_config()


@pytest.mark.skipif(os.name == "nt", reason="POSIX start script layout")
def test_check_config_missing_ini_and_gateway(tmp_path: Path) -> None:
    launcher = write_install(tmp_path, GOOD_INI, f"IBC_INI={tmp_path}/config.ini")
    launcher.gateway_path = tmp_path / "no-gateway"
    with pytest.raises(LaunchError, match="IBKR_GATEWAY_PATH"):
        launcher.check_config()
    launcher.ibc_ini = tmp_path / "absent.ini"
    with pytest.raises(LaunchError, match="IBC_INI"):
        launcher.check_config()


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_check_config_script_not_executable(tmp_path: Path) -> None:
    launcher = write_install(tmp_path, GOOD_INI, f"IBC_INI={tmp_path}/config.ini")
    launcher.script.chmod(0o644)
    with pytest.raises(LaunchError, match="not executable"):
        launcher.check_config()
