"""``ibkr-node verify``: pre-flight checks, one pass/fail line each (issue 5; being built)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "verify", help="pre-flight checks: one pass/fail line each, exit 1 on any failure"
    )
    parser.set_defaults(standalone_handler=_not_built)


def _not_built(args: argparse.Namespace) -> int:
    print("ibkr-node verify: not built yet", file=sys.stderr)
    return 2
