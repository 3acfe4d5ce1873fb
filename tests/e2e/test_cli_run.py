"""`ibkr-node run`, `state`, `ctl` and `keygen` as an operator runs them: real processes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from support import WAIT, free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    gateway = free_port()
    return {
        **os.environ,
        "STATE_DIR": str(tmp_path / "state"),
        "API_PORT": str(free_port()),
        "PAPER_GATEWAY_PORT": str(gateway),
        "SIM_CONTROL_PORT": str(free_port()),
        "LOG_LEVEL": "INFO",
    }


async def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(WAIT):
        return await anyio.run_process([sys.executable, "-m", "node", *args], check=False,
                                       env=env, cwd=cwd)  # fmt: skip


async def state_code(env: dict[str, str], cwd: Path) -> int:
    return (await cli("state", env=env, cwd=cwd)).returncode


async def until_state(code: int, env: dict[str, str], cwd: Path) -> None:
    with anyio.fail_after(WAIT * 3):
        while await state_code(env, cwd) != code:
            pass


@asynccontextmanager
async def daemon(*args: str, env: dict[str, str], cwd: Path) -> AsyncIterator[Process]:
    process = await anyio.open_process([sys.executable, "-m", "node", "run", *args],
                                       env=env, cwd=cwd, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            with anyio.move_on_after(WAIT, shield=True):
                await process.wait()
        await process.aclose()


async def read_until(process: Process, marker: bytes) -> bytes:
    assert process.stdout is not None
    reader = BufferedByteReceiveStream(process.stdout)
    seen = b""
    with anyio.fail_after(WAIT):
        while marker not in seen:
            seen += await reader.receive_until(b"\n", 65536) + b"\n"
    return seen


def sim_pid(env: dict[str, str], cwd: Path) -> int:
    result = subprocess.run([sys.executable, "-m", "node", "state", "--json"], env=env, cwd=cwd,
                            capture_output=True, check=False, timeout=WAIT)  # fmt: skip
    return int(json.loads(result.stdout)["gateway"]["pid"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def until_gone(pid: int) -> None:
    with anyio.fail_after(WAIT):
        while alive(pid):  # noqa: ASYNC110 - a process of its own; no event to wait on
            await anyio.sleep(0.05)


async def test_run_refuses_without_a_launcher(env: dict[str, str], tmp_path: Path) -> None:
    result = await cli("run", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert b"GATEWAY_LAUNCHER is not set" in result.stderr
    assert b"--demo" in result.stderr


async def test_run_refuses_without_a_key(env: dict[str, str], tmp_path: Path) -> None:
    result = await cli("run", env={**env, "GATEWAY_LAUNCHER": "sim"}, cwd=tmp_path)
    assert result.returncode == 2
    assert b"ibkr-node keygen" in result.stderr


async def test_demo_state_ctl_and_shutdown(env: dict[str, str], tmp_path: Path) -> None:
    async with daemon("--demo", env=env, cwd=tmp_path) as process:
        banner = await read_until(process, b"demo API key:")
        assert b"FAKE MONEY" in banner
        await until_state(0, env, tmp_path)  # `ibkr-node state` finds the demo key itself
        as_json = await cli("state", "--json", env=env, cwd=tmp_path)
        doc = json.loads(as_json.stdout)
        assert doc["state"] == "SERVING"
        assert doc["simulated"] is True
        assert doc["gates"]["armed"] is True
        pid = doc["gateway"]["pid"]

        stopped = await cli("ctl", "stop", env=env, cwd=tmp_path)
        assert stopped.returncode == 0
        await until_state(1, env, tmp_path)
        await until_gone(pid)
        started = await cli("ctl", "start", env=env, cwd=tmp_path)
        assert started.returncode == 0
        await until_state(0, env, tmp_path)

        pid = sim_pid(env, tmp_path)
        second = await cli("run", "--demo", env=env, cwd=tmp_path)
        assert second.returncode == 2
        assert b"holds STATE_DIR" in second.stderr

        down = await cli("ctl", "shutdown", env=env, cwd=tmp_path)
        assert down.returncode == 0
        with anyio.fail_after(WAIT):
            assert await process.wait() == 0
        await until_gone(pid)
    assert await state_code(env, tmp_path) == 2  # nobody answers any more


async def test_sigterm_stops_the_gateway_and_exits_0(env: dict[str, str], tmp_path: Path) -> None:
    async with daemon("--demo", env=env, cwd=tmp_path) as process:
        await until_state(0, env, tmp_path)
        pid = sim_pid(env, tmp_path)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(WAIT):
            assert await process.wait() == 0
        await until_gone(pid)


async def test_kill_9_leaves_no_gateway_and_no_stale_lock(
    env: dict[str, str], tmp_path: Path
) -> None:
    async with daemon("--demo", env=env, cwd=tmp_path) as process:
        await until_state(0, env, tmp_path)
        pid = sim_pid(env, tmp_path)
        process.kill()
        await process.wait()
        await until_gone(pid)  # the child saw its stdin close and exited by itself
    async with daemon("--demo", env=env, cwd=tmp_path):
        await until_state(0, env, tmp_path)


async def test_api_port_taken_is_one_clear_line(env: dict[str, str], tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(env["API_PORT"])))
        holder.listen()
        result = await cli("run", "--demo", env=env, cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.decode().strip().splitlines()[-1:]
    assert "holds API_PORT" in line
    assert b"Traceback" not in result.stderr


async def test_keygen_writes_and_rotates(env: dict[str, str], tmp_path: Path) -> None:
    first = await cli("keygen", env=env, cwd=tmp_path)
    assert first.returncode == 0
    key_file = tmp_path / "secrets" / "api_key.txt"
    key = first.stdout.decode().strip().splitlines()[-1]
    assert key_file.read_text().split() == [key]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = await cli("keygen", env=env, cwd=tmp_path)
    assert again.returncode == 2
    assert b"--rotate" in again.stderr
    rotated = await cli("keygen", "--rotate", env=env, cwd=tmp_path)
    new_key = rotated.stdout.decode().strip().splitlines()[-1]
    assert key_file.read_text().split() == [new_key, key]


async def test_an_unwritable_log_folder_falls_back_and_health_says_so(
    env: dict[str, str], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log folder should be\n")
    env = {**env, "LOG_FILE_PATH": str(blocker / "logs")}
    async with daemon("--demo", env=env, cwd=tmp_path) as process:
        await read_until(process, b"demo API key:")
        await until_state(0, env, tmp_path)
        key = (Path(env["STATE_DIR"]) / "demo_api_key.txt").read_text().split()[0]
        async with httpx.AsyncClient(timeout=WAIT) as http:
            health = await http.get(f"http://127.0.0.1:{env['API_PORT']}/health",
                                    headers={"X-API-Key": key})  # fmt: skip
        [check] = health.json()["checks"]["logs:folder"]
        assert check["status"] == "warn"
        assert check["observedValue"] == str(Path(env["STATE_DIR"]) / "logs")
        assert str(blocker / "logs") in check["output"]
        assert (Path(env["STATE_DIR"]) / "logs" / "api.log").exists()
        assert (await cli("ctl", "shutdown", env=env, cwd=tmp_path)).returncode == 0
        with anyio.fail_after(WAIT):
            assert await process.wait() == 0
