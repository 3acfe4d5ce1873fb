"""`ibkr-node configure` as an operator runs it: real processes, answers on stdin or a terminal."""

from __future__ import annotations

import json
import os
import select
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from node.config import Settings, load_settings
from node.plugins.launchers.ibc import check_ibc_settings, parse_ibc_ini
from support import WAIT

LAN = "192.168.1.10"
PI = "192.168.1.50"
PASSWORD = "Tr0ub4dor&3 s3cret"
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX pseudo-terminal")


def clean_env() -> dict[str, str]:
    """The environment without any node variable, so only the env file speaks."""
    return {k: v for k, v in os.environ.items() if k not in Settings.model_fields}


def cli(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", "--env-file", str(cwd / ".env"), "configure", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(),
        timeout=WAIT,
        check=False,
    )


def lines(*answers: str) -> str:
    return "".join(answer + "\n" for answer in answers)


@pytest.fixture
def install(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "sync": tmp_path / "drive",
        "gateway": tmp_path / "Jts" / "ibgateway" / "1030",
        "ibc": tmp_path / "ibc",
    }
    for folder in paths.values():
        folder.mkdir(parents=True)
    script = "StartGateway.bat" if sys.platform == "win32" else "gatewaystart.sh"
    (paths["ibc"] / script).write_text("", encoding="utf-8")
    return paths


def non_interactive(tmp_path: Path, install: dict[str, Path], *extra: str) -> list[str]:
    return ["--non-interactive", "--lan-ip", LAN, "--pi-ip", PI, "--sync-folder",
            str(install["sync"]), "--gateway-path", str(install["gateway"]), "--ibc-path",
            str(install["ibc"]), "--state-dir", "state", *extra]  # fmt: skip


def test_fresh_wizard_writes_a_valid_env_and_the_folders(
    tmp_path: Path, install: dict[str, Path]
) -> None:
    answers = lines(
        "300.1.1.1", LAN,  # an invalid IP is asked again
        "",  # API port: Enter keeps 8000
        PI, str(install["sync"]),
        "",  # launcher: Enter keeps ibc
        str(install["gateway"]), str(install["ibc"]),
        "",  # IBC_INI: Enter keeps {IBC_PATH}/config.ini
        "",  # trading mode: Enter keeps paper
        "state",
    )  # fmt: skip
    done = cli(tmp_path, stdin=answers)
    assert done.returncode == 0, done.stderr
    assert "'300.1.1.1' is not an IP address (e.g. 192.168.1.100); try again" in done.stdout
    assert "checked: the settings load" in done.stdout
    for step in ("keygen", "configure ibc", "verify"):
        assert step in done.stdout
    settings = load_settings(tmp_path / ".env")
    assert (settings.API_BIND_HOST, settings.PI_IP, settings.API_PORT) == (LAN, PI, 8000)
    assert settings.GATEWAY_LAUNCHER == "ibc"
    assert settings.TRADING_MODE == "paper"
    assert settings.ORDERS_ENABLED is False
    assert settings.ibc_ini == install["ibc"] / "config.ini"
    assert tmp_path / "state" == settings.STATE_DIR
    for folder in (tmp_path / "state", install["sync"] / "logs", tmp_path / "secrets"):
        assert folder.is_dir()
    assert list(tmp_path.glob(".env.bak-*")) == []


def test_existing_env_kept_when_the_operator_says_no(
    tmp_path: Path, install: dict[str, Path]
) -> None:
    env = tmp_path / ".env"
    before = f"PI_IP={PI}\r\nAPI_BIND_HOST={LAN}\r\nGATEWAY_LAUNCHER=sim\r\nSTATE_DIR=s\r\n"
    env.write_bytes(before.encode())
    done = cli(tmp_path, stdin=lines("", "", "", "", "", "", "", "n"))
    assert done.returncode == 1
    assert f"[{LAN}]" in done.stdout  # the current values are the defaults
    assert f"[{PI}]" in done.stdout
    assert "nothing written" in done.stdout
    assert env.read_bytes() == before.encode()
    assert list(tmp_path.glob(".env.bak-*")) == []


def test_non_interactive_refuses_an_existing_env_unless_forced(
    tmp_path: Path, install: dict[str, Path]
) -> None:
    env = tmp_path / ".env"
    before = b"PI_IP=10.9.9.9\nMAX_ORDER_QTY=5  # my limit\nAPI_KEY=not-for-show\n"
    env.write_bytes(before)
    refused = cli(tmp_path, *non_interactive(tmp_path, install))
    assert refused.returncode == 2
    assert refused.stderr.startswith("ibkr-node configure: ")
    assert "exists; pass --force to replace it" in refused.stderr
    assert env.read_bytes() == before

    forced = cli(tmp_path, *non_interactive(tmp_path, install, "--force"))
    assert forced.returncode == 0, forced.stderr
    (backup,) = tmp_path.glob(".env.bak-*")
    assert backup.read_bytes() == before
    settings = load_settings(env)
    assert settings.PI_IP == PI
    assert str(settings.MAX_ORDER_QTY) == "5"  # other variables are kept
    assert settings.API_KEY == "not-for-show"
    assert "not-for-show" not in forced.stdout + forced.stderr


def test_input_ending_mid_wizard_writes_nothing(tmp_path: Path) -> None:
    done = cli(tmp_path, stdin=lines(LAN, "8000"))
    assert done.returncode == 1
    assert "ibkr-node configure: the input ended before the last answer: nothing written" in (
        done.stderr
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def ibc_env(tmp_path: Path, install: dict[str, Path]) -> None:
    """What the wizard writes for the ibc launcher, the variables `configure ibc` reads."""
    (tmp_path / ".env").write_text(
        f"GATEWAY_LAUNCHER=ibc\nIBC_PATH={install['ibc']}\n"
        f"IBKR_GATEWAY_PATH={install['gateway']}\nSTATE_DIR=state\n",
        encoding="utf-8",
    )


def test_configure_ibc_writes_what_the_launcher_accepts(
    tmp_path: Path, install: dict[str, Path]
) -> None:
    ibc_env(tmp_path, install)
    jts = tmp_path / "Jts" / "jts.ini"
    jts_before = (
        "[IBGateway]\r\nWriteDebug=false\r\nTrustedIPs=10.0.0.9\r\n\r\n[Logon]\r\nLocale=en\r\n"
    )
    jts.write_bytes(jts_before.encode())
    done = cli(tmp_path, "ibc", "--username", "paperuser", "--password-stdin",
               stdin=PASSWORD + "\nsecond line ignored\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    ini = install["ibc"] / "config.ini"
    if sys.platform != "win32":
        assert stat.S_IMODE(ini.stat().st_mode) == 0o600
    settings = parse_ibc_ini(ini.read_text(encoding="latin-1"))
    check_ibc_settings(settings, ini=ini, trading_mode="paper", command_port=7462)
    assert settings["IbLoginId"] == "paperuser"
    assert settings["IbPassword"] == PASSWORD
    # jts.ini: only the trusted IPs changed, in place, line endings kept.
    assert jts.read_bytes() == jts_before.replace("10.0.0.9", "127.0.0.1").encode()
    (jts_backup,) = jts.parent.glob("jts.ini.bak-*")
    assert jts_backup.read_bytes() == jts_before.encode()

    again = cli(tmp_path, "ibc", "--username", "paperuser", "--password-stdin",
                stdin=PASSWORD + "\n")  # fmt: skip
    assert again.returncode == 2
    assert "config.ini exists; pass --force to replace it" in again.stderr
    forced = cli(tmp_path, "ibc", "--username", "other", "--password-stdin", "--force",
                 "--trusted-ips", "127.0.0.1,::1", stdin=PASSWORD + "\n")  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert parse_ibc_ini(ini.read_text(encoding="latin-1"))["IbLoginId"] == "other"
    assert len(list(ini.parent.glob("config.ini.bak-*"))) == 1
    assert b"TrustedIPs=127.0.0.1,::1\r\n" in jts.read_bytes()


def test_configure_ibc_reads_no_password_from_a_pipe_without_password_stdin(
    tmp_path: Path, install: dict[str, Path]
) -> None:
    ibc_env(tmp_path, install)
    done = cli(tmp_path, "ibc", stdin="paperuser\n" + PASSWORD + "\n")
    assert done.returncode == 2
    assert "the password is read without echo from a terminal" in done.stderr
    assert "--password-stdin" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert not (install["ibc"] / "config.ini").exists()


def test_allow_ips_is_idempotent_and_keeps_the_file(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    before = "# mine\r\nPI_IP=10.0.0.2\r\nALLOWED_IPS=10.0.0.3  # lab\r\nX='a b'\r\n"
    env.write_bytes(before.encode())
    done = cli(tmp_path, "allow-ips", "10.0.0.4,10.0.0.3,10.1.0.0/16")
    assert done.returncode == 0, done.stderr
    after = before.replace("10.0.0.3  #", "10.0.0.3,10.0.0.4,10.1.0.0/16  #")
    assert env.read_bytes() == after.encode()
    (backup,) = tmp_path.glob(".env.bak-*")
    assert backup.read_bytes() == before.encode()
    assert load_settings(env).allowed_ips == ("10.0.0.2", "10.0.0.3", "10.0.0.4", "10.1.0.0/16")

    again = cli(tmp_path, "allow-ips", "10.0.0.4")
    assert again.returncode == 0
    assert "unchanged" in again.stdout
    assert env.read_bytes() == after.encode()
    assert len(list(tmp_path.glob(".env.bak-*"))) == 1


def test_show_json_has_no_secret_and_fails_on_a_bad_env(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("API_KEY=k3y-n0t-sh0wn\nAPI_PORT=8123\nPI_IP=10.0.0.2\nSTATE_DIR=s\n",
                   encoding="utf-8")  # fmt: skip
    done = cli(tmp_path, "show", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert "API_KEY" not in shown
    assert "k3y-n0t-sh0wn" not in done.stdout + done.stderr
    assert shown["API_PORT"] == 8123
    assert shown["PI_IP"] == "10.0.0.2"
    assert shown["STATE_DIR"] == str(tmp_path / "s")

    env.write_text("PI_IP=pi.local\nAPI_PORT=80000\n", encoding="utf-8")
    bad = cli(tmp_path, "show", "--json")
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert "configuration error: PI_IP='pi.local' is invalid" in bad.stderr
    assert "API_PORT='80000' is invalid" in bad.stderr


# ------------------------------------------------------------------ a real terminal (pty)


class Terminal:
    """The CLI on a pseudo-terminal: read until a prompt shows, then type the answer."""

    def __init__(self, cwd: Path, *args: str) -> None:
        import pty

        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node", "--env-file", str(cwd / ".env"), "configure", *args],
            stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=clean_env(),
            start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        self.seen = ""
        self.cursor = 0  # what expect() has matched so far

    def expect(self, text: str) -> None:
        while (found := self.seen.find(text, self.cursor)) < 0:
            ready, _, _ = select.select([self.master], [], [], WAIT)
            assert ready, f"no {text!r} on the terminal; it shows:\n{self.seen}"
            self.seen += self._read()
        self.cursor = found + len(text)

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def finish(self) -> int:
        while True:
            ready, _, _ = select.select([self.master], [], [], WAIT)
            assert ready, f"the CLI did not end; the terminal shows:\n{self.seen}"
            chunk = self._read()
            if not chunk:
                break
            self.seen += chunk
        os.close(self.master)
        return self.process.wait(timeout=WAIT)

    def _read(self) -> str:
        try:
            return os.read(self.master, 4096).decode(errors="replace")
        except OSError:  # EIO: the CLI closed the terminal
            return ""


@posix_only
def test_wizard_on_a_terminal(tmp_path: Path, install: dict[str, Path]) -> None:
    term = Terminal(tmp_path)
    for prompt, answer in [
        ("LAN IP", LAN), ("API port [8000]", ""), ("The Pi's IP", "pi.local"),
        ("try again", PI), ("Sync folder", "none"), ("launcher", "external"),
        ("Trading mode (paper, live) [paper]", "live"), ("Type live again", "no"),
        ("State folder", "state"),
    ]:  # fmt: skip
        term.expect(prompt)
        term.type(answer)
    code = term.finish()
    assert code == 0, term.seen
    assert "LIVE TRADING" in term.seen
    assert "not confirmed: paper" in term.seen
    settings = load_settings(tmp_path / ".env")
    assert (settings.PI_IP, settings.GATEWAY_LAUNCHER, settings.TRADING_MODE) == (
        PI, "external", "paper",
    )  # fmt: skip
    assert settings.GDRIVE_BASE_PATH is None


@posix_only
def test_configure_ibc_password_is_not_echoed(tmp_path: Path, install: dict[str, Path]) -> None:
    ibc_env(tmp_path, install)
    term = Terminal(tmp_path, "ibc", "--jts-ini", str(tmp_path / "jts.ini"))
    term.expect("IBKR username")
    term.type("paperuser")
    term.expect("IBKR password (not shown)")
    term.type(PASSWORD)
    term.expect("The same password again")
    term.type(PASSWORD + "typo")
    term.expect("the two passwords differ")
    term.expect("IBKR password (not shown)")
    term.type(PASSWORD)
    term.expect("The same password again")
    term.type(PASSWORD)
    code = term.finish()
    assert code == 0, term.seen
    assert "paperuser" in term.seen  # the username is echoed as typed...
    assert PASSWORD[:8] not in term.seen  # ...the password never
    ini = install["ibc"] / "config.ini"
    assert parse_ibc_ini(ini.read_text(encoding="latin-1"))["IbPassword"] == PASSWORD
    assert (tmp_path / "jts.ini").read_text() == "[IBGateway]\nTrustedIPs=127.0.0.1\n"
