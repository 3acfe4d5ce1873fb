"""Editing .env: values read back by python-dotenv unchanged, every other byte kept."""

from __future__ import annotations

import io
import os
import stat
import sys
from datetime import datetime
from pathlib import Path

import pytest
from dotenv import dotenv_values

from node import envfile

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")


def read_back(line: str) -> str | None:
    return dotenv_values(stream=io.StringIO(line), interpolate=False).get("KEY")


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("192.168.1.5", "192.168.1.5"),
        ("", ""),
        (r"C:\Jts\ibgateway\1030", r"C:\Jts\ibgateway\1030"),
        (r"C:\Program Files\IBC", r"C:\Program Files\IBC"),
        ("G:\\My Drive\\", "G:\\My Drive\\"),
        ("a#b", "a#b"),
        ("a #b", r"'a #b'"),
        (" lead", "' lead'"),
        ("trail ", "'trail '"),
        ("#start", "'#start'"),
        ("'quoted'", r"'\'quoted\''"),
        ('"dq"', "'\"dq\"'"),
        ("it's", "it's"),
        ("C:\\a b\\it's #1\\", "'C:\\\\a b\\\\it\\'s #1\\\\'"),
        ("Zürich", "Zürich"),
    ],
)
def test_values_read_back_unchanged(value: str, written: str) -> None:
    assert envfile.format_value(value) == written
    assert read_back(f"KEY={written}\n") == value
    assert read_back(f"KEY={written}  # a comment\n") == value


def test_line_breaks_are_refused() -> None:
    with pytest.raises(envfile.EnvFileError, match="span lines"):
        envfile.format_value("a\nb")


TEXT = (
    "# head comment\r\n"
    "export A=1\r\n"
    "\r\n"
    "ALLOWED_IPS=10.0.0.1   # the lab\r\n"
    "B='x y'\r\n"
    "not a binding line\r\n"
    "ALLOWED_IPS=10.0.0.2\r\n"
    "C=\r\n"
)


def test_bindings_add_up_to_the_text() -> None:
    pieces = envfile.bindings(TEXT)
    assert "".join(original for _, original in pieces) == TEXT
    assert [name for name, _ in pieces if name] == ["A", "ALLOWED_IPS", "B", "ALLOWED_IPS", "C"]


def test_set_value_edits_the_winning_line_only() -> None:
    out = envfile.set_value(TEXT, "ALLOWED_IPS", "10.0.0.2,10.0.0.3")
    assert out == TEXT.replace("ALLOWED_IPS=10.0.0.2\r\n", "ALLOWED_IPS=10.0.0.2,10.0.0.3\r\n")
    assert envfile.parse_values(out)["ALLOWED_IPS"] == "10.0.0.2,10.0.0.3"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("KEY=old\n", "KEY=new\n"),
        ("KEY=old", "KEY=new"),
        ("export KEY=old\n", "export KEY=new\n"),
        ("KEY = old\n", "KEY = new\n"),
        ("KEY=old   # why\n", "KEY=new   # why\n"),
        ("KEY= # empty, commented\n", "KEY=new # empty, commented\n"),
        ("KEY=\n", "KEY=new\n"),
        ("KEY='o l d' # c\r\n", "KEY=new # c\r\n"),
        ('KEY="o\\"ld"\n', "KEY=new\n"),
        ("  KEY=old\n", "  KEY=new\n"),
        ("KEY=   \n", "KEY=   new\n"),
        ("KEY=#x\n", "KEY=new\n"),
        ("KEY=a b  c\n", "KEY=new\n"),
    ],
)
def test_set_value_keeps_the_line_around_the_value(line: str, expected: str) -> None:
    text = "A=1\n" + line
    out = envfile.set_value(text, "KEY", "new")
    assert out == "A=1\n" + expected
    assert envfile.parse_values(out) == {"A": "1", "KEY": "new"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "KEY=v\n"),
        ("A=1\n", "A=1\nKEY=v\n"),
        ("A=1", "A=1\nKEY=v\n"),
        ("A=1\r\n", "A=1\r\nKEY=v\r\n"),
        ("# KEY=commented\n", "# KEY=commented\nKEY=v\n"),
    ],
)
def test_set_value_appends_a_missing_variable(text: str, expected: str) -> None:
    assert envfile.set_value(text, "KEY", "v") == expected


def test_parse_values_is_raw() -> None:
    assert envfile.parse_values("A=${HOME}/x\nB\nC='q'\n") == {"A": "${HOME}/x", "C": "q"}


def test_read_text_refuses_what_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"A=\xff\n")
    with pytest.raises(envfile.EnvFileError, match="not UTF-8"):
        envfile.read_text(path)


@posix_only
def test_write_atomic_is_owner_only_from_creation(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.ini"
    envfile.write_atomic(path, b"secret\n")
    assert path.read_bytes() == b"secret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.ini"]  # no temp left


@posix_only
def test_write_atomic_keeps_a_given_mode(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"A=1\n")
    os.chmod(path, 0o640)
    envfile.write_atomic(path, b"A=2\n", mode=envfile.file_mode(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.read_bytes() == b"A=2\n"


def test_backup_copies_bytes_and_never_overwrites_one(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"A=1\r\n")
    now = datetime(2024, 5, 6, 7, 8, 9)
    first = envfile.backup(path, now=now)
    path.write_bytes(b"A=2\n")
    second = envfile.backup(path, now=now)
    assert first.name == ".env.bak-20240506-070809"
    assert second.name == ".env.bak-20240506-070809-2"
    assert first.read_bytes() == b"A=1\r\n"
    assert second.read_bytes() == b"A=2\n"
    if sys.platform != "win32":
        assert stat.S_IMODE(first.stat().st_mode) == 0o600
