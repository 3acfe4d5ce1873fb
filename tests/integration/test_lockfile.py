"""One daemon per STATE_DIR: the OS lock refuses a second holder and is freed by a kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from node.lockfile import AlreadyRunning, InstanceLock
from support import WAIT

pytestmark = pytest.mark.anyio

# Takes the lock, optionally starts a long-lived child of its own, says so, then waits.
HOLDER = """
import subprocess, sys
from pathlib import Path
from node.lockfile import InstanceLock
lock = InstanceLock(Path(sys.argv[1]))
lock.acquire()
child = ""
if len(sys.argv) > 2:
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
    )
    child = f" {sleeper.pid}"
print(f"locked{child}", flush=True)
sys.stdin.read()
"""


async def start_holder(state_dir: Path, *extra: str) -> tuple[anyio.abc.Process, list[str]]:
    process = await anyio.open_process(
        [sys.executable, "-c", HOLDER, str(state_dir), *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    with anyio.fail_after(WAIT):
        line = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 1024)
    words = line.decode().split()
    assert words[0] == "locked"
    return process, words[1:]


async def kill9(process: anyio.abc.Process) -> None:
    process.send_signal(signal.SIGKILL)
    with anyio.fail_after(WAIT):
        assert await process.wait() == -signal.SIGKILL
    await process.aclose()


def test_second_holder_in_process_is_refused_with_our_pid(tmp_path: Path) -> None:
    with InstanceLock(tmp_path) as first:
        assert first.held
        with pytest.raises(AlreadyRunning) as refused:
            InstanceLock(tmp_path).acquire()
        assert refused.value.pid == os.getpid()
        assert refused.value.path == tmp_path / "daemon.lock"
        message = str(refused.value)
        assert f"pid {os.getpid()}" in message
        assert str(tmp_path) in message
        assert "ctl shutdown" in message
    assert not first.held
    again = InstanceLock(tmp_path)
    again.acquire()
    again.release()
    again.release()  # idempotent


def test_state_dir_is_created(tmp_path: Path) -> None:
    with InstanceLock(tmp_path / "a" / "b") as lock:
        assert lock.path.read_text().strip() == str(os.getpid())


async def test_other_process_is_refused_and_kill_9_frees_the_lock(tmp_path: Path) -> None:
    holder, _ = await start_holder(tmp_path)
    with pytest.raises(AlreadyRunning) as refused:
        InstanceLock(tmp_path).acquire()
    assert refused.value.pid == holder.pid
    assert f"pid {holder.pid}" in str(refused.value)

    await kill9(holder)
    with InstanceLock(tmp_path) as lock:  # the OS dropped the lock with its holder
        assert lock.held


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process handling")
async def test_a_child_of_the_holder_does_not_keep_the_lock(tmp_path: Path) -> None:
    holder, extra = await start_holder(tmp_path, "with-child")
    sleeper = int(extra[0])
    try:
        await kill9(holder)
        os.kill(sleeper, 0)  # the holder's child still runs ...
        with InstanceLock(tmp_path) as lock:  # ... and yet the lock is free
            assert lock.held
    finally:
        os.kill(sleeper, signal.SIGKILL)
