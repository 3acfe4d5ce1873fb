"""Crashes around the order path, with `ibkr-node run --demo` as real processes (DESIGN.md §5, §7).

Each test runs the daemon the way the boot task does (a child process; its simulator is the
daemon's own child), talks to it over real HTTP on 127.0.0.1 like the Pi, and reads what IB's
servers keep (the simulator's `--state-file`, STATE_DIR/sim-state.json) as the ground truth:

- a kill -9 between the audit intent and IB's first report: the restarted daemon reconciles the
  order by orderRef, sends nothing twice, and a retry of the request replays the order;
- the gateway crashing during a stream of 200 orders: every order ends in exactly one terminal
  state, none reaches IB twice and no fill is missed;
- the kill switch survives a daemon restart and is cleared only by `ibkr-node ctl clear-kill`.

Every wait is on a condition with a generous bound; nothing asserts on wall-clock time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import Process

from node.audit import verify_chain
from node.sim import send_command
from node.sim.state import StateFile
from support import WAIT, free_port

pytestmark = pytest.mark.anyio

SERVING_WAIT = 90  # a start, or a crash then backoff, restart and reconcile: generous
POLL = 0.05  # between two looks at a condition; the outcome never depends on it
OPEN_STATUSES = {"pending_new", "accepted", "new", "partially_filled", "pending_cancel"}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "STATE_DIR": str(tmp_path / "state"),
        "API_PORT": str(free_port()),
        "PAPER_GATEWAY_PORT": str(free_port()),
        "SIM_CONTROL_PORT": str(free_port()),
        "LOG_LEVEL": "INFO",
    }


def market(cid: str, side: str = "buy") -> dict[str, Any]:
    return {"client_order_id": cid, "symbol": "AAPL", "side": side, "type": "market", "qty": "1"}


# ---------------------------------------------------------------------- the daemon as a process


@dataclass
class Node:
    """One `ibkr-node run --demo` process and an HTTP client holding its demo key."""

    process: Process
    http: httpx.AsyncClient
    log: Path

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def state_dir(env: dict[str, str]) -> Path:
    return Path(env["STATE_DIR"])


def sim_state_file(env: dict[str, str]) -> Path:
    return state_dir(env) / "sim-state.json"


async def wait_for(predicate: Callable[[], Awaitable[bool]], what: str,
                   limit: float = WAIT) -> None:  # fmt: skip
    """Poll a condition on another process until it holds; fail naming it after `limit` s.

    The daemon and its simulator are other processes: there is no event to wait on, so this
    looks again every POLL seconds; it never waits longer than the condition takes.
    """
    try:
        with anyio.fail_after(limit):
            while not await predicate():  # noqa: ASYNC110 - another process's state
                await anyio.sleep(POLL)
    except TimeoutError:
        raise AssertionError(f"gave up after {limit} s waiting for: {what}") from None


@asynccontextmanager
async def node(env: dict[str, str], cwd: Path, name: str) -> AsyncIterator[Node]:
    """Start a demo daemon; always kill it at the end (its simulator follows on its own)."""
    log = cwd / f"{name}.log"
    with log.open("wb") as out:
        process = await anyio.open_process(
            [sys.executable, "-m", "node", "run", "--demo"], env=env, cwd=cwd,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    http: httpx.AsyncClient | None = None
    try:
        key_file = state_dir(env) / "demo_api_key.txt"

        async def key_written() -> bool:
            if process.returncode is not None:
                raise AssertionError(f"the daemon exited with {process.returncode}")
            return key_file.is_file() and bool(key_file.read_text().strip())

        await wait_for(key_written, "the demo key file", SERVING_WAIT)
        key = key_file.read_text().split()[0]
        http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{env['API_PORT']}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(30.0),
        )
        yield Node(process, http, log)
    finally:
        if http is not None:
            await http.aclose()
        if process.returncode is None:
            process.kill()
            with anyio.move_on_after(WAIT, shield=True):
                await process.wait()
        await process.aclose()


async def state_doc(n: Node) -> dict[str, Any] | None:
    try:
        response = await n.http.get("/v1/state")
    except httpx.TransportError:
        return None  # not listening yet
    if response.status_code != 200:
        return None
    doc: dict[str, Any] = response.json()
    return doc


async def until_serving(n: Node) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def serving() -> bool:
        if n.process.returncode is not None:
            raise AssertionError(f"the daemon exited with {n.process.returncode}:\n"
                                 f"{n.log_tail()}")  # fmt: skip
        doc = await state_doc(n)
        if doc is not None and doc["state"] == "SERVING":
            seen.append(doc)
            return True
        return False

    try:
        await wait_for(serving, "SERVING", SERVING_WAIT)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{n.log_tail()}") from None
    return seen[-1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def until_gone(pid: int) -> None:
    async def gone() -> bool:
        return not alive(pid)

    await wait_for(gone, f"process {pid} to exit")


def sim_orders(env: dict[str, str]) -> list[dict[str, Any]]:
    """What IB's servers hold: the simulator's state file (a torn last record is skipped)."""
    state = StateFile(sim_state_file(env)).load()
    if state is None:
        return []
    orders: list[dict[str, Any]] = state["orders"]
    return orders


def sim_executions(env: dict[str, str]) -> list[dict[str, Any]]:
    state = StateFile(sim_state_file(env)).load()
    if state is None:
        return []
    executions: list[dict[str, Any]] = state["executions"]
    return executions


async def by_client_id(n: Node, cid: str) -> httpx.Response:
    return await n.http.get(f"/v1/orders/by-client-id/{cid}")


async def order_status(n: Node, cid: str) -> str:
    response = await by_client_id(n, cid)
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


async def crash_the_simulator(control_port: int) -> None:
    """`exit 1` on the control channel: the process ends at once and sends no reply."""
    try:
        reply = await send_command(control_port, "exit 1")
    except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
        return  # the expected outcome: the connection ended with the process
    raise AssertionError(f"the simulator answered `exit 1`: {reply}")


async def ctl(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(WAIT * 2):
        return await anyio.run_process([sys.executable, "-m", "node", "ctl", *args],
                                       check=False, env=env, cwd=cwd)  # fmt: skip


async def stop_with_sigterm(n: Node) -> None:
    n.process.send_signal(signal.SIGTERM)
    with anyio.fail_after(SERVING_WAIT):
        code = await n.process.wait()
    assert code == 0, n.log_tail()


# ---------------------------------------------------------------------- 1. kill -9 mid-order


async def test_kill_9_between_intent_and_ack_reconciles_by_order_ref(
    env: dict[str, str], tmp_path: Path
) -> None:
    cid = "crash-mid-ack-1"
    body = market(cid)
    async with node(env, tmp_path, "first") as first:
        doc = await until_serving(first)
        sim_pid = int(doc["gateway"]["pid"])
        # A first order makes the daemon learn AAPL's conId, so X's path to IB is only the
        # gate, the intent and placeOrder: with the latency below a contract lookup would
        # otherwise hold X back before anything is written.
        warm = await first.http.post("/v1/orders", json=market("warm-up-1"))
        assert warm.status_code == 201, warm.text

        async def warm_filled() -> bool:
            return await order_status(first, "warm-up-1") == "filled"

        await wait_for(warm_filled, "the warm-up order filled")

        reply = await send_command(int(env["SIM_CONTROL_PORT"]), "latency 30")
        assert reply["ok"] is True, reply

        outcome: list[Any] = []

        async def post_x() -> None:
            try:
                outcome.append(await first.http.post("/v1/orders", json=body))
            except httpx.TransportError as exc:  # the daemon died under the request
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(post_x)

            async def intent_written() -> bool:
                response = await by_client_id(first, cid)
                return response.status_code == 200

            await wait_for(intent_written, f"the intent of {cid} in the daemon's store")
            before = (await by_client_id(first, cid)).json()
            # The intent is in the store while IB's first report is still 30 s away.
            assert before["status"] == "pending_new", before

            async def ib_has_it() -> bool:
                return any(o["order_ref"] == cid for o in sim_orders(env))

            await wait_for(ib_has_it, f"{cid} in the simulator's state file (IB has it)")

            first.process.kill()
            with anyio.fail_after(WAIT):
                assert await first.process.wait() == -signal.SIGKILL
        # The daemon died under the request, or ORDER_ACK_TIMEOUT answered it first (as
        # pending_new: IB's first report was still held back by the latency).
        [answer] = outcome
        if isinstance(answer, httpx.Response):
            assert answer.status_code == 201, answer.text
            assert answer.json()["status"] == "pending_new"
            assert answer.json()["id"] == before["id"]
        else:
            assert isinstance(answer, httpx.TransportError), answer
    await until_gone(sim_pid)  # the simulator saw its stdin close and exited by itself
    [at_ib] = [o for o in sim_orders(env) if o["order_ref"] == cid]
    assert at_ib["status"] == "Filled"

    async with node(env, tmp_path, "second") as second:
        await until_serving(second)  # CONNECTED reconciled before SERVING
        after = await by_client_id(second, cid)
        assert after.status_code == 200, after.text
        order = after.json()
        assert order["id"] == before["id"]
        assert order["status"] == "filled", order
        assert order["filled_qty"] == "1"
        assert order["broker_status"] == "Filled"

        same = [o for o in sim_orders(env) if o["order_ref"] == cid]
        assert len(same) == 1, f"{cid} reached IB {len(same)} times"
        fills = [e for e in sim_executions(env) if e["order_ref"] == cid]
        assert len(fills) == 1, fills

        again = await second.http.post("/v1/orders", json=body)
        assert again.status_code == 200, again.text
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert again.json()["id"] == before["id"]
        assert again.json()["status"] == "filled"
        assert len([o for o in sim_orders(env) if o["order_ref"] == cid]) == 1
        await stop_with_sigterm(second)

    result = verify_chain(state_dir(env) / "audit.db")
    assert result.ok, result


# ---------------------------------------------------------------------- 2. gateway crash


ORDERS = 200
IN_FLIGHT = 8
CRASH_AFTER = 50
MAX_ATTEMPTS = 40  # per client_order_id: 503/409 answers retried like the Pi does
MAX_RETRY_AFTER = 5.0


@pytest.mark.timeout(240)
async def test_gateway_crash_during_200_orders_loses_nothing_and_sends_nothing_twice(
    env: dict[str, str], tmp_path: Path
) -> None:
    cids = [f"stream-{i:03d}" for i in range(ORDERS)]
    bodies = {cid: market(cid, "buy" if i % 2 == 0 else "sell") for i, cid in enumerate(cids)}
    answers: dict[str, dict[str, Any]] = {}
    retried: Counter[str] = Counter()
    answered_2xx = 0
    crash_due = anyio.Event()
    crashed = anyio.Event()

    async with node(env, tmp_path, "stream") as n:
        doc = await until_serving(n)
        first_sim_pid = int(doc["gateway"]["pid"])

        async def place(cid: str) -> None:
            nonlocal answered_2xx
            for _ in range(MAX_ATTEMPTS):
                if crash_due.is_set():
                    # No new request until the crash is on its way: on a loaded machine the
                    # rest of the stream could otherwise finish before it lands. The requests
                    # already in flight stay in flight through it.
                    await crashed.wait()
                try:
                    response = await n.http.post("/v1/orders", json=bodies[cid])
                except httpx.TransportError:
                    # A keep-alive connection closed under the request: resend the same
                    # client_order_id, as the Pi does (the node's idempotency makes it safe).
                    retried["transport-error"] += 1
                    continue
                if response.status_code in (200, 201):
                    answers[cid] = response.json()
                    answered_2xx += 1
                    if answered_2xx >= CRASH_AFTER:
                        crash_due.set()
                    return
                problem = response.json()
                retried[problem.get("type", "?")] += 1
                if response.status_code == 503:
                    # what the Pi does: nothing was sent, retry after the advertised delay
                    delay = float(response.headers.get("Retry-After", "1"))
                    await anyio.sleep(min(delay, MAX_RETRY_AFTER))
                elif response.status_code == 409 and problem["type"].endswith(
                    "request-in-progress"
                ):
                    await anyio.sleep(0.2)
                else:
                    raise AssertionError(f"{cid}: unexpected {response.status_code} {problem}")
            raise AssertionError(f"{cid}: no 2xx after {MAX_ATTEMPTS} attempts")

        async def crash() -> None:
            await crash_due.wait()
            await crash_the_simulator(int(env["SIM_CONTROL_PORT"]))
            await until_gone(first_sim_pid)  # the crash really happened
            crashed.set()

        with anyio.fail_after(180):
            async with anyio.create_task_group() as tg:
                tg.start_soon(crash)
                limiter = anyio.CapacityLimiter(IN_FLIGHT)

                async def worker(cid: str) -> None:
                    async with limiter:
                        await place(cid)

                for cid in cids:
                    tg.start_soon(worker, cid)
        assert set(answers) == set(cids)

        async def nothing_open() -> bool:
            response = await n.http.get("/v1/orders", params={"status": "open", "limit": 500})
            return response.status_code == 200 and response.json()["items"] == []

        await wait_for(nothing_open, "no order left pending_new/accepted/new", SERVING_WAIT)
        doc = await until_serving(n)
        assert int(doc["gateway"]["pid"]) != first_sim_pid  # a new simulator serves

        final: dict[str, dict[str, Any]] = {}
        for cid in cids:
            response = await by_client_id(n, cid)
            assert response.status_code == 200, response.text
            final[cid] = response.json()
        at_ib = Counter(o["order_ref"] for o in sim_orders(env))
        ib_status = {o["order_ref"]: o["status"] for o in sim_orders(env)}

    twice = {ref: k for ref, k in at_ib.items() if k > 1}
    assert not twice, f"orders that reached IB more than once: {twice}"
    for cid, order in final.items():
        assert order["client_order_id"] == cid
        assert order["id"] == answers[cid]["id"], f"{cid} changed id"
        assert order["status"] in ("filled", "rejected"), (cid, order)
        if order["status"] == "rejected":
            assert order["status_reason"], (cid, order)
            assert ib_status.get(cid) != "Filled", (cid, order)
        else:
            assert order["filled_qty"] == "1", (cid, order)
    filled_at_ib = {ref for ref, status in ib_status.items() if status == "Filled"}
    filled_in_node = {cid for cid, order in final.items() if order["status"] == "filled"}
    missed = filled_at_ib & set(cids) - filled_in_node
    assert not missed, f"fills at IB the node does not show: {sorted(missed)}"
    invented = filled_in_node - filled_at_ib
    assert not invented, f"filled in the node but not at IB: {sorted(invented)}"
    assert len(filled_in_node) >= CRASH_AFTER  # the stream did trade before and after
    assert retried, "the crash never refused an order: it did not land during the stream"

    result = verify_chain(state_dir(env) / "audit.db")
    assert result.ok, result


# ---------------------------------------------------------------------- 3. kill switch


async def test_kill_switch_survives_a_restart_until_ctl_clear_kill(
    env: dict[str, str], tmp_path: Path
) -> None:
    async with node(env, tmp_path, "before") as before:
        await until_serving(before)
        killed = await before.http.post("/v1/kill")
        assert killed.status_code == 202, killed.text
        assert killed.json()["kill_switch"] is True
        refused = await before.http.post("/v1/orders", json=market("ks-before"))
        assert refused.status_code == 403
        assert refused.json()["type"].endswith("/kill-switch-engaged")
        await stop_with_sigterm(before)

    async with node(env, tmp_path, "after") as after:
        doc = await until_serving(after)
        assert doc["gates"]["kill_switch"] is True
        assert doc["gates"]["can_place_orders"] is False
        refused = await after.http.post("/v1/orders", json=market("ks-after"))
        assert refused.status_code == 403, refused.text
        assert refused.json()["type"].endswith("/kill-switch-engaged")
        # a refused request consumes nothing: the id is still free
        assert (await by_client_id(after, "ks-after")).status_code == 404

        cleared = await ctl("clear-kill", env=env, cwd=tmp_path)
        assert cleared.returncode == 0, cleared.stderr
        now = await state_doc(after)
        assert now is not None
        assert now["gates"]["kill_switch"] is False
        assert now["gates"]["can_place_orders"] is True
        placed = await after.http.post("/v1/orders", json=market("ks-after"))
        assert placed.status_code == 201, placed.text
        assert placed.json()["status"] in ("accepted", "new", "filled")

        async def filled() -> bool:
            return await order_status(after, "ks-after") == "filled"

        await wait_for(filled, "the order after clear-kill filled")
        await stop_with_sigterm(after)
    refs = Counter(o["order_ref"] for o in sim_orders(env))
    assert refs["ks-before"] == 0  # refused while the switch was on: never reached IB
    assert refs["ks-after"] == 1


# ---------------------------------------------------------------------- found while writing these


async def test_gateway_crash_during_a_contract_lookup_is_a_503_not_a_500(
    env: dict[str, str], tmp_path: Path
) -> None:
    # DEBUG makes the daemon copy its simulator's request log into its own log: the one place
    # that shows the lookup has reached the gateway.
    env = {**env, "LOG_LEVEL": "DEBUG"}
    cid = "lookup-crash-1"
    body = {**market(cid), "symbol": "MSFT"}  # no order of MSFT yet: its conId is not cached
    async with node(env, tmp_path, "lookup") as n:
        await until_serving(n)
        reply = await send_command(int(env["SIM_CONTROL_PORT"]), "latency 30")
        assert reply["ok"] is True, reply
        outcome: list[httpx.Response] = []

        async def post() -> None:
            outcome.append(await n.http.post("/v1/orders", json=body))

        async def lookup_at_the_gateway() -> bool:
            return any("reqContractDetails" in line and "MSFT" in line
                       for line in n.log.read_text(errors="replace").splitlines())  # fmt: skip

        async with anyio.create_task_group() as tg:
            tg.start_soon(post)
            await wait_for(lookup_at_the_gateway, "the MSFT contract lookup at the gateway")
            await crash_the_simulator(int(env["SIM_CONTROL_PORT"]))
        [answer] = outcome
        assert answer.status_code == 503, f"{answer.status_code} {answer.text}"
        assert answer.headers.get("Retry-After")
        assert answer.json()["type"] in ("/problems/gateway-unavailable", "/problems/not-ready")
        # nothing was sent, so the id stays free and the retry goes through once recovered
        assert (await by_client_id(n, cid)).status_code == 404
        await until_serving(n)
        again = await n.http.post("/v1/orders", json=body)
        assert again.status_code == 201, again.text
        assert sum(o["order_ref"] == cid for o in sim_orders(env)) == 1
