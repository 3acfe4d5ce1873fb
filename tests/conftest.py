"""Shared fixtures: the simulator in process, and as a child process over its CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from node.sim import SimConfig, Simulator, send_command

STARTUP_TIMEOUT = 30


@pytest.fixture
def anyio_backend() -> str:
    # ib_async is asyncio-only, so every async test runs on asyncio.
    return "asyncio"


SimFactory = Callable[..., Any]


@pytest.fixture
async def sim_factory() -> AsyncIterator[Callable[..., Any]]:
    """Start in-process simulators bound to 127.0.0.1 on free ports; all stop at teardown."""
    async with anyio.create_task_group() as tg:

        async def start(**overrides: Any) -> Simulator:
            config = SimConfig(
                **{"host": "127.0.0.1", "port": 0, "seed": 7, "tick_interval": None, **overrides}
            )
            simulator: Simulator = await tg.start(Simulator(config).run)
            return simulator

        yield start
        tg.cancel_scope.cancel()


@pytest.fixture
async def sim(sim_factory: Callable[..., Any]) -> Simulator:
    simulator: Simulator = await sim_factory()
    return simulator


@dataclass
class ChildSim:
    """A simulator running as `python -m node sim` in a child process."""

    process: Process
    port: int
    control_port: int
    reader: BufferedByteReceiveStream

    async def control(self, line: str) -> dict[str, Any]:
        return await send_command(self.control_port, line)

    async def wait_exit(self) -> int:
        with anyio.fail_after(STARTUP_TIMEOUT):
            return await self.process.wait()


@asynccontextmanager
async def child_sim(*args: str, stdin: int | None = subprocess.DEVNULL) -> AsyncIterator[ChildSim]:
    """Run the CLI simulator on free ports; kill it on exit if it is still running."""
    command = [
        sys.executable,
        "-m",
        "node",
        "sim",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--control-port",
        "0",
        "--tick-interval",
        "0",
        *args,
    ]
    process = await anyio.open_process(
        command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        reader = BufferedByteReceiveStream(process.stdout)
        with anyio.fail_after(STARTUP_TIMEOUT):
            port = int(await _announced(reader, rb"listening on 127\.0\.0\.1:(\d+)"))
            control = int(await _announced(reader, rb"control channel on 127\.0\.0\.1:(\d+)"))
        yield ChildSim(process, port, control, reader)
    finally:
        if process.returncode is None:
            process.kill()
            with anyio.move_on_after(10, shield=True):
                await process.wait()
        await process.aclose()


async def _announced(reader: BufferedByteReceiveStream, pattern: bytes) -> bytes:
    line = await reader.receive_until(b"\n", 4096)
    match = re.search(pattern, line)
    assert match is not None, f"unexpected announcement {line!r}"
    return match.group(1)


@pytest.fixture
def spawn_sim() -> Callable[..., Any]:
    """`async with spawn_sim(*cli_args) as child:` runs the CLI simulator as a child process."""
    return child_sim


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "sim-state.json"
