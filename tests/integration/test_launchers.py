"""Launchers for real: the sim child, IBC's STOP against a fake command server, exe, external."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from ib_async import MarketOrder, Stock

from node.config import Settings
from node.plugins.launchers.base import GatewayEndpoint, Launcher, LaunchError
from node.plugins.launchers.exe import ExeLauncher
from node.plugins.launchers.external import ExternalLauncher
from node.plugins.launchers.ibc import IbcLauncher, send_ibc_command
from node.plugins.launchers.sim import SimLauncher
from node.plugins.registry import launcher_class, launcher_names
from node.runtime import build_launcher
from support import WAIT, connect_ib, free_port, until

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups and signals"),
]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def gone(pid: int) -> None:
    """Wait until ``pid`` has died; a signal to a process that is not ours lands a moment later."""
    with anyio.fail_after(WAIT):
        while alive(pid):  # noqa: ASYNC110 - another process: no event to wait on
            await anyio.sleep(0.02)


async def answers(port: int) -> bool:
    try:
        await handshake(port)
    except (OSError, anyio.EndOfStream, anyio.IncompleteRead):
        return False
    return True


async def handshake(port: int) -> list[bytes]:
    """The raw TWS hello: ``API\\0`` + a framed version range; the reply is one 2-field frame."""
    with anyio.fail_after(WAIT):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            payload = b"v157..178"
            await stream.send(b"API\0" + len(payload).to_bytes(4, "big") + payload)
            reader = BufferedByteReceiveStream(stream)
            size = int.from_bytes(await reader.receive_exactly(4), "big")
            fields = (await reader.receive_exactly(size)).split(b"\0")
    return fields[:-1] if fields and fields[-1] == b"" else fields


def test_protocol_and_registry() -> None:
    assert launcher_names()[:4] == ["exe", "external", "ibc", "sim"]
    assert launcher_class("sim") is SimLauncher
    assert launcher_class("external") is ExternalLauncher
    with pytest.raises(ValueError, match="known launchers: exe, external, ibc, sim"):
        launcher_class("nope")
    endpoint = GatewayEndpoint("127.0.0.1", 4002)
    assert isinstance(ExternalLauncher(endpoint), Launcher)
    assert isinstance(SimLauncher("127.0.0.1", 0, 0, Path("s.json")), Launcher)
    assert isinstance(ExeLauncher(Path("gw"), endpoint), Launcher)


# --- sim ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_level", "sim_level"), [("INFO", "WARNING"), ("WARNING", "WARNING"), ("DEBUG", "DEBUG")]
)
def test_the_node_runs_its_simulator_quiet_unless_it_logs_debug(
    tmp_path: Path, node_level: str, sim_level: str
) -> None:
    """The child's lines reach the node's log at DEBUG only: below that, a simulator at INFO
    would write lines for the node to read and drop on every order."""
    values = {"STATE_DIR": tmp_path, "GATEWAY_LAUNCHER": "sim", "LOG_LEVEL": node_level}
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]
    launcher = build_launcher(settings)
    assert isinstance(launcher, SimLauncher)
    assert launcher.log_level == sim_level


async def test_sim_starts_answers_keeps_state_and_stops(tmp_path: Path) -> None:
    port, control = free_port(), free_port()
    state = tmp_path / "state" / "sim-state.json"
    launcher = SimLauncher("127.0.0.1", port, control, state, tick_interval=0)
    assert launcher.simulated
    assert launcher.port_holder() is None
    async with launcher.running():
        await launcher.start()
        pid = launcher.pid
        assert pid is not None
        assert alive(pid)
        assert launcher.endpoint == GatewayEndpoint("127.0.0.1", port)
        assert (await handshake(port))[0] == b"178"
        status = await launcher.control("status")
        assert status["ok"]
        assert "pid" in (launcher.port_holder() or "")

        ib = await connect_ib(port)
        try:
            trade = ib.placeOrder(Stock("AAPL", "SMART", "USD"), MarketOrder("BUY", 1))
            await until(lambda: trade.orderStatus.status == "Filled")
        finally:
            ib.disconnect()
        assert state.is_file()
        assert "AAPL" in state.read_text()

        await launcher.stop(WAIT)
        assert launcher.pid is None
        assert not alive(pid)
        with anyio.fail_after(WAIT):
            assert await launcher.wait_exited() == 0  # closing stdin is a clean stop
        assert not await answers(port)
        await launcher.stop(WAIT)  # idempotent


async def test_sim_on_free_ports_reports_them_and_restarts(tmp_path: Path) -> None:
    launcher = SimLauncher("127.0.0.1", 0, 0, tmp_path / "sim-state.json", tick_interval=0)
    async with launcher.running():
        await launcher.start()
        first = launcher.pid
        assert launcher.endpoint.port != 0
        assert launcher.control_port != 0
        assert (await handshake(launcher.endpoint.port))[0] == b"178"
        await launcher.start()  # a second start replaces the first child
        assert first is not None
        assert launcher.pid not in (None, first)
        assert not alive(first)
        assert (await launcher.control("status"))["ok"]
        pid = launcher.pid
    assert pid is not None
    assert not alive(pid)


async def test_sim_port_in_use_is_a_launch_error_naming_the_holder(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        launcher = SimLauncher("127.0.0.1", port, 0, tmp_path / "sim-state.json")
        holder = await anyio.to_thread.run_sync(launcher.port_holder)
        assert holder is not None
        assert f"pid {os.getpid()}" in holder
        async with launcher.running():
            with pytest.raises(LaunchError, match=rf"exited with code 2 .*{port}"):
                await launcher.start()
            assert launcher.pid is None


async def test_start_outside_running_is_a_programming_error(tmp_path: Path) -> None:
    launcher = SimLauncher("127.0.0.1", 0, 0, tmp_path / "sim-state.json")
    with pytest.raises(RuntimeError, match="running"):
        await launcher.start()


OWNER = """
import sys
from pathlib import Path
import anyio
from node.plugins.launchers.sim import SimLauncher

async def main() -> None:
    launcher = SimLauncher("127.0.0.1", 0, 0, Path(sys.argv[1]), tick_interval=0)
    async with launcher.running():
        await launcher.start()
        print(launcher.pid, launcher.endpoint.port, flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""


async def test_sim_child_exits_when_its_owner_is_killed_9(tmp_path: Path) -> None:
    owner = await anyio.open_process(
        [sys.executable, "-c", OWNER, str(tmp_path / "sim-state.json")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    sim_pid = 0
    try:
        assert owner.stdout is not None
        with anyio.fail_after(WAIT):
            line = await BufferedByteReceiveStream(owner.stdout).receive_until(b"\n", 1024)
        sim_pid, port = (int(word) for word in line.split())
        assert (await handshake(port))[0] == b"178"

        owner.send_signal(signal.SIGKILL)  # the daemon dies without a word
        with anyio.fail_after(WAIT):
            await owner.wait()
            while alive(sim_pid) or await answers(port):  # noqa: ASYNC110 - another process
                await anyio.sleep(0.05)
    finally:
        if sim_pid and alive(sim_pid):
            os.kill(sim_pid, signal.SIGKILL)
        if owner.returncode is None:
            owner.kill()
        await owner.aclose()


# --- external -----------------------------------------------------------------------------


async def test_external_never_starts_or_stops_anything() -> None:
    launcher = ExternalLauncher(GatewayEndpoint("127.0.0.1", free_port()))
    assert not launcher.simulated
    launcher.check_config()
    async with launcher.running():
        await launcher.start()
        assert launcher.pid is None
        assert launcher.port_holder() is None
        with anyio.move_on_after(0.2) as scope:
            await launcher.wait_exited()
        assert scope.cancelled_caught  # it sleeps forever
        await launcher.stop(1)
        await launcher.stop(1)


# --- exe ----------------------------------------------------------------------------------


FAKE_GATEWAY = """#!{python}
import os, signal, sys, time
from pathlib import Path
if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("fake gateway up", flush=True)
Path(sys.argv[1]).write_text(f"{{os.getpid()}} {{os.getpgrp()}}")
time.sleep(120)
"""


def fake_gateway(tmp_path: Path) -> Path:
    path = tmp_path / "ibgateway"
    path.write_text(FAKE_GATEWAY.format(python=sys.executable))
    path.chmod(0o755)
    return path


async def read_ready(path: Path) -> list[int]:
    """The pids a fake wrote to ``path`` once it was ready (polled: it is another process)."""
    ready = anyio.Path(path)
    with anyio.fail_after(WAIT):
        while not (text := await ready.read_text() if await ready.exists() else ""):  # noqa: ASYNC110 - another process
            await anyio.sleep(0.02)
    return [int(word) for word in text.split()]


@pytest.mark.parametrize("ignore_term", [False, True])
async def test_exe_runs_in_its_own_group_and_stops(tmp_path: Path, ignore_term: bool) -> None:
    ready = tmp_path / "ready"
    args = [str(ready), *(["--ignore-term"] if ignore_term else [])]
    launcher = ExeLauncher(fake_gateway(tmp_path), GatewayEndpoint("127.0.0.1", free_port()), args)
    launcher.check_config()
    async with launcher.running():
        await launcher.start()
        pid, group = await read_ready(ready)
        assert pid == launcher.pid
        assert group == pid != os.getpgrp()  # its own process group: Ctrl+C misses it
        await launcher.stop(0.5 if ignore_term else WAIT)
        with anyio.fail_after(WAIT):
            code = await launcher.wait_exited()
        assert code == (-signal.SIGKILL if ignore_term else -signal.SIGTERM)
        assert not alive(pid)


async def test_exe_missing_is_refused(tmp_path: Path) -> None:
    launcher = ExeLauncher(tmp_path / "absent", GatewayEndpoint("127.0.0.1", 4002))
    with pytest.raises(LaunchError, match="IBKR_GATEWAY_PATH"):
        launcher.check_config()
    async with launcher.running():
        with pytest.raises(LaunchError, match="IBKR_GATEWAY_PATH"):
            await launcher.start()
        await launcher.stop(1)  # nothing started: still fine


# --- ibc ----------------------------------------------------------------------------------


class FakeIbc:
    """IBC's command server on 127.0.0.1:0; the fake gateway holds a connection to ``hold``."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.commands: list[str] = []
        self.stop_received = anyio.Event()
        self.gateway_attached = anyio.Event()
        self.held: list[SocketStream] = []
        self.port = 0
        self.hold_port = 0

    async def serve_command(self, stream: SocketStream) -> None:
        async with stream:
            line = await BufferedByteReceiveStream(stream).receive_until(b"\n", 1024)
            self.commands.append(line.decode())
            await stream.send(self.reply)
            if line.strip() == b"STOP" and not self.reply.startswith(b"ERROR"):
                self.stop_received.set()
                for held in self.held:  # the gateway exits when IBC has been told to stop
                    await held.aclose()

    async def serve_hold(self, stream: SocketStream) -> None:
        self.held.append(stream)
        self.gateway_attached.set()
        await anyio.sleep_forever()


@asynccontextmanager
async def fake_ibc(reply: bytes) -> AsyncIterator[FakeIbc]:
    fake = FakeIbc(reply)
    command = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    hold = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    fake.port = command.extra(anyio.abc.SocketAttribute.local_port)
    fake.hold_port = hold.extra(anyio.abc.SocketAttribute.local_port)
    async with command, hold, anyio.create_task_group() as tg:
        tg.start_soon(command.serve, fake.serve_command)
        tg.start_soon(hold.serve, fake.serve_hold)
        yield fake
        tg.cancel_scope.cancel()


# The "gateway": IBC's start script, here Python. It ignores SIGTERM when asked (so only a kill
# ends it), starts a grandchild like IBC's java (same process group), records both pids, and
# exits when the fake IBC closes its connection.
FAKE_START_SCRIPT = """#!{python}
import os, signal, socket, subprocess, sys, time
from pathlib import Path
IBC_INI="{ini}"
if {ignore_term}:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
java = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
sock = socket.create_connection(("127.0.0.1", {hold_port}))
Path("{pids}").write_text(f"{{os.getpid()}} {{java.pid}}")
sock.recv(1)
sys.exit(0)
"""


def ibc_install(
    tmp_path: Path, fake: FakeIbc, *, ignore_term: bool, command_port: int | None = None
) -> IbcLauncher:
    command_port = fake.port if command_port is None else command_port
    ibc = tmp_path / "ibc"
    ibc.mkdir()
    ini = tmp_path / "config.ini"
    ini.write_text(
        "# written once by setup-ibkr-autologin.ps1\n"
        "TradingMode=paper\nAcceptNonBrokerageAccountWarning=yes\n"
        "ExistingSessionDetectedAction=primary\n"
        f"CommandServerPort={command_port}\nBindAddress=127.0.0.1\nControlFrom=\n"
        "CommandPrompt=IBC> \n"
    )
    script = ibc / "gatewaystart.sh"
    script.write_text(
        FAKE_START_SCRIPT.format(
            python=sys.executable,
            ini=ini,
            ignore_term=ignore_term,
            hold_port=fake.hold_port,
            pids=tmp_path / "pids",
        )
    )
    script.chmod(0o755)
    endpoint = GatewayEndpoint("127.0.0.1", free_port())
    return IbcLauncher(ibc, ini, None, "paper", command_port, endpoint)


async def test_ibc_stop_sends_stop_and_the_gateway_exits(tmp_path: Path) -> None:
    async with fake_ibc(b"IBC> INFO Closing IBC\nOK Shutting down\n") as fake:
        launcher = ibc_install(tmp_path, fake, ignore_term=True)
        launcher.check_config()
        async with launcher.running():
            await launcher.start()
            with anyio.fail_after(WAIT):
                await fake.gateway_attached.wait()
            script_pid, java_pid = await read_ready(tmp_path / "pids")
            assert script_pid == launcher.pid
            assert alive(java_pid)

            await launcher.stop(WAIT)  # SIGTERM is ignored: only STOP can end it in time
            assert fake.commands == ["STOP"]
            assert fake.stop_received.is_set()
            with anyio.fail_after(WAIT):
                assert await launcher.wait_exited() == 0
            assert not alive(script_pid)
            await gone(java_pid)  # a straggler in the group goes with it


async def test_ibc_stop_refused_kills_the_tree_after_the_timeout(tmp_path: Path) -> None:
    async with fake_ibc(b"ERROR not now\n") as fake:
        launcher = ibc_install(tmp_path, fake, ignore_term=True)
        async with launcher.running():
            await launcher.start()
            script_pid, java_pid = await read_ready(tmp_path / "pids")
            await launcher.stop(0.5)
            assert fake.commands == ["STOP"]
            with anyio.fail_after(WAIT):
                assert await launcher.wait_exited() == -signal.SIGKILL
            assert not alive(script_pid)
            await gone(java_pid)


async def test_ibc_stop_without_a_command_server_terminates(tmp_path: Path) -> None:
    async with fake_ibc(b"OK\n") as fake:
        launcher = ibc_install(tmp_path, fake, ignore_term=False, command_port=free_port())
        async with launcher.running():
            await launcher.start()
            _script_pid, java_pid = await read_ready(tmp_path / "pids")
            await launcher.stop(WAIT)
            with anyio.fail_after(WAIT):
                assert await launcher.wait_exited() == -signal.SIGTERM
            await gone(java_pid)


async def test_send_ibc_command_skips_prompt_and_info() -> None:
    async with fake_ibc(b"IBC> INFO Closing IBC\nIBC> OK Shutting down\n") as fake:
        with anyio.fail_after(WAIT):
            reply = await send_ibc_command(fake.port, "STOP", prompt="IBC>")
        assert reply == "OK Shutting down"
    with pytest.raises(OSError, match="connect"), anyio.fail_after(WAIT):
        await send_ibc_command(free_port(), "STOP")
