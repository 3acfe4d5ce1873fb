"""`ibkr-node keygen` as an operator (or generate-api-key.ps1) runs it: a real process, a real file.

stdout is the key alone (a script captures it), the explanation goes to stderr; the file is
owner-only from creation on POSIX; `--rotate` keeps exactly one previous key (DESIGN.md §6).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from node.atomic import write_text_atomic
from node.config import Settings
from support import WAIT

POSIX = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX; ACLs on Windows")


def keygen(
    tmp_path: Path, *args: str, umask: int = -1, **variables: str
) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / ".env"
    if not env_file.exists():
        env_file.write_text("API_KEY_FILE=secrets/api_key.txt\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
    command = [sys.executable, "-m", "node", "--env-file", str(env_file), "keygen", *args]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**env, **variables},
        cwd=tmp_path,
        timeout=WAIT,
        check=False,
        umask=umask,
    )


def the_key(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    [key] = result.stdout.splitlines()  # the key alone on stdout
    assert len(key) >= 43
    return key


def key_lines(tmp_path: Path) -> list[str]:
    return (tmp_path / "secrets" / "api_key.txt").read_text(encoding="utf-8").splitlines()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_key_is_printed_once_and_written(tmp_path: Path) -> None:
    result = keygen(tmp_path)
    key = the_key(result)
    assert key_lines(tmp_path) == [key]
    assert key not in result.stderr
    assert "secrets" in result.stderr  # where it went, for the person reading
    assert "give it to the Pi" in result.stderr


@POSIX
def test_the_key_file_and_a_new_secrets_folder_are_owner_only(tmp_path: Path) -> None:
    # A permissive umask must not matter: the mode is set before the key is written.
    result = keygen(tmp_path, umask=0)
    the_key(result)
    assert mode(tmp_path / "secrets" / "api_key.txt") == 0o600
    assert mode(tmp_path / "secrets") == 0o700


def test_a_second_keygen_without_rotate_refuses(tmp_path: Path) -> None:
    key = the_key(keygen(tmp_path))
    again = keygen(tmp_path)
    assert again.returncode == 2
    assert again.stdout == ""
    assert "--rotate" in again.stderr
    assert key_lines(tmp_path) == [key]


def test_rotation_keeps_exactly_one_previous_key(tmp_path: Path) -> None:
    first = the_key(keygen(tmp_path))
    second_run = keygen(tmp_path, "--rotate")
    second = the_key(second_run)
    assert "previous key stays valid" in second_run.stderr
    assert key_lines(tmp_path) == [second, first]
    third = the_key(keygen(tmp_path, "--rotate"))
    assert key_lines(tmp_path) == [third, second]
    assert len({first, second, third}) == 3


@POSIX
def test_rotation_tightens_a_loose_key_file(tmp_path: Path) -> None:
    first = the_key(keygen(tmp_path))
    key_file = tmp_path / "secrets" / "api_key.txt"
    key_file.chmod(0o644)
    second = the_key(keygen(tmp_path, "--rotate"))
    assert key_lines(tmp_path) == [second, first]
    assert mode(key_file) == 0o600


def test_an_empty_key_file_holds_no_key_to_protect(tmp_path: Path) -> None:
    key_file = tmp_path / "secrets" / "api_key.txt"
    key_file.parent.mkdir()
    key_file.write_text("\n", encoding="utf-8")
    key = the_key(keygen(tmp_path))
    assert key_lines(tmp_path) == [key]


def test_api_key_also_set_is_mentioned(tmp_path: Path) -> None:
    result = keygen(tmp_path, API_KEY="x" * 43)
    the_key(result)
    assert "API_KEY is also set" in result.stderr
    assert "x" * 43 not in result.stderr + result.stdout


@POSIX
def test_write_text_atomic_sets_the_mode_before_the_rename(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    write_text_atomic(target, "one\n", mode=0o640)
    assert mode(target) == 0o640
    write_text_atomic(target, "two\n", mode=0o600)
    assert (target.read_text(encoding="utf-8"), mode(target)) == ("two\n", 0o600)
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]  # no temp file left
