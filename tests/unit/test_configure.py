"""The .env wizard's questions, checks and file, driven directly (the CLI runs in tests/e2e)."""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from node import configure
from node.cli import build_parser
from node.config import load_settings
from node.envfile import parse_values

LAN = "192.168.1.10"
PI = "192.168.1.50"


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["configure", *argv])


class Script:
    """Answers typed one per question; EOFError when they run out, as input() does."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.answers:
            raise EOFError
        return self.answers.pop(0)


@pytest.fixture(autouse=True)
def fixed_lan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(configure, "detect_lan_ip", lambda: LAN)


@pytest.fixture
def install(tmp_path: Path) -> dict[str, Path]:
    """A sync folder, a gateway and IBC where the questions can find them."""
    paths = {
        "sync": tmp_path / "drive",
        "gateway": tmp_path / "Jts" / "ibgateway" / "1030",
        "ibc": tmp_path / "ibc",
    }
    for folder in paths.values():
        folder.mkdir(parents=True)
    (paths["ibc"] / configure.start_script(paths["ibc"]).name).write_text("", encoding="utf-8")
    paths["exe"] = paths["gateway"] / "ibgateway.exe"
    paths["exe"].write_text("", encoding="utf-8")
    return paths


def wizard(
    tmp_path: Path, *answers: str, current: dict[str, str] | None = None, interactive: bool = True
) -> tuple[configure.Wizard, Script]:
    script = Script(*answers)
    return configure.Wizard(tmp_path / ".env", current or {}, interactive, script), script


# ------------------------------------------------------------------------------ checks


@pytest.mark.parametrize(
    ("check", "text", "result"),
    [
        (configure.check_ip, " 192.168.1.5 ", "192.168.1.5"),
        (configure.check_ip, "::1", "::1"),
        (configure.check_port, "8000", "8000"),
        (configure.check_port, "065535", "65535"),
        (configure.check_launcher, "IBC", "ibc"),
        (configure.check_mode, "Paper", "paper"),
        (configure.allowed_entry, "10.0.0.5/24", "10.0.0.0/24"),
        (configure.allowed_entry, "10.0.0.5", "10.0.0.5"),
        (configure.unquote, '"C:\\Program Files\\IBC"', "C:\\Program Files\\IBC"),
        (configure.unquote, "'x'", "x"),
        (configure.unquote, '"', '"'),
    ],
)
def test_accepted(check: Callable[[str], str], text: str, result: str) -> None:
    assert check(text) == result


@pytest.mark.parametrize(
    ("check", "text", "reason"),
    [
        (configure.check_ip, "300.1.1.1", "'300.1.1.1' is not an IP address"),
        (configure.check_ip, "pi.local", "'pi.local' is not an IP address"),
        (configure.check_port, "0", "'0' is not a TCP port from 1 to 65535"),
        (configure.check_port, "80a", "'80a' is not a TCP port"),
        (configure.check_port, "65536", "is not a TCP port"),
        (configure.check_launcher, "docker", "'docker' is not one of ibc, exe, external, sim"),
        (configure.check_mode, "real", "'real' is not paper or live"),
        (configure.allowed_entry, "10.0.0.300", "'10.0.0.300' is not an IP address or network"),
    ],
)
def test_refused_with_a_reason(check: Callable[[str], str], text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check(text)


def test_parse_allowed_dedupes_in_order() -> None:
    assert configure.parse_allowed("10.0.0.7, 10.0.0.6,10.0.0.7,,") == ["10.0.0.7", "10.0.0.6"]
    with pytest.raises(ValueError, match="no address"):
        configure.parse_allowed(",")


class FakeSocket:
    def __init__(self, address: str | None) -> None:
        self.address = address

    def __enter__(self) -> FakeSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def connect(self, target: tuple[str, int]) -> None:
        if self.address is None:
            raise OSError("Network is unreachable")

    def getsockname(self) -> tuple[str, int]:
        assert self.address is not None
        return (self.address, 40000)


@pytest.mark.parametrize(
    ("address", "detected"),
    [("192.168.1.7", "192.168.1.7"), ("127.0.1.1", None), ("0.0.0.0", None), (None, None)],
)
def test_detect_lan_ip(
    monkeypatch: pytest.MonkeyPatch, address: str | None, detected: str | None
) -> None:
    monkeypatch.undo()  # the real function, over a fake socket: no traffic at all
    monkeypatch.setattr(socket, "socket", lambda *args: FakeSocket(address))
    assert configure.detect_lan_ip() == detected


# ---------------------------------------------------------------------------- questions


def test_fresh_answers(tmp_path: Path, install: dict[str, Path]) -> None:
    w, script = wizard(tmp_path, "", "", PI, str(install["sync"]), "", str(install["gateway"]),
                       f'"{install["ibc"]}"', "", "", "state")  # fmt: skip
    answers = w.collect(parse())
    assert answers == {
        "API_BIND_HOST": LAN,
        "API_PORT": "8000",
        "PI_IP": PI,
        "GDRIVE_BASE_PATH": str(install["sync"]),
        "GATEWAY_LAUNCHER": "ibc",
        "IBKR_GATEWAY_PATH": str(install["gateway"]),
        "IBC_PATH": str(install["ibc"]),
        "IBC_INI": str(install["ibc"] / "config.ini"),
        "TRADING_MODE": "paper",
        "STATE_DIR": "state",
    }
    assert script.prompts[0] == f"This laptop's LAN IP (the API listens there) [{LAN}]: "
    assert script.prompts[2] == "The Pi's IP: "  # no default: the Pi cannot be guessed
    ini = install["ibc"] / "config.ini"
    assert script.prompts[-3] == f"IBC's config.ini [{ini}]: "
    assert script.prompts[-2] == "Trading mode (paper, live) [paper]: "


def test_invalid_answers_reprompt_with_one_line_reasons(
    tmp_path: Path, install: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    w, _ = wizard(tmp_path, "300.1.1.1", "", "99999", "8080", "", LAN, PI,
                       str(tmp_path / "nowhere"), "none", "docker", "sim", "demo", "paper",
                       "")  # fmt: skip
    answers = w.collect(parse())
    assert answers["API_BIND_HOST"] == LAN
    assert answers["API_PORT"] == "8080"
    assert answers["PI_IP"] == PI
    assert answers["GDRIVE_BASE_PATH"] is None
    assert answers["GATEWAY_LAUNCHER"] == "sim"
    assert "IBKR_GATEWAY_PATH" not in answers  # the sim launcher needs no paths
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "  '300.1.1.1' is not an IP address (e.g. 192.168.1.100); try again",
        "  '99999' is not a TCP port from 1 to 65535; try again",
        "  an answer is needed; try again",
        f"  {LAN} is this laptop's own address (the LAN IP above); try again",
        f"  {tmp_path / 'nowhere'} is not a folder (is the sync client running?); try again",
        "  'docker' is not one of ibc, exe, external, sim; try again",
        "  'demo' is not paper or live; try again",
    ]


def test_current_values_are_the_defaults(tmp_path: Path, install: dict[str, Path]) -> None:
    current = {
        "API_BIND_HOST": "10.1.1.2", "API_PORT": "8100", "PI_IP": "10.1.1.3",
        "GDRIVE_BASE_PATH": str(install["sync"]), "GATEWAY_LAUNCHER": "exe",
        "IBKR_GATEWAY_PATH": str(install["exe"]), "TRADING_MODE": "paper", "STATE_DIR": "st",
    }  # fmt: skip
    w, script = wizard(tmp_path, *[""] * 8, current=current)
    assert w.collect(parse()) == current
    assert script.prompts[0].endswith(f"(detected now: {LAN}) [10.1.1.2]: ")
    assert script.prompts[5] == f"IB Gateway's executable [{install['exe']}]: "


def test_exe_needs_the_executable_not_its_folder(
    tmp_path: Path, install: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    w, _ = wizard(tmp_path, "", "", PI, "", "exe", str(install["gateway"]), str(install["exe"]),
                  "", "")  # fmt: skip
    assert w.collect(parse())["IBKR_GATEWAY_PATH"] == str(install["exe"])
    assert "is not a file (the gateway's executable" in capsys.readouterr().out


def test_ibc_folder_without_its_start_script_is_refused(
    tmp_path: Path, install: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    w, _ = wizard(tmp_path, "", "", PI, "", "", str(install["gateway"]), str(install["sync"]),
                  str(install["ibc"]), "", "", "")  # fmt: skip
    assert w.collect(parse())["IBC_PATH"] == str(install["ibc"])
    assert "has no " in capsys.readouterr().out


def test_ibc_ini_default_is_what_the_start_script_reads(
    tmp_path: Path, install: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "linux")  # the POSIX start script, on any OS
    (install["ibc"] / "gatewaystart.sh").write_text(
        f"IBC_INI={tmp_path / 'elsewhere.ini'}\n", encoding="utf-8"
    )
    w, script = wizard(tmp_path, "", "", PI, "", "", str(install["gateway"]),
                       str(install["ibc"]), "", "", "")  # fmt: skip
    assert w.collect(parse())["IBC_INI"] == str(tmp_path / "elsewhere.ini")
    assert "(the one IBC's start script reads)" in script.prompts[7]
    # A current IBC_INI stays the default, and the question says what the script reads.
    current = {"IBC_INI": "mine.ini"}
    w, script = wizard(tmp_path, "", "", PI, "", "", str(install["gateway"]),
                       str(install["ibc"]), "", "", "", current=current)  # fmt: skip
    assert w.collect(parse())["IBC_INI"] == "mine.ini"
    assert (
        f"(IBC's start script reads {tmp_path / 'elsewhere.ini'}) [mine.ini]" in script.prompts[7]
    )


@pytest.mark.parametrize(("confirm", "mode"), [("live", "live"), ("yes", "paper"), ("", "paper")])
def test_live_needs_typing_live_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], confirm: str, mode: str
) -> None:
    w, _ = wizard(tmp_path, "", "", PI, "", "external", "live", confirm, "")
    assert w.collect(parse())["TRADING_MODE"] == mode
    out = capsys.readouterr().out
    assert "LIVE TRADING" in out
    assert ("not confirmed: paper" in out) == (mode == "paper")


def test_flags_answer_their_questions(tmp_path: Path, install: dict[str, Path]) -> None:
    args = parse("--lan-ip", "10.0.0.2", "--pi-ip", "10.0.0.3", "--api-port", "8001",
                 "--sync-folder", "none", "--launcher", "ibc", "--gateway-path",
                 str(install["gateway"]), "--ibc-path", str(install["ibc"]), "--ibc-ini",
                 "my.ini", "--trading-mode", "paper", "--state-dir", "s")  # fmt: skip
    w, script = wizard(tmp_path)
    answers = w.collect(args)
    assert script.prompts == []
    assert answers["API_BIND_HOST"] == "10.0.0.2"
    assert answers["GDRIVE_BASE_PATH"] is None
    assert answers["IBC_INI"] == "my.ini"


def test_non_interactive_takes_flags_then_current_then_defaults(
    tmp_path: Path, install: dict[str, Path]
) -> None:
    current = {"PI_IP": PI, "IBKR_GATEWAY_PATH": str(install["gateway"]),
               "IBC_PATH": str(install["ibc"]), "GDRIVE_BASE_PATH": ""}  # fmt: skip
    w, script = wizard(tmp_path, current=current, interactive=False)
    answers = w.collect(parse("--non-interactive", "--state-dir", "s"))
    assert script.prompts == []
    assert answers["API_BIND_HOST"] == LAN  # detected
    assert answers["PI_IP"] == PI  # current
    assert answers["GATEWAY_LAUNCHER"] == "ibc"  # default
    assert answers["TRADING_MODE"] == "paper"
    assert answers["GDRIVE_BASE_PATH"] is None  # `GDRIVE_BASE_PATH=` is not a folder choice


@pytest.mark.parametrize(
    ("argv", "current", "reason"),
    [
        ([], {}, r"--pi-ip is needed \(The Pi's IP; no value in .*\.env\)"),
        (["--pi-ip", PI, "--launcher", "exe"], {}, "--gateway-path is needed"),
        (["--pi-ip", PI, "--sync-folder", "/no/such/folder"], {},
         "--sync-folder /no/such/folder: /no/such/folder is not a folder"),
        ([], {"PI_IP": "pi.local"},
         r"PI_IP in .*\.env: 'pi.local' is not an IP address .*; pass --pi-ip"),
    ],
)  # fmt: skip
def test_non_interactive_refuses_what_it_cannot_answer(
    tmp_path: Path, argv: list[str], current: dict[str, str], reason: str
) -> None:
    w, _ = wizard(tmp_path, current=current, interactive=False)
    with pytest.raises(configure.Refused, match=reason):
        w.collect(parse("--non-interactive", *argv))


def test_input_ending_mid_wizard_raises_eof(tmp_path: Path) -> None:
    w, _ = wizard(tmp_path, "", "")
    with pytest.raises(EOFError):
        w.collect(parse())


# ------------------------------------------------------------------------------ the file


def test_the_written_file_loads_and_keeps_other_variables(tmp_path: Path) -> None:
    previous = "API_KEY=abc\nMAX_ORDER_QTY=10  # keep\nPI_IP=10.0.0.1\n# a comment\n"
    values: dict[str, str | None] = {name: configure._default(name)
                                     for name in configure.TEMPLATE_KEYS}  # fmt: skip
    values.update({"API_BIND_HOST": LAN, "PI_IP": PI, "STATE_DIR": "state",
                   "GATEWAY_LAUNCHER": "sim", "GDRIVE_BASE_PATH": r"G:\My Drive\x #1"})  # fmt: skip
    text = configure.render_env(values, configure.kept_lines(previous))
    env = tmp_path / ".env"
    env.write_text(text, encoding="utf-8")
    settings = load_settings(env)
    assert settings.API_BIND_HOST == LAN
    assert settings.PI_IP == PI
    assert settings.API_KEY == "abc"
    assert str(settings.MAX_ORDER_QTY) == "10"
    assert settings.ORDERS_ENABLED is False
    assert settings.TRADING_MODE == "paper"
    assert tmp_path / "state" == settings.STATE_DIR
    assert settings.IBC_PATH is None  # written commented out, not as an empty path
    assert parse_values(text)["GDRIVE_BASE_PATH"] == r"G:\My Drive\x #1"
    assert "# IBC_PATH=\n" in text
    assert "\nMAX_ORDER_QTY=10  # keep\n" in text
    assert text.count("PI_IP=") == 1
    assert max(len(line) for line in text.splitlines()) <= 100


def test_defaults_come_from_settings() -> None:
    assert configure._default("API_PORT") == "8000"
    assert configure._default("ORDERS_ENABLED") == "false"
    assert configure._default("API_KEY_FILE") == "secrets/api_key.txt"
    assert configure._default("STATE_DIR") is None  # per platform: asked instead
    assert configure._default("PI_IP") is None


def test_show_resolves_paths_and_holds_no_secret(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("API_KEY=topsecret\nNOTIFY_PUSH_URL=https://h/x\nSTATE_DIR=s\nIBC_PATH=ibc\n",
                   encoding="utf-8")  # fmt: skip
    shown: dict[str, Any] = configure.resolved(load_settings(env))
    assert set(shown) == set(configure.SHOWN)
    assert "topsecret" not in repr(shown)
    assert "https://h/x" not in repr(shown)
    assert shown["AUDIT_DB_PATH"] == str(tmp_path / "s" / "audit.db")
    assert shown["IBC_INI"] == str(tmp_path / "ibc" / "config.ini")
    assert shown["LOG_FILE_PATH"] == str(tmp_path / "s" / "logs")
    assert shown["API_PORT"] == 8000
    assert shown["GDRIVE_BASE_PATH"] is None
