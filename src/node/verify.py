"""``ibkr-node verify``: pre-flight checks, one line each, exit 1 on any failure (issue 5).

``PASS <check>: <detail>``, ``WARN <check>: <detail>`` (an advisory; ``-> <advice>`` when there
is one) or ``FAIL <check>: <what is wrong> -> <the fix>``; ``--json`` prints the same as a list
of ``{check, status, detail, fix}``. Exit 0 when nothing failed, 1 otherwise. It runs before a
valid .env exists, so it loads the settings itself: an invalid configuration is a FAIL per bad
variable, and the checks that need settings are skipped (and say so).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from node import checks
from node.checks import Check, failed, passed, warned
from node.config import ConfigError, Settings, load_settings

T = TypeVar("T")
NEEDS_SETTINGS = (
    "paths, launcher and gateway, ports, API key, sync folder, arm file, timezone, trading "
    "mode, daemon API"
)


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "verify",
        help="pre-flight checks: one pass/fail line each, exit 1 on any failure",
        description="Check this laptop's configuration before (or while) the daemon runs: "
        "one line per check, PASS, WARN (advisory) or FAIL with the fix. Exit 0 when "
        "nothing failed, 1 otherwise.",
    )
    parser.add_argument(
        "--json", action="store_true", help="a JSON list of {check, status, detail, fix}"
    )
    parser.set_defaults(standalone_handler=_verify)


def _verify(args: argparse.Namespace) -> int:
    results = run_checks(args.env_file)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        for result in results:
            print(result.line())
    return exit_code(results)


def exit_code(results: list[Check]) -> int:
    return 1 if any(r.status == "FAIL" for r in results) else 0


def run_checks(env_file: Path | None) -> list[Check]:
    results = [checks.env_file_check(env_file)]
    try:
        settings = load_settings(env_file)
    except ConfigError as exc:
        missing = env_file is not None and not env_file.is_file()
        if not missing:  # else the env file line already said it
            results += checks.config_error_checks(exc)
        results.append(
            warned(
                "skipped",
                f"{NEEDS_SETTINGS}: they need a valid configuration",
                "fix the lines above, then run `ibkr-node verify` again",
            )
        )
        return results
    path = env_file or Path(".env")
    source = f"read from {path.resolve()}" if path.is_file() else "defaults and the environment"
    overriding = sorted(name for name in Settings.model_fields if name in os.environ)
    if overriding:
        results.append(
            warned(
                "configuration",
                f"valid ({source}), but the environment sets {', '.join(overriding)}, which wins "
                "over the env file: the scheduled task may not see the same values",
                "unset them, or put them in the env file",
            )
        )
    else:
        results.append(passed("configuration", f"valid ({source})"))
    return results + settings_checks(settings)


def settings_checks(settings: Settings) -> list[Check]:
    """Every check that needs valid settings, in report order."""
    daemon = _guard("api", lambda: checks.probe_daemon(settings))
    if isinstance(daemon, Check):  # the probe itself failed: report it, assume no daemon
        probe, daemon_problem = checks.DaemonProbe(running=False), daemon
    else:
        probe, daemon_problem = daemon, None
    steps: list[tuple[str, Callable[[], Check | list[Check] | None]]] = [
        ("state dir", lambda: checks.state_dir_check(settings)),
        ("log dir", lambda: checks.log_dir_check(settings)),
        ("audit db", lambda: checks.audit_db_check(settings)),
        ("launcher", lambda: checks.launcher_check(settings)),
        ("gateway", lambda: checks.gateway_check(settings)),
        ("ibc config", lambda: checks.ibc_config_check(settings)),
        ("api port", lambda: checks.api_port_check(settings, probe)),
        ("gateway port", lambda: checks.gateway_port_checks(settings, probe)),
        ("api key", lambda: checks.api_key_check(settings)),
        ("sync folder", lambda: checks.sync_folder_check(settings)),
        ("arm file", lambda: checks.arm_file_check(settings)),
        ("timezone", lambda: checks.timezone_check(settings)),
        ("trading mode", lambda: checks.trading_mode_check(settings)),
        ("api", lambda: daemon_problem or checks.api_check(settings, probe)),
    ]
    results: list[Check] = []
    for name, step in steps:
        outcome = _guard(name, step)
        if outcome is None:
            continue
        results += outcome if isinstance(outcome, list) else [outcome]
    return results


def _guard(name: str, step: Callable[[], T]) -> T | Check:
    """A check that crashes is a FAIL of its own; the others still run."""
    try:
        return step()
    except Exception as exc:  # a bug or an unforeseen OS error: say so, keep going
        return failed(
            name,
            f"the check itself failed: {type(exc).__name__}: {exc}",
            "report this with the line above; check this item by hand",
        )
