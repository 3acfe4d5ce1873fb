"""The launcher contract the lifecycle machine uses, and the machinery the built-ins share.

A launcher starts and stops one gateway and says how to reach it (``endpoint``).

**Who owns the background tasks.** A launcher that runs a child needs tasks that outlive
``start()`` (draining the child's output, noticing its exit), and they must not live in the
STARTING_GATEWAY state's tasks, which are cancelled when the state is left. So every launcher
is used inside its own context, for as long as the daemon runs::

    async with launcher.running():      # the launcher's task group lives here
        ...                             # start() / stop() / wait_exited() any number of times

``start()`` outside ``running()`` is a programming error (RuntimeError). Leaving ``running()``
stops a gateway that is still up (``stop(stop_timeout)``, shielded) and cancels the tasks, so
the child never outlives the daemon's normal exit; the OS-level guarantees for an abnormal exit
are in ``node.procutil`` and the ``sim`` launcher's stdin pipe.

Every timeout here is a real-time bound on I/O; the lifecycle machine owns the deadlines it
acts on through its own Clock.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import anyio
from anyio.abc import TaskGroup
from loguru import logger

from node import procutil
from node.procutil import Child

EXIT_KILL_WAIT = 10.0  # seconds to wait for a killed tree to be reaped


@dataclass(frozen=True)
class GatewayEndpoint:
    host: str
    port: int


class LaunchError(Exception):
    """A failed start (or a refused configuration); ``str()`` is the operator-facing reason."""


class LoginFailure(LaunchError):
    """The launcher knows the login itself failed; counts toward LOGIN_FAILURE_LIMIT."""


@runtime_checkable
class Launcher(Protocol):
    """What the lifecycle machine needs from a gateway launcher.

    - ``running()``: the context owning the launcher's background tasks (see the module doc).
    - ``start()``: launch; returns once the process is started, not when the API answers
      (the ``sim`` launcher returns once its port is bound). Raises LaunchError.
    - ``wait_exited()``: returns the exit code when the process from the latest ``start()``
      exits (at once if it already has); before any start it waits for one. May raise
      LoginFailure instead when the launcher can tell the exit was a failed login (``ibc``).
      Sleeps forever for ``external``.
    - ``stop(timeout)``: tidy stop, then kill the tree after ``timeout`` seconds; idempotent;
      also after a start that failed half-way.
    - ``check_config()``: static pre-flight; raises LaunchError naming the setting and the fix.
    - ``port_holder()``: who already listens on ``endpoint.port`` ("pid 1234 (java)", or
      "unknown process"), None when the port is free. Blocking (it may run ss, lsof or
      netstat): call it through ``anyio.to_thread.run_sync``. Meaningful before ``start()``.
    """

    name: str
    endpoint: GatewayEndpoint
    simulated: bool

    @property
    def pid(self) -> int | None: ...

    def running(self) -> AbstractAsyncContextManager[object]: ...

    async def start(self) -> None: ...

    async def wait_exited(self) -> int | None: ...

    async def stop(self, timeout: float) -> None: ...  # noqa: ASYNC109 - the contract

    def check_config(self) -> None: ...

    def port_holder(self) -> str | None: ...


@dataclass(eq=False)
class Run:
    """One started child: its exit is noticed by a reaper task in the launcher's task group."""

    child: Child
    exited: anyio.Event = field(default_factory=anyio.Event)
    returncode: int | None = None
    closed: bool = False  # stopped and its pipes released
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))  # last output lines


class ProcessLauncher:
    """Shared machinery of the launchers that run a child process (sim, ibc, exe).

    Subclasses build the command (``_command``) and may change the tidy stop
    (``_request_stop``, default: SIGTERM to the group / CTRL_BREAK on Windows) and how a
    child's output lines are logged (``log_prefix``).
    """

    name: str = "process"
    simulated: bool = False
    log_prefix: str = "gateway"

    def __init__(self, endpoint: GatewayEndpoint, *, stop_timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.stop_timeout = stop_timeout
        self._tg: TaskGroup | None = None
        self._run: Run | None = None
        self._run_changed = anyio.Event()
        self._stop_lock = anyio.Lock()

    # --- the contract ---------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        run = self._run
        return run.child.pid if run is not None and not run.exited.is_set() else None

    def running(self) -> AbstractAsyncContextManager[object]:
        return self._running()

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[object]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield self
            finally:
                with anyio.CancelScope(shield=True):
                    await self.stop(self.stop_timeout)
                self._tg = None
                tg.cancel_scope.cancel()

    async def wait_exited(self) -> int | None:
        while self._run is None:
            await self._run_changed.wait()
        run = self._run
        await run.exited.wait()
        return run.returncode

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 - the contract
        async with self._stop_lock:
            run = self._run
            if run is None or run.closed:
                return
            if not run.exited.is_set():
                logger.info("{}: stopping pid {}", self.name, run.child.pid)
                with anyio.move_on_after(timeout):
                    await self._request_stop(run)
                    await run.exited.wait()
                if not run.exited.is_set():
                    logger.warning(
                        "{}: pid {} still running after {:g} s; killing its process tree",
                        self.name,
                        run.child.pid,
                        timeout,
                    )
                    run.child.kill_tree()
                    with anyio.move_on_after(EXIT_KILL_WAIT):
                        await run.exited.wait()
            run.closed = True
            with anyio.move_on_after(EXIT_KILL_WAIT):
                await run.child.aclose()

    def check_config(self) -> None:
        raise NotImplementedError

    def port_holder(self) -> str | None:
        return procutil.port_holder(self.endpoint.host, self.endpoint.port)

    # --- for subclasses -------------------------------------------------------------------

    def _command(self) -> list[str]:
        raise NotImplementedError

    async def _request_stop(self, run: Run) -> None:
        run.child.terminate_tree()

    def _task_group(self) -> TaskGroup:
        if self._tg is None:
            raise RuntimeError(f"{type(self).__name__}.start() outside `async with running()`")
        return self._tg

    async def _spawn(self, *, stdin: int | None = None) -> Run:
        """Start the command; a reaper and the output pumps run in the launcher's task group."""
        tg = self._task_group()
        await self.stop(self.stop_timeout)  # never two children from one launcher
        command = self._command()
        try:
            child = await procutil.spawn(
                command, stdin=subprocess.DEVNULL if stdin is None else stdin
            )
        except OSError as exc:
            raise LaunchError(f"{self.name}: cannot run {command[0]}: {exc}") from exc
        run = Run(child)
        self._run = run
        self._run_changed.set()
        self._run_changed = anyio.Event()
        logger.info("{}: started pid {}: {}", self.name, child.pid, " ".join(command))
        if child.job is None and sys.platform == "win32":  # pragma: no cover
            logger.warning("{}: pid {} is not in a kill-on-close Job Object", self.name, child.pid)
        tg.start_soon(self._reap, run)
        tg.start_soon(procutil.pump_lines, child.process.stderr, self._line_sink(run))
        stdout = child.process.stdout
        if stdout is not None and self._pumps_stdout():
            tg.start_soon(procutil.pump_lines, stdout, self._line_sink(run))
        return run

    def _pumps_stdout(self) -> bool:
        return True

    def _line_sink(self, run: Run) -> Callable[[str], None]:
        prefix = self.log_prefix

        def sink(line: str) -> None:
            run.tail.append(line)
            logger.debug("{}: {}", prefix, line)

        return sink

    async def _reap(self, run: Run) -> None:
        with contextlib.suppress(Exception):
            run.returncode = await run.child.wait()
        # Stragglers (a start script's grandchildren, such as IBC's java) go with the group at
        # once, while the group id cannot yet have been reused.
        run.child.kill_tree()
        run.exited.set()
        if self._run is run and run.returncode is not None:
            logger.info("{}: pid {} exited with code {}", self.name, run.child.pid, run.returncode)
