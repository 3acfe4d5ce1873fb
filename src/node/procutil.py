"""Child processes that never outlive the daemon, and the helpers launchers share.

POSIX: every child starts in its own session, so its own process group: a terminal's Ctrl+C
reaches only the daemon, which stops its children itself; a tidy stop is SIGTERM to the whole
group and a kill is SIGKILL to the group (a start script's grandchildren, such as IBC's java,
go with it).

Windows: every child starts with ``CREATE_NEW_PROCESS_GROUP`` (so a tidy stop can send it
CTRL_BREAK) and is put in its own Job Object with ``JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE``: when
the daemon dies, even killed, Windows closes the job handle and kills the whole tree. The
Windows half cannot be tested here (the suite runs on Linux); it is kept minimal and is on the
manual checklist of the deployment guide.

The file descriptors Python opens are not inherited by children (PEP 446), so a child never
keeps the daemon's instance lock or sockets alive.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
from anyio.abc import ByteReceiveStream, Process

MAX_LINE = 64 * 1024  # a longer line from a child is cut into pieces of this size
PROBE_TIMEOUT = 1.0  # seconds for the connect probe of port_holder
TOOL_TIMEOUT = 5.0  # seconds for ss / lsof / netstat / tasklist


@dataclass(eq=False)
class Child:
    """A started child process, its process group (POSIX) or Job Object (Windows)."""

    process: Process
    job: int | None = None  # Windows Job Object handle, None elsewhere
    _closed: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def wait(self) -> int:
        return await self.process.wait()

    def terminate_tree(self) -> None:
        """Ask the whole tree to stop: SIGTERM to the group, CTRL_BREAK on Windows."""
        if sys.platform == "win32":
            if self.process.returncode is None:
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.CTRL_BREAK_EVENT)
        else:
            _signal_group(self.pid, signal.SIGTERM)

    def kill_tree(self) -> None:
        """Kill the whole tree at once; also takes stragglers after the leader has exited."""
        if sys.platform == "win32":
            if self.job is not None:
                _win_terminate_job(self.job)
            elif self.process.returncode is None:
                with contextlib.suppress(OSError):
                    self.process.kill()
        else:
            _signal_group(self.pid, signal.SIGKILL)

    async def aclose(self) -> None:
        """Release the pipes (and on Windows the job handle, which kills what is left)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self.process.aclose()
        if sys.platform == "win32" and self.job is not None:
            _win_close(self.job)
            self.job = None


async def spawn(
    command: Sequence[str],
    *,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = subprocess.PIPE,
    stderr: int | IO[Any] | None = subprocess.PIPE,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Child:
    """Start ``command`` in its own process group (and Job Object on Windows).

    Shielded from cancellation: once the OS has started the process, the caller gets it back
    and can stop it, so a start cancelled half-way never leaks a child.
    """
    with anyio.CancelScope(shield=True):
        if sys.platform == "win32":
            process = await anyio.open_process(
                list(command),
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                cwd=cwd,
                env=env,
                creationflags=subprocess.CREATE_NEW_PROCESS_GROUP,
            )
        else:
            process = await anyio.open_process(
                list(command),
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
    return Child(process, job=_win_job_for(process.pid) if sys.platform == "win32" else None)


async def pump_lines(stream: ByteReceiveStream | None, on_line: Callable[[str], None]) -> None:
    """Feed each line a child writes to ``on_line`` until end of stream; never raises."""
    if stream is None:
        return
    buffer = b""
    try:
        async for chunk in stream:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            while len(buffer) > MAX_LINE:
                lines.append(buffer[:MAX_LINE])
                buffer = buffer[MAX_LINE:]
            for line in lines:
                on_line(line.decode(errors="replace").rstrip("\r"))
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
        pass
    if buffer:
        on_line(buffer.decode(errors="replace").rstrip("\r"))


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    if sys.platform != "win32":
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)


# --- who holds a port ---------------------------------------------------------------------


def port_listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port`` (a short, blocking probe)."""
    if port == 0:
        return False
    target = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
    try:
        with socket.create_connection((target, port), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def port_holder(host: str, port: int) -> str | None:
    """Who listens on ``port``: "pid 1234 (name)" where the OS tells, None when nothing listens.

    Blocking and best-effort (ss or lsof on POSIX, netstat and tasklist on Windows); call it
    through ``anyio.to_thread.run_sync`` from async code.
    """
    if not port_listening(host, port):
        return None
    found = _holder_windows(port) if sys.platform == "win32" else _holder_posix(port)
    return found or "unknown process"


def _run_tool(*command: str) -> str:
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout


def _holder_posix(port: int) -> str | None:
    # ss: LISTEN 0 100 127.0.0.1:4002 0.0.0.0:* users:(("python3",pid=1234,fd=6))
    for line in _run_tool("ss", "-ltnpH", f"sport = :{port}").splitlines():
        match = re.search(r'users:\(\("([^"]+)",pid=(\d+)', line)
        if match:
            return f"pid {match.group(2)} ({match.group(1)})"
    # lsof -F: p1234 then c<command>
    output = _run_tool("lsof", "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fpc")
    pid = re.search(r"^p(\d+)$", output, re.MULTILINE)
    if pid:
        name = re.search(r"^c(.+)$", output, re.MULTILINE)
        return f"pid {pid.group(1)} ({name.group(1)})" if name else f"pid {pid.group(1)}"
    return None


def _holder_windows(port: int) -> str | None:
    # netstat -ano -p TCP:  TCP    127.0.0.1:4002    0.0.0.0:0    LISTENING    1234
    for line in _run_tool("netstat", "-ano", "-p", "TCP").splitlines():
        fields = line.split()
        listening = len(fields) >= 5 and fields[3].upper() == "LISTENING"
        if listening and fields[1].rsplit(":", 1)[-1] == str(port):
            pid = fields[4]
            listing = _run_tool("tasklist", "/FI", f"PID eq {pid}", "/FO", "CSV", "/NH")
            name = re.match(r'"([^"]+)"', listing.strip())
            return f"pid {pid} ({name.group(1)})" if name else f"pid {pid}"
    return None


# --- Windows Job Objects (untested here: the suite runs on Linux) -------------------------

if sys.platform == "win32":  # pragma: no cover
    import ctypes
    from ctypes import wintypes

    _JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000
    _JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS = 9
    _PROCESS_SET_QUOTA = 0x0100
    _PROCESS_TERMINATE = 0x0001

    class _IoCounters(ctypes.Structure):
        _fields_ = [(name, ctypes.c_ulonglong) for name in (
            "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
            "ReadTransferCount", "WriteTransferCount", "OtherTransferCount",
        )]  # fmt: skip

    class _BasicLimits(ctypes.Structure):
        _fields_ = [
            ("PerProcessUserTimeLimit", ctypes.c_longlong),
            ("PerJobUserTimeLimit", ctypes.c_longlong),
            ("LimitFlags", wintypes.DWORD),
            ("MinimumWorkingSetSize", ctypes.c_size_t),
            ("MaximumWorkingSetSize", ctypes.c_size_t),
            ("ActiveProcessLimit", wintypes.DWORD),
            ("Affinity", ctypes.c_size_t),
            ("PriorityClass", wintypes.DWORD),
            ("SchedulingClass", wintypes.DWORD),
        ]

    class _ExtendedLimits(ctypes.Structure):
        _fields_ = [
            ("BasicLimitInformation", _BasicLimits),
            ("IoInfo", _IoCounters),
            ("ProcessMemoryLimit", ctypes.c_size_t),
            ("JobMemoryLimit", ctypes.c_size_t),
            ("PeakProcessMemoryUsed", ctypes.c_size_t),
            ("PeakJobMemoryUsed", ctypes.c_size_t),
        ]

    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _kernel32.CreateJobObjectW.restype = wintypes.HANDLE
    _kernel32.OpenProcess.restype = wintypes.HANDLE

    def _win_job_for(pid: int) -> int | None:
        """A kill-on-close Job Object holding ``pid``; None (logged by the caller) on failure.

        The child runs a moment before it joins the job; a grandchild it starts in that moment
        is outside the job. Gateway start scripts take far longer than that to start java.
        """
        job = _kernel32.CreateJobObjectW(None, None)
        if not job:
            return None
        limits = _ExtendedLimits()
        limits.BasicLimitInformation.LimitFlags = _JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        ok = _kernel32.SetInformationJobObject(
            job,
            _JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS,
            ctypes.byref(limits),
            ctypes.sizeof(limits),
        )
        handle = _kernel32.OpenProcess(_PROCESS_SET_QUOTA | _PROCESS_TERMINATE, False, pid)
        if ok and handle:
            ok = _kernel32.AssignProcessToJobObject(job, handle)
        if handle:
            _kernel32.CloseHandle(handle)
        if not ok:
            _kernel32.CloseHandle(job)
            return None
        return int(job)

    def _win_terminate_job(job: int) -> None:
        _kernel32.TerminateJobObject(job, 1)

    def _win_close(job: int) -> None:
        _kernel32.CloseHandle(job)

else:

    def _win_job_for(pid: int) -> int | None:
        return None

    def _win_terminate_job(job: int) -> None:
        pass

    def _win_close(job: int) -> None:
        pass
