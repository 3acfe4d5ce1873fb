"""The ``sim`` launcher: the simulated IB Gateway as a child process that dies with the daemon.

The child runs ``python -m node sim ... --exit-with-parent`` with its stdin a pipe this launcher
holds and never writes to. When the daemon exits, however it exits (kill -9 included), the OS
closes the pipe, the child reads end-of-file and stops: it never outlives the daemon.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from loguru import logger

from node.plugins.launchers.base import GatewayEndpoint, LaunchError, ProcessLauncher, Run
from node.procutil import pump_lines
from node.sim import send_command

ANNOUNCE_TIMEOUT = 30.0  # seconds for the child to bind its ports and say so
EXIT_WAIT = 5.0  # seconds for a child whose output ended to exit, so its code can be told

_LISTENING = re.compile(r"^listening on (.+):(\d+)$")
_CONTROL = re.compile(r"^control channel on 127\.0\.0\.1:(\d+)$")


class SimLauncher(ProcessLauncher):
    """Run the simulator; ``start()`` returns once its API port (and control port) is bound.

    Port 0 (API or control) binds a free port; ``endpoint`` and ``control_port`` then hold the
    real ports once ``start()`` returns.
    """

    name = "sim"
    simulated = True
    log_prefix = "sim"

    def __init__(
        self,
        host: str,
        port: int,
        control_port: int,
        state_file: Path,
        seed: int = 0,
        account: str = "DU1234567",
        tick_interval: float = 1.0,
        *,
        stop_timeout: float = 10.0,
        log_level: str = "WARNING",
    ) -> None:
        super().__init__(GatewayEndpoint(host, port), stop_timeout=stop_timeout)
        self.requested_port = port
        self.requested_control_port = control_port
        self.control_port = control_port
        self.state_file = Path(state_file)
        self.seed = seed
        self.account = account
        self.tick_interval = tick_interval
        self.log_level = log_level

    def _command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "node",
            "sim",
            "--host",
            self.endpoint.host,
            "--port",
            str(self.requested_port),
            "--control-port",
            str(self.requested_control_port),
            "--state-file",
            str(self.state_file),
            "--account",
            self.account,
            "--seed",
            str(self.seed),
            "--tick-interval",
            f"{self.tick_interval:g}",
            "--exit-with-parent",
            "--log-level",
            self.log_level,
        ]

    def check_config(self) -> None:
        folder = self.state_file.parent
        if folder.exists() and not folder.is_dir():
            raise LaunchError(
                f"sim: the state file's folder {folder} is not a folder; fix STATE_DIR"
            )
        if self.state_file.is_dir():
            raise LaunchError(f"sim: the state file {self.state_file} is a folder; move it aside")

    async def start(self) -> None:
        self.check_config()
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.endpoint = GatewayEndpoint(self.endpoint.host, self.requested_port)
        self.control_port = self.requested_control_port
        # stdin=PIPE, held by us and never written: its end-of-file is the child's signal.
        run = await self._spawn(stdin=subprocess.PIPE)
        ready = anyio.Event()
        announced: dict[str, int] = {}

        def on_stdout(line: str) -> None:
            run.tail.append(line)
            logger.debug("sim: {}", line)
            if match := _LISTENING.match(line):
                announced["port"] = int(match.group(2))
            elif match := _CONTROL.match(line):
                announced["control"] = int(match.group(1))
            if "port" in announced and "control" in announced:
                ready.set()

        async def watch_stdout() -> None:
            await pump_lines(run.child.process.stdout, on_stdout)
            ready.set()  # end of output: the child is exiting

        async def watch_exit() -> None:
            await run.exited.wait()
            ready.set()

        tg = self._task_group()
        tg.start_soon(watch_stdout)
        tg.start_soon(watch_exit)
        with anyio.move_on_after(ANNOUNCE_TIMEOUT):
            await ready.wait()
        if "port" in announced and "control" in announced:
            self.endpoint = GatewayEndpoint(self.endpoint.host, announced["port"])
            self.control_port = announced["control"]
            return
        with anyio.move_on_after(EXIT_WAIT):  # its output ended: it is exiting
            await run.exited.wait()
        reason = self._failure_reason(run)
        await self.stop(self.stop_timeout)
        raise LaunchError(reason)

    def _pumps_stdout(self) -> bool:
        return False  # start() reads the announcement itself

    def _failure_reason(self, run: Run) -> str:
        said = "; ".join(line for line in run.tail if line.strip())[-500:]
        if run.exited.is_set():
            return (
                f"sim: the simulator exited with code {run.returncode} before listening on "
                f"{self.endpoint.host}:{self.requested_port}" + (f": {said}" if said else "")
            )
        return f"sim: the simulator did not announce its ports within {ANNOUNCE_TIMEOUT:g} s" + (
            f": {said}" if said else ""
        )

    async def _request_stop(self, run: Run) -> None:
        # Closing stdin is the simulator's own stop signal (--exit-with-parent).
        stdin = run.child.process.stdin
        if stdin is not None:
            try:
                await stdin.aclose()
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                run.child.terminate_tree()
        else:
            run.child.terminate_tree()

    async def control(self, line: str) -> dict[str, Any]:
        """Send one control-channel command to the running simulator (tests, benchmarks)."""
        return await send_command(self.control_port, line)
