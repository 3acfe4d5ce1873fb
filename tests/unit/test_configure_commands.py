"""`configure ibc`, `allow-ips` and `show` handlers called in process, as tables."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from node.cli import build_parser
from node.plugins.launchers.ibc import check_ibc_settings, parse_ibc_ini

PASSWORD = "Tr0ub4dor&3 s3cret"


def run(env: Path, *argv: str, stdin: str = "", monkeypatch: pytest.MonkeyPatch) -> int:
    """The handler the CLI would call, with stdin a pipe holding ``stdin``."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    args = build_parser().parse_args(["--env-file", str(env), "configure", *argv])
    code: int = args.standalone_handler(args)
    return code


@pytest.fixture
def ibc_env(tmp_path: Path) -> Path:
    ibc = tmp_path / "ibc"
    gateway = tmp_path / "Jts" / "ibgateway" / "1030"
    ibc.mkdir()
    gateway.mkdir(parents=True)
    env = tmp_path / ".env"
    env.write_text(f"GATEWAY_LAUNCHER=ibc\nIBC_PATH={ibc}\nIBKR_GATEWAY_PATH={gateway}\n"
                   "STATE_DIR=state\n", encoding="utf-8")  # fmt: skip
    return env


@pytest.mark.parametrize(
    ("argv", "stdin", "reason"),
    [
        ([], "paperuser\n" + PASSWORD + "\n", "the password is read without echo from a terminal"),
        (["--password-stdin"], PASSWORD + "\n", "--password-stdin needs --username"),
        (["--username", "u", "--password-stdin"], "\n", "an empty password is refused"),
        (["--username", "u", "--password-stdin"], "", "no password on stdin's first line"),
        (["--username", "u", "--non-interactive"], PASSWORD, "--non-interactive needs --username"),
        (["--non-interactive", "--password-stdin"], PASSWORD, "--password-stdin needs --username"),
    ],
)  # fmt: skip
def test_configure_ibc_refusals(
    ibc_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    stdin: str,
    reason: str,
) -> None:
    assert run(ibc_env, "ibc", *argv, stdin=stdin, monkeypatch=monkeypatch) == 2
    out = capsys.readouterr()
    assert reason in out.err
    assert out.err.startswith("ibkr-node configure: ")
    assert PASSWORD not in out.out + out.err
    assert not (ibc_env.parent / "ibc" / "config.ini").exists()


@pytest.mark.parametrize(
    ("env_text", "argv", "reason"),
    [
        ("GATEWAY_LAUNCHER=sim\n", [], "IBC_INI and IBC_PATH are unset"),
        ("IBC_PATH=ibc\nIBKR_GATEWAY_PATH=/opt/gw\n", [],
         "cannot tell where jts.ini is (no Jts folder above IBKR_GATEWAY_PATH); pass --jts-ini"),
        ("IBC_PATH=ibc\n", [], "cannot tell where jts.ini is"),
        ("IBC_PATH=ibc\nPI_IP=pi.local\n", [],
         "the env file does not load; run `ibkr-node configure` or fix:\n"
         "configuration error: PI_IP='pi.local' is invalid"),
    ],
)  # fmt: skip
def test_configure_ibc_needs_valid_ibc_settings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env_text: str,
    argv: list[str],
    reason: str,
) -> None:
    env = tmp_path / ".env"
    env.write_text(env_text, encoding="utf-8")
    code = run(env, "ibc", "--username", "u", "--password-stdin", *argv,
               stdin=PASSWORD + "\n", monkeypatch=monkeypatch)  # fmt: skip
    assert code == 2
    assert reason in capsys.readouterr().err


def test_configure_ibc_live_warns_and_writes_live(
    ibc_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ibc_env.write_text(ibc_env.read_text() + "TRADING_MODE=live\nIBC_COMMAND_PORT=7500\n")
    code = run(ibc_env, "ibc", "--username", "u", "--password-stdin",
               stdin=PASSWORD + "\n", monkeypatch=monkeypatch)  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "LIVE TRADING" in err
    assert "Auto-login to a live account is at your own risk" in err
    ini = ibc_env.parent / "ibc" / "config.ini"
    settings = parse_ibc_ini(ini.read_text(encoding="latin-1"))
    check_ibc_settings(settings, ini=ini, trading_mode="live", command_port=7500)


def test_configure_ibc_live_needs_typing_live(
    ibc_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ibc_env.write_text(ibc_env.read_text() + "TRADING_MODE=live\n")
    assert run(ibc_env, "ibc", stdin="yes\n", monkeypatch=monkeypatch) == 1
    assert "not confirmed: nothing written" in capsys.readouterr().out
    assert not (ibc_env.parent / "ibc" / "config.ini").exists()


def test_configure_ibc_interactive_no_keeps_the_file(
    ibc_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ini = ibc_env.parent / "ibc" / "config.ini"
    ini.write_bytes(b"IbLoginId=old\n")
    assert run(ibc_env, "ibc", stdin="n\n", monkeypatch=monkeypatch) == 1
    assert "unchanged: nothing written" in capsys.readouterr().out
    assert ini.read_bytes() == b"IbLoginId=old\n"
    assert list(ini.parent.glob("*.bak-*")) == []


def test_configure_ibc_input_ending_writes_nothing(
    ibc_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(ibc_env, "ibc", stdin="", monkeypatch=monkeypatch) == 1
    assert "the input ended before the last answer: nothing written" in capsys.readouterr().err
    assert not (ibc_env.parent / "ibc" / "config.ini").exists()


def test_configure_ibc_leaves_a_right_jts_ini_alone(
    ibc_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    jts = ibc_env.parent / "Jts" / "jts.ini"
    jts.write_bytes(b"[IBGateway]\nTrustedIPs=127.0.0.1\n")
    code = run(ibc_env, "ibc", "--username", "u", "--password-stdin",
               stdin=PASSWORD + "\n", monkeypatch=monkeypatch)  # fmt: skip
    assert code == 0
    assert "already has TrustedIPs=127.0.0.1" in capsys.readouterr().out
    assert list(jts.parent.glob("jts.ini.bak-*")) == []


# ----------------------------------------------------------------------------- allow-ips


def test_allow_ips_creates_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"PI_IP=10.0.0.2")
    assert run(env, "allow-ips", "10.0.0.4, 10.0.0.4,::1", monkeypatch=monkeypatch) == 0
    assert env.read_bytes() == b"PI_IP=10.0.0.2\nALLOWED_IPS=10.0.0.4,::1\n"
    assert "ALLOWED_IPS=10.0.0.4,::1 (added 10.0.0.4, ::1;" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "no env file at"),
        ("ALLOWED_IPS=10.0.0.1,lab\n", "ALLOWED_IPS in "),
    ],
)
def test_allow_ips_refusals(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str | None,
    reason: str,
) -> None:
    env = tmp_path / ".env"
    if text is not None:
        env.write_text(text, encoding="utf-8")
    assert run(env, "allow-ips", "10.0.0.9", monkeypatch=monkeypatch) == 2
    assert reason in capsys.readouterr().err
    assert (env.read_text() if text is not None else None) == text


def test_allow_ips_validates_its_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["configure", "allow-ips", "10.0.0.5,pi.local"])
    assert exited.value.code == 2
    assert "'pi.local' is not an IP address or network" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- show


def test_show_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = tmp_path / ".env"
    env.write_text("API_KEY=hidden-k3y\nAPI_PORT=8123\nSTATE_DIR=s\n", encoding="utf-8")
    assert run(env, "show", monkeypatch=monkeypatch) == 0
    out = capsys.readouterr().out
    assert "API_PORT=8123\n" in out
    assert "ORDERS_ENABLED=false\n" in out
    assert "PI_IP=\n" in out
    assert f"STATE_DIR={tmp_path / 's'}\n" in out
    assert "hidden-k3y" not in out


def test_show_without_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path / "missing.env", "show", monkeypatch=monkeypatch) == 2
    assert "no such file" in capsys.readouterr().err


def test_wizard_refuses_a_folder_as_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "--non-interactive", monkeypatch=monkeypatch) == 2
    assert "is a folder" in capsys.readouterr().err
