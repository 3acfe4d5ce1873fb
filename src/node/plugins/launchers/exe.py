"""The ``exe`` launcher: the plain IB Gateway executable; the operator logs in by hand."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from node.plugins.launchers.base import GatewayEndpoint, LaunchError, ProcessLauncher


class ExeLauncher(ProcessLauncher):
    """Run ``IBKR_GATEWAY_PATH``; stop = terminate the process tree, then kill it."""

    name = "exe"
    log_prefix = "gateway"

    def __init__(
        self,
        gateway_path: Path,
        endpoint: GatewayEndpoint,
        args: Sequence[str] = (),
        *,
        stop_timeout: float = 60.0,
    ) -> None:
        super().__init__(endpoint, stop_timeout=stop_timeout)
        self.gateway_path = Path(gateway_path)
        self.args = list(args)

    def check_config(self) -> None:
        path = self.gateway_path
        if not path.is_file():
            raise LaunchError(
                f"IBKR_GATEWAY_PATH {path} is not a file; set it to the gateway executable "
                "(ibgateway.exe on Windows)"
            )
        if sys.platform != "win32" and not os.access(path, os.X_OK):
            raise LaunchError(f"IBKR_GATEWAY_PATH {path} is not executable; chmod +x it")

    def _command(self) -> list[str]:
        return [str(self.gateway_path), *self.args]

    async def start(self) -> None:
        self.check_config()
        await self._spawn()
