"""``ibkr-node configure``: the .env wizard and IBC's config.ini (issue 5; being built)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "configure", help="write .env for this laptop (interactive wizard, or flags)"
    )
    parser.set_defaults(standalone_handler=_not_built)


def _not_built(args: argparse.Namespace) -> int:
    print("ibkr-node configure: not built yet", file=sys.stderr)
    return 2
