"""The checks of `ibkr-node verify`, one function at a time, on real files and loopback sockets."""

from __future__ import annotations

import os
import socket
import stat
from datetime import datetime
from pathlib import Path

import pytest

from node import checks
from node.checks import Check, DaemonProbe
from node.config import ConfigError, Settings, load_settings
from node.lockfile import InstanceLock
from node.verify import exit_code, run_checks
from support import free_port

NOT_RUNNING = DaemonProbe(running=False)
TORONTO_WEDNESDAY_NOON = datetime.fromisoformat("2026-11-25T12:00:00-05:00")
TORONTO_SATURDAY_NOON = datetime.fromisoformat("2026-11-28T12:00:00-05:00")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the env files the tests write count: no variable of the outer environment."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def settings_from(tmp_path: Path, **values: object) -> Settings:
    env = tmp_path / ".env"
    base: dict[str, object] = {"STATE_DIR": "state", "GATEWAY_LAUNCHER": "sim"}
    lines = [f"{k}={v}" for k, v in {**base, **values}.items() if v is not None]
    env.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_settings(env)


def test_lines_say_status_check_detail_and_the_fix() -> None:
    assert checks.passed("state dir", "ok").line() == "PASS state dir: ok"
    assert checks.warned("arm file", "synced").line() == "WARN arm file: synced"
    advice = checks.warned("arm file", "synced", "move it")
    assert advice.line() == "WARN arm file: synced -> move it"
    failure = checks.failed("api key", "no key", "run `ibkr-node keygen`")
    assert failure.line() == "FAIL api key: no key -> run `ibkr-node keygen`"
    assert failure.as_dict() == {
        "check": "api key",
        "status": "FAIL",
        "detail": "no key",
        "fix": "run `ibkr-node keygen`",
    }
    assert exit_code([checks.passed("a", "b"), checks.warned("c", "d")]) == 0
    assert exit_code([checks.passed("a", "b"), failure]) == 1


def test_each_bad_variable_is_its_own_fail_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, API_PORT="99999", TRADING_MODE="paperish")
    results = checks.config_error_checks(caught.value)
    assert {r.status for r in results} == {"FAIL"}
    by_detail = {r.detail: r.fix for r in results}
    assert by_detail["API_PORT='99999' is invalid"].startswith("set it to a TCP port")
    assert by_detail["TRADING_MODE='paperish' is invalid"] == "set it to paper or live"


def test_a_config_error_skips_what_needs_settings(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("API_PORT=nope\n", encoding="utf-8")
    results = run_checks(None)
    assert [(r.check, r.status) for r in results] == [
        ("env file", "PASS"),
        ("configuration", "FAIL"),
        ("skipped", "WARN"),
    ]
    assert "need a valid configuration" in results[-1].detail
    assert exit_code(results) == 1


def test_a_missing_env_file_given_is_one_fail(tmp_path: Path) -> None:
    results = run_checks(tmp_path / "nowhere.env")
    assert [(r.check, r.status) for r in results] == [("env file", "FAIL"), ("skipped", "WARN")]
    assert "ibkr-node configure" in results[0].fix


def test_without_an_env_file_the_defaults_are_checked(tmp_path: Path) -> None:
    results = run_checks(None)
    first = results[0]
    assert (first.check, first.status) == ("env file", "FAIL")
    assert "ibkr-node configure" in first.fix
    assert any(r.check == "launcher" and r.status == "FAIL" for r in results)


# ---------------------------------------------------------------------- folders


def test_state_dir_missing_fails_with_configure_or_mkdir(tmp_path: Path) -> None:
    result = checks.state_dir_check(settings_from(tmp_path))
    assert result.status == "FAIL"
    assert "does not exist" in result.detail
    assert "ibkr-node configure" in result.fix
    assert f"mkdir {tmp_path / 'state'}" in result.fix
    assert not (tmp_path / "state").exists()  # verify creates nothing


def test_state_dir_that_is_a_file_fails(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("", encoding="utf-8")
    result = checks.state_dir_check(settings_from(tmp_path))
    assert result.status == "FAIL"
    assert "is not a folder" in result.detail


def test_writable_folders_pass_and_leave_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    settings = settings_from(tmp_path)
    assert checks.state_dir_check(settings).status == "PASS"
    log = checks.log_dir_check(settings)  # state/logs: the daemon creates it
    assert log.status == "PASS"
    assert "the daemon creates it" in log.detail
    assert checks.audit_db_check(settings).status == "PASS"
    assert list((tmp_path / "state").iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anyway")
def test_unwritable_folder_fails(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o500)
    try:
        result = checks.state_dir_check(settings_from(tmp_path))
    finally:
        state.chmod(0o700)
    assert result.status == "FAIL"
    assert "not writable" in result.detail
    assert "write access" in result.fix


def test_audit_db_inside_the_sync_folder_fails(tmp_path: Path) -> None:
    (tmp_path / "sync").mkdir()
    settings = settings_from(tmp_path, GDRIVE_BASE_PATH="sync", AUDIT_DB_PATH="sync/audit.db")
    result = checks.audit_db_check(settings)
    assert result.status == "FAIL"
    assert "inside the sync folder" in result.detail
    assert "AUDIT_DB_PATH" in result.fix


def test_log_dir_inside_a_missing_sync_folder_is_a_warning(tmp_path: Path) -> None:
    result = checks.log_dir_check(settings_from(tmp_path, GDRIVE_BASE_PATH="sync"))
    assert result.status == "WARN"
    assert checks.sync_folder_check(settings_from(tmp_path, GDRIVE_BASE_PATH="sync")).status == (
        "FAIL"
    )


# ---------------------------------------------------------------------- launcher and gateway


def test_launcher_unset_fails_and_sim_warns(tmp_path: Path) -> None:
    unset = settings_from(tmp_path, GATEWAY_LAUNCHER=None)
    result = checks.launcher_check(unset)
    assert result.status == "FAIL"
    assert "GATEWAY_LAUNCHER" in result.fix
    assert checks.gateway_check(unset) is None
    sim = settings_from(tmp_path)
    assert checks.launcher_check(sim).status == "WARN"
    assert "SIMULATED" in checks.launcher_check(sim).detail
    assert checks.gateway_check(sim) == Check(
        "gateway", "PASS", "sim: nothing to install (the simulator is built in)"
    )
    external = settings_from(tmp_path, GATEWAY_LAUNCHER="external")
    assert checks.launcher_check(external).status == "PASS"
    gateway = checks.gateway_check(external)
    assert gateway is not None
    assert gateway.status == "PASS"
    assert "nothing to install" in gateway.detail
    assert checks.gateway_port_checks(external, NOT_RUNNING) == []


GOOD_INI = {
    "TradingMode": "paper",
    "AcceptNonBrokerageAccountWarning": "yes",
    "ExistingSessionDetectedAction": "primary",
    "CommandServerPort": "7462",
    "BindAddress": "127.0.0.1",
    "ControlFrom": "",
}


def ibc_folder(tmp_path: Path, script_line: str | None = None, **ini: str) -> Path:
    folder = tmp_path / "ibc"
    folder.mkdir(exist_ok=True)
    config = folder / "config.ini"
    config.write_text(
        "\n".join(f"{k}={v}" for k, v in {**GOOD_INI, **ini}.items()) + "\n", encoding="utf-8"
    )
    config.chmod(0o600)
    script = folder / "gatewaystart.sh"
    line = f"IBC_INI={config}" if script_line is None else script_line
    script.write_text(f"#!/bin/sh\nTWS_MAJOR_VRSN=1030\n{line}\nTRADING_MODE=\n", encoding="utf-8")
    script.chmod(0o755)
    return folder


@pytest.mark.skipif(os.name != "posix", reason="gatewaystart.sh is the POSIX start script")
def test_ibc_installed_and_configured_passes(tmp_path: Path) -> None:
    ibc_folder(tmp_path)
    settings = settings_from(tmp_path, GATEWAY_LAUNCHER="ibc", IBC_PATH="ibc")
    gateway = checks.gateway_check(settings)
    assert gateway is not None
    assert gateway.status == "PASS", gateway.line()
    config = checks.ibc_config_check(settings)
    assert config is not None
    assert config.status == "PASS", config.line()


@pytest.mark.skipif(os.name != "posix", reason="gatewaystart.sh is the POSIX start script")
@pytest.mark.parametrize(
    ("ini", "script_line", "status", "detail", "fix"),
    [
        ({"TradingMode": "live"}, None, "FAIL", "TradingMode is 'live'", "`TradingMode=paper`"),
        ({"BindAddress": "0.0.0.0"}, None, "FAIL", "BindAddress", "`BindAddress=127.0.0.1`"),
        ({"CommandServerPort": "7000"}, None, "FAIL", "CommandServerPort", "=7462`"),
        ({}, "IBC_INI=/elsewhere/config.ini", "FAIL", "IBC_INI=/elsewhere", "IBC_INI="),
        ({}, "# no IBC_INI line", "WARN", "sets no IBC_INI", "IBC_INI="),
    ],
)
def test_ibc_config_problems(
    tmp_path: Path, ini: dict[str, str], script_line: str | None, status: str, detail: str, fix: str
) -> None:
    ibc_folder(tmp_path, script_line, **ini)
    result = checks.ibc_config_check(
        settings_from(tmp_path, GATEWAY_LAUNCHER="ibc", IBC_PATH="ibc")
    )
    assert result is not None
    assert result.status == status, result.line()
    assert detail in result.detail
    assert fix in result.fix


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_ibc_config_readable_by_others_warns(tmp_path: Path) -> None:
    folder = ibc_folder(tmp_path)
    (folder / "config.ini").chmod(0o644)
    result = checks.ibc_config_check(
        settings_from(tmp_path, GATEWAY_LAUNCHER="ibc", IBC_PATH="ibc")
    )
    assert result is not None
    assert result.status == "WARN"
    assert "chmod 600" in result.fix


def test_ibc_config_missing_says_configure_ibc(tmp_path: Path) -> None:
    (tmp_path / "ibc").mkdir()
    result = checks.ibc_config_check(
        settings_from(tmp_path, GATEWAY_LAUNCHER="ibc", IBC_PATH="ibc")
    )
    assert result is not None
    assert result.status == "FAIL"
    assert "ibkr-node configure ibc" in result.fix


@pytest.mark.parametrize(
    ("values", "detail"),
    [
        ({"GATEWAY_LAUNCHER": "ibc"}, "IBC_PATH is not set"),
        ({"GATEWAY_LAUNCHER": "ibc", "IBC_PATH": "missing"}, "does not exist"),
        ({"GATEWAY_LAUNCHER": "exe"}, "IBKR_GATEWAY_PATH is not set"),
        ({"GATEWAY_LAUNCHER": "exe", "IBKR_GATEWAY_PATH": "gw/ibgateway"}, "is not a file"),
    ],
)
def test_gateway_not_installed(tmp_path: Path, values: dict[str, str], detail: str) -> None:
    result = checks.gateway_check(settings_from(tmp_path, **values))
    assert result is not None
    assert result.status == "FAIL"
    assert detail in result.detail
    assert result.fix


@pytest.mark.skipif(os.name != "posix", reason="the executable bit")
def test_exe_gateway_present(tmp_path: Path) -> None:
    exe = tmp_path / "ibgateway"
    exe.write_text("#!/bin/sh\n", encoding="utf-8")
    exe.chmod(0o644)
    settings = settings_from(tmp_path, GATEWAY_LAUNCHER="exe", IBKR_GATEWAY_PATH="ibgateway")
    result = checks.gateway_check(settings)
    assert result is not None
    assert (result.status, result.fix) == ("FAIL", "chmod +x it")
    exe.chmod(0o755)
    assert checks.gateway_check(settings) == Check("gateway", "PASS", f"exe: {exe}")


# ---------------------------------------------------------------------- key, sync, arm, time


def key_settings(tmp_path: Path, content: str | None, mode: int = 0o600, **values: str) -> Settings:
    path = tmp_path / "secrets" / "api_key.txt"
    if content is not None:
        path.parent.mkdir(exist_ok=True)
        path.write_text(content, encoding="utf-8")
        path.chmod(mode)
    return settings_from(tmp_path, **values)


GOOD_KEY = "k" * 43


@pytest.mark.parametrize(
    ("content", "values", "status", "text"),
    [
        (None, {}, "FAIL", "ibkr-node keygen"),
        ("", {}, "FAIL", "ibkr-node keygen"),
        ("\n\n", {}, "FAIL", "ibkr-node keygen"),
        ("short\n", {}, "WARN", "--rotate"),
        (f"{GOOD_KEY}\n", {}, "PASS", "holds one key"),
        (f"{GOOD_KEY}\n{'p' * 43}\n", {}, "PASS", "current and previous key"),
        (None, {"API_KEY": GOOD_KEY}, "PASS", "API_KEY is set"),
        ("", {"API_KEY": GOOD_KEY}, "WARN", "empty"),
        (None, {"API_KEY": "abc"}, "WARN", "keygen"),
    ],
)
def test_api_key(
    tmp_path: Path, content: str | None, values: dict[str, str], status: str, text: str
) -> None:
    result = checks.api_key_check(key_settings(tmp_path, content, **values))
    assert result.status == status, result.line()
    assert text in result.line()


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_api_key_file_readable_by_others_warns(tmp_path: Path) -> None:
    result = checks.api_key_check(key_settings(tmp_path, f"{GOOD_KEY}\n", mode=0o644))
    assert result.status == "WARN"
    assert "readable by other users" in result.detail
    assert result.fix.startswith("chmod 600 ")


def test_sync_folder(tmp_path: Path) -> None:
    assert checks.sync_folder_check(settings_from(tmp_path)).status == "PASS"
    missing = checks.sync_folder_check(settings_from(tmp_path, GDRIVE_BASE_PATH="drive"))
    assert missing.status == "FAIL"
    assert "sync client" in missing.fix
    (tmp_path / "drive").mkdir()
    present = checks.sync_folder_check(settings_from(tmp_path, GDRIVE_BASE_PATH="drive"))
    assert present.status == "PASS"


def test_arm_file_in_the_synced_folder_warns(tmp_path: Path) -> None:
    synced = checks.arm_file_check(settings_from(tmp_path, GDRIVE_BASE_PATH="drive"))
    assert synced.status == "WARN"
    assert "any device" in synced.detail
    assert "ARM_ORDERS_FILE" in synced.fix
    local = checks.arm_file_check(
        settings_from(tmp_path, GDRIVE_BASE_PATH="drive", ARM_ORDERS_FILE="state/arm.txt")
    )
    assert local.status == "PASS"
    assert "not armed" in local.detail


def test_timezone_names_the_zone_and_the_next_change(tmp_path: Path) -> None:
    settings = settings_from(tmp_path)
    weekday = checks.timezone_check(settings, TORONTO_WEDNESDAY_NOON)
    assert weekday.status == "PASS"
    assert "America/Toronto" in weekday.detail
    assert "open now, closes Wed 2026-11-25 20:00 EST" in weekday.detail
    weekend = checks.timezone_check(settings, TORONTO_SATURDAY_NOON)
    assert "closed now, opens Mon 2026-11-30 04:00 EST" in weekend.detail
    always = settings_from(
        tmp_path, RUN_WINDOW_START="00:00", RUN_WINDOW_END="24:00", RUN_WINDOW_DAYS="Mon-Sun"
    )
    assert "never changes" in checks.timezone_check(always, TORONTO_SATURDAY_NOON).detail


def test_live_trading_warns_loudly(tmp_path: Path) -> None:
    assert checks.trading_mode_check(settings_from(tmp_path)).status == "PASS"
    live = checks.trading_mode_check(settings_from(tmp_path, TRADING_MODE="live"))
    assert live.status == "WARN"
    assert "LIVE" in live.detail
    assert "REAL-MONEY" in live.detail


# ---------------------------------------------------------------------- ports and the daemon


def test_lock_probe_sees_a_held_lock_and_creates_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert checks.lock_holder(state) == (False, None)
    assert not state.exists()
    with InstanceLock(state):
        assert checks.lock_holder(state) == (True, os.getpid())
    assert checks.lock_holder(state) == (False, None)


def test_lock_held_but_no_api_fails(tmp_path: Path) -> None:
    state = tmp_path / "state"
    settings = settings_from(tmp_path, API_PORT=str(free_port()))
    with InstanceLock(state):
        daemon = checks.probe_daemon(settings)
    assert daemon.running
    assert not daemon.answers
    result = checks.api_check(settings, daemon)
    assert result.status == "FAIL"
    assert "does not answer" in result.detail
    assert checks.api_check(settings, NOT_RUNNING).status == "PASS"


def test_api_port_free_held_and_not_an_address(tmp_path: Path) -> None:
    port = free_port()
    settings = settings_from(tmp_path, API_PORT=str(port))
    assert checks.api_port_check(settings, NOT_RUNNING).status == "PASS"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        held = checks.api_port_check(settings, NOT_RUNNING)
        answering = DaemonProbe(running=True, pid=4321, answers=True)
        by_node = checks.api_port_check(settings, answering)
    assert held.status == "FAIL"
    assert f"API_PORT {port} on 127.0.0.1 is held by" in held.detail
    assert "--api-port" in held.fix
    assert (by_node.status, "held by the node (daemon pid 4321)" in by_node.detail) == (
        "PASS",
        True,
    )
    foreign = settings_from(tmp_path, API_PORT=str(port), API_BIND_HOST="192.0.2.1")
    result = checks.api_port_check(foreign, NOT_RUNNING)
    assert result.status == "FAIL"
    assert "not an address of this machine" in result.detail


def test_gateway_port_held_by_a_stranger_fails(tmp_path: Path) -> None:
    port, control = free_port(), free_port()
    settings = settings_from(tmp_path, PAPER_GATEWAY_PORT=str(port), SIM_CONTROL_PORT=str(control))
    assert [r.status for r in checks.gateway_port_checks(settings, NOT_RUNNING)] == ["PASS"] * 2
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        gateway, sim_control = checks.gateway_port_checks(settings, NOT_RUNNING)
    assert gateway.status == "FAIL"
    assert f"PAPER_GATEWAY_PORT {port}" in gateway.detail
    assert "GATEWAY_LAUNCHER=external" in gateway.fix
    assert sim_control.status == "PASS"


def test_verify_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    settings = settings_from(tmp_path, API_PORT=str(free_port()))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    results = run_checks(tmp_path / ".env")
    assert settings.STATE_DIR.is_dir()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert {r.check for r in results} >= {"state dir", "api key", "timezone", "api"}
    assert stat.S_ISDIR((tmp_path / "state").stat().st_mode)


def test_variables_from_the_environment_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_from(tmp_path)
    monkeypatch.setenv("API_PORT", str(free_port()))
    monkeypatch.setenv("API_KEY", "secret-value-never-shown")
    results = run_checks(tmp_path / ".env")
    [config] = [r for r in results if r.check == "configuration"]
    assert config.status == "WARN"
    assert "API_KEY, API_PORT" in config.detail
    assert all("secret-value-never-shown" not in r.line() for r in results)
