"""Shared fixtures: the simulator in process, and as a child process over its CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from node.sim import SimConfig, Simulator, send_command
from support import free_port

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


# ---------------------------------------------------------------------- the daemon


@dataclass
class RecordingNotifier:
    """A notifier that keeps every notice, for assertions."""

    name: str = "recording"
    notices: list[Any] = field(default_factory=list)

    async def notify(self, notice: Any) -> None:
        self.notices.append(notice)

    async def run(self, status: Any) -> None:
        return

    async def aclose(self) -> None:
        return

    def kinds(self) -> list[str]:
        return [n.kind for n in self.notices]


@dataclass
class NodeUnderTest:
    """A daemon served by run_node with a ManualClock, real sockets and a real STATE_DIR."""

    daemon: Any
    clock: Any
    settings: Any
    api_port: int
    notifier: RecordingNotifier
    done: Any  # anyio.Event set when run_node returned

    @property
    def state(self) -> str:
        return str(self.daemon.state)

    @property
    def launcher(self) -> Any:
        return self.daemon.launcher


MONDAY_NOON = "2026-11-23T12:00:00-05:00"  # inside the default Mon-Fri 04:00-20:00 window


@pytest.fixture
async def node_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start daemons (run_node) on free loopback ports; every one is shut down at teardown."""
    from datetime import datetime

    from node.clock import ManualClock
    from node.config import Settings
    from node.events import Event, Trigger
    from node.runtime import Running, run_node

    started: list[NodeUnderTest] = []
    async with anyio.create_task_group() as tg:

        async def start(
            *, at: str = MONDAY_NOON, state_dir: Path | None = None, clock: Any = None,
            **overrides: Any,
        ) -> NodeUnderTest:  # fmt: skip
            port = free_port()
            values: dict[str, Any] = {
                "STATE_DIR": state_dir or tmp_path / "state",
                "GATEWAY_LAUNCHER": "sim",
                "PAPER_GATEWAY_PORT": port,
                "SIM_CONTROL_PORT": free_port(),
                "API_PORT": free_port(),
                "API_KEY": "test-key",
                "CONNECT_ATTEMPT_TIMEOUT": 5,
                # Tests move the ManualClock in steps while real sockets work; deadlines
                # that no test is about are long, so a slow machine never trips them.
                "GATEWAY_START_TIMEOUT": 3600,
                "RECONCILE_TIMEOUT": 3600,
                "HEARTBEAT_TIMEOUT": 30,
                **overrides,
            }
            settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
            clock = clock or ManualClock(datetime.fromisoformat(at))
            notifier = RecordingNotifier()
            ready: list[Running] = []
            done = anyio.Event()

            async def serve() -> None:
                try:
                    await run_node(settings, clock=clock, notifiers=[notifier],
                                   handle_signals=False, on_ready=ready.append)  # fmt: skip
                finally:
                    done.set()

            tg.start_soon(serve)
            with anyio.fail_after(STARTUP_TIMEOUT):
                while not ready and not done.is_set():  # noqa: ASYNC110 - set by a callback
                    await anyio.sleep(0.01)
            assert ready, "run_node returned before it was ready"
            node = NodeUnderTest(ready[0].daemon, clock, settings, ready[0].api_port, notifier,
                                 done)  # fmt: skip
            started.append(node)
            return node

        yield start
        for node in started:
            if not node.done.is_set():
                node.daemon.post(Event(Trigger.SHUTDOWN, "test teardown"))
        with anyio.fail_after(STARTUP_TIMEOUT):
            for node in started:
                await node.done.wait()
