"""`ibkr-node verify` as an operator runs it: real .env files, real folders, real processes.

A good sim configuration passes; each broken precondition is its own FAIL line with the fix
and exit code 1; with the daemon running, the API answers and its port is the node's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from node.config import Settings
from node.lockfile import InstanceLock
from support import WAIT, free_port

GOOD_INI = {
    "TradingMode": "paper",
    "AcceptNonBrokerageAccountWarning": "yes",
    "ExistingSessionDetectedAction": "primary",
    "BindAddress": "127.0.0.1",
    "ControlFrom": "",
}


def clean_env() -> dict[str, str]:
    """The outer environment without any variable the node reads: the .env alone decides."""
    return {k: v for k, v in os.environ.items() if k not in Settings.model_fields}


@dataclass
class Laptop:
    """A folder laid out as `ibkr-node configure` leaves it, with a sim launcher."""

    root: Path
    values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def good(cls, root: Path) -> Laptop:
        for folder in ("state", "sync", "secrets"):
            (root / folder).mkdir()
        key = root / "secrets" / "api_key.txt"
        key.write_text("k" * 43 + "\n", encoding="utf-8")
        key.chmod(0o600)
        return cls(
            root,
            {
                "GATEWAY_LAUNCHER": "sim",
                "STATE_DIR": "state",
                "GDRIVE_BASE_PATH": "sync",
                "ARM_ORDERS_FILE": "state/arm_orders_confirmed.txt",
                "API_KEY_FILE": "secrets/api_key.txt",
                "API_BIND_HOST": "127.0.0.1",
                "API_PORT": str(free_port()),
                "PAPER_GATEWAY_PORT": str(free_port()),
                "SIM_CONTROL_PORT": str(free_port()),
                "IBC_COMMAND_PORT": str(free_port()),
                "RUN_WINDOW_TIMEZONE": "America/Toronto",
            },
        )

    @property
    def env_file(self) -> Path:
        return self.root / ".env"

    def write(self) -> Path:
        lines = [f"{k}={v}" for k, v in self.values.items()]
        self.env_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return self.env_file

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "node", "--env-file", str(self.env_file), *args]


@dataclass
class Report:
    code: int
    lines: list[str]
    stderr: str

    def status(self, check: str) -> list[str]:
        return [line.split(" ", 1)[0] for line in self.lines if self.check_of(line) == check]

    def line(self, check: str) -> str:
        [found] = [line for line in self.lines if self.check_of(line) == check]
        return found

    def failing(self) -> set[str]:
        return {self.check_of(line) for line in self.lines if line.startswith("FAIL ")}

    @staticmethod
    def check_of(line: str) -> str:
        return line.split(" ", 1)[1].split(":", 1)[0]


def verify(laptop: Laptop, *args: str) -> Report:
    laptop.write()
    result = subprocess.run(
        laptop.command("verify", *args),
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=laptop.root,
        timeout=WAIT,
        check=False,
    )
    return Report(result.returncode, result.stdout.splitlines(), result.stderr)


@pytest.fixture
def laptop(tmp_path: Path) -> Laptop:
    return Laptop.good(tmp_path)


def test_a_good_sim_configuration_passes(laptop: Laptop) -> None:
    report = verify(laptop)
    assert report.code == 0, report.lines
    assert report.failing() == set()
    assert report.status("launcher") == ["WARN"]  # sim: simulated gateway, fake money
    for check in (
        "env file",
        "configuration",
        "state dir",
        "log dir",
        "audit db",
        "gateway",
        "api port",
        "gateway port",
        "sim control port",
        "api key",
        "sync folder",
        "arm file",
        "timezone",
        "trading mode",
        "api",
    ):
        assert report.status(check) == ["PASS"], report.lines
    assert "America/Toronto" in report.line("timezone")
    assert "Traceback" not in report.stderr
    assert list((laptop.root / "state").iterdir()) == []  # verify wrote nothing


def test_json_lists_every_check(laptop: Laptop) -> None:
    report = verify(laptop, "--json")
    assert report.code == 0
    results = json.loads("\n".join(report.lines))
    assert all(set(r) == {"check", "status", "detail", "fix"} for r in results)
    by_check = {r["check"]: r for r in results}
    assert by_check["api key"]["status"] == "PASS"
    assert by_check["launcher"]["status"] == "WARN"


def ibc_install(laptop: Laptop, **ini_changes: str) -> None:
    folder = laptop.root / "ibc"
    folder.mkdir()
    config = folder / "config.ini"
    ini = {**GOOD_INI, "CommandServerPort": laptop.values["IBC_COMMAND_PORT"], **ini_changes}
    config.write_text("".join(f"{k}={v}\n" for k, v in ini.items()), encoding="utf-8")
    config.chmod(0o600)
    script = folder / "gatewaystart.sh"
    script.write_text(f"#!/bin/sh\nIBC_INI={config}\nTRADING_MODE=\n", encoding="utf-8")
    script.chmod(0o755)
    laptop.values.update(GATEWAY_LAUNCHER="ibc", IBC_PATH="ibc")


@pytest.mark.skipif(os.name != "posix", reason="gatewaystart.sh is the POSIX start script")
def test_a_good_ibc_configuration_passes(laptop: Laptop) -> None:
    ibc_install(laptop)
    report = verify(laptop)
    assert report.code == 0, report.lines
    assert report.status("launcher") == report.status("gateway") == ["PASS"]
    assert report.status("ibc config") == report.status("ibc command port") == ["PASS"]


def invalid_variable(laptop: Laptop) -> None:
    laptop.values["API_PORT"] = "99999"


def missing_key_file(laptop: Laptop) -> None:
    (laptop.root / "secrets" / "api_key.txt").unlink()


def empty_key_file(laptop: Laptop) -> None:
    (laptop.root / "secrets" / "api_key.txt").write_text("", encoding="utf-8")


def state_dir_is_a_file(laptop: Laptop) -> None:
    (laptop.root / "state").rmdir()
    (laptop.root / "state").write_text("", encoding="utf-8")


def missing_state_dir(laptop: Laptop) -> None:
    (laptop.root / "state").rmdir()


def missing_sync_folder(laptop: Laptop) -> None:
    (laptop.root / "sync").rmdir()


def ibc_without_ibc(laptop: Laptop) -> None:
    laptop.values.update(GATEWAY_LAUNCHER="ibc", IBC_PATH="no-ibc-here")


def ibc_bad_setting(laptop: Laptop) -> None:
    ibc_install(laptop, TradingMode="live")


def exe_without_gateway(laptop: Laptop) -> None:
    laptop.values.update(GATEWAY_LAUNCHER="exe", IBKR_GATEWAY_PATH="Jts/ibgateway/ibgateway")


def launcher_unset(laptop: Laptop) -> None:
    del laptop.values["GATEWAY_LAUNCHER"]


def audit_db_in_sync_folder(laptop: Laptop) -> None:
    laptop.values["AUDIT_DB_PATH"] = "sync/audit.db"


# (case, the check that fails, words of its detail, words of its fix)
CASES: list[tuple[Callable[[Laptop], None], str, str, str]] = [
    (invalid_variable, "configuration", "API_PORT='99999' is invalid", "set it to a TCP port"),
    (missing_key_file, "api key", "does not exist", "ibkr-node keygen"),
    (empty_key_file, "api key", "is empty", "ibkr-node keygen"),
    (missing_state_dir, "state dir", "does not exist", "ibkr-node configure"),
    (state_dir_is_a_file, "state dir", "is not a folder", "STATE_DIR"),
    (missing_sync_folder, "sync folder", "does not exist", "sync client"),
    (ibc_without_ibc, "gateway", "IBC_PATH", "--ibc-path"),
    (ibc_bad_setting, "ibc config", "TradingMode is 'live'", "`TradingMode=paper`"),
    (exe_without_gateway, "gateway", "IBKR_GATEWAY_PATH", "gateway executable"),
    (launcher_unset, "launcher", "GATEWAY_LAUNCHER is not set", "GATEWAY_LAUNCHER"),
    (audit_db_in_sync_folder, "audit db", "inside the sync folder", "AUDIT_DB_PATH"),
]


@pytest.mark.parametrize(
    ("breakage", "check", "detail", "fix"), CASES, ids=[case[0].__name__ for case in CASES]
)
def test_each_broken_precondition_is_its_own_fail_line(
    laptop: Laptop, breakage: Callable[[Laptop], None], check: str, detail: str, fix: str
) -> None:
    if breakage in (ibc_bad_setting,) and os.name != "posix":
        pytest.skip("gatewaystart.sh is the POSIX start script")
    breakage(laptop)
    report = verify(laptop)
    assert report.code == 1, report.lines
    assert report.failing() == {check}, report.lines
    line = report.line(check)
    what, arrow, remedy = line.partition(" -> ")
    assert arrow, line
    assert detail in what
    assert fix in remedy
    assert "Traceback" not in report.stderr


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anyway")
def test_an_unwritable_state_dir_fails(laptop: Laptop) -> None:
    state = laptop.root / "state"
    state.chmod(0o500)
    try:
        report = verify(laptop)
    finally:
        state.chmod(0o700)
    assert report.code == 1
    assert report.failing() == {"state dir"}
    assert "not writable" in report.line("state dir")


@contextmanager
def listening(port: int) -> Iterator[None]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        yield


@pytest.mark.parametrize(
    ("variable", "check", "fix"),
    [
        ("API_PORT", "api port", "--api-port"),
        ("PAPER_GATEWAY_PORT", "gateway port", "GATEWAY_LAUNCHER=external"),
        ("SIM_CONTROL_PORT", "sim control port", "SIM_CONTROL_PORT"),
    ],
)
def test_a_port_held_by_another_process_fails(
    laptop: Laptop, variable: str, check: str, fix: str
) -> None:
    port = laptop.values[variable]
    with listening(int(port)):
        report = verify(laptop)
    assert report.code == 1
    assert report.failing() == {check}, report.lines
    line = report.line(check)
    assert f"{variable} {port} on 127.0.0.1 is held by" in line
    assert fix in line.partition(" -> ")[2]
    if sys.platform == "linux":  # ss (or lsof) names the holder: this test process
        assert f"pid {os.getpid()}" in line


def test_a_daemon_holding_the_lock_without_an_api_fails(laptop: Laptop) -> None:
    with InstanceLock(laptop.root / "state"):
        report = verify(laptop)
    assert report.code == 1
    assert report.failing() == {"api"}, report.lines
    assert f"pid {os.getpid()}" in report.line("api")
    assert "does not answer" in report.line("api")
    assert report.status("api port") == ["PASS"]


@pytest.mark.anyio
async def test_with_the_daemon_running_its_api_answers_and_its_ports_are_the_nodes(
    laptop: Laptop,
) -> None:
    laptop.write()
    env = clean_env()
    process = await anyio.open_process(
        laptop.command("run", "--demo"),
        env=env,
        cwd=laptop.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        reader = BufferedByteReceiveStream(process.stdout)
        with anyio.fail_after(WAIT):
            while b"ibkr-node API on" not in await reader.receive_until(b"\n", 65536):
                pass
        report = await anyio.to_thread.run_sync(verify, laptop)
        assert report.code == 0, report.lines
        assert report.status("api") == ["PASS"]
        assert f"pid {process.pid}" in report.line("api")
        assert "answers on 127.0.0.1" in report.line("api")
        assert "held by the node" in report.line("api port")
        assert report.status("gateway port") == ["PASS"]  # the node's sim, or not up yet

        with anyio.fail_after(WAIT):
            down = await anyio.run_process(
                laptop.command("ctl", "shutdown"), env=env, cwd=laptop.root, check=False
            )
        assert down.returncode == 0
        with anyio.fail_after(WAIT):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            with anyio.move_on_after(WAIT, shield=True):
                await process.wait()
        await process.aclose()
    after = await anyio.to_thread.run_sync(verify, laptop)
    assert after.code == 0
    assert "not running" in after.line("api")
