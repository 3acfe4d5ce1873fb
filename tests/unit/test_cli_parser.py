"""The command line's shape: --env-file before or after the command (DESIGN §10 writes
`ibkr-node run --env-file <repo>\\.env`; the seed's scripts put it first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.cli import build_parser


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--env-file", "a/.env", "run"], Path("a/.env")),
        (["run", "--env-file", "b/.env"], Path("b/.env")),
        (["ctl", "start", "--force", "--env-file", "c/.env"], Path("c/.env")),
        (["ctl", "--env-file", "d/.env", "stop"], Path("d/.env")),
        (["--env-file", "e/.env", "state", "--json"], Path("e/.env")),
        (["configure", "show", "--env-file", "f/.env"], Path("f/.env")),
        (["state"], None),
    ],
)
def test_env_file_is_taken_before_or_after_the_command(
    argv: list[str], expected: Path | None
) -> None:
    assert build_parser().parse_args(argv).env_file == expected


def test_the_option_after_the_command_wins_over_the_one_before() -> None:
    args = build_parser().parse_args(["--env-file", "first/.env", "run", "--env-file", "x/.env"])
    assert args.env_file == Path("x/.env")
