"""The daemon's lifecycle against the simulator: real child processes, sockets and files,
with a ManualClock for every deadline the machine acts on."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from loguru import logger

from node.sim import Simulator
from support import drive, until

pytestmark = pytest.mark.anyio


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def serving(node: Any) -> None:
    await until(lambda: node.state == "SERVING")


async def restarted_once(node: Any, sim: Simulator) -> None:
    """Drop the gateway's connections and let the node restart it: one slot of the budget."""
    sim.faults.drop_all()
    await drive(node.clock, lambda: node.state == "SERVING"
                and node.daemon.state_document()["restarts"]["used"] == 1)  # fmt: skip


# ---------------------------------------------------------------------- the window


async def test_window_open_at_start_reaches_serving(node_factory: Any) -> None:
    node = await node_factory()
    await serving(node)
    doc = node.daemon.state_document()
    assert doc["gateway"]["account"] == "DU1234567"
    assert doc["gateway"]["server_version"] == 178
    assert doc["window"]["open"] is True
    assert [t["to"] for t in reversed(doc["transitions"])] == [
        "STARTING_GATEWAY",
        "CONNECTED",
        "SERVING",
    ]


async def test_outside_the_window_stays_off(node_factory: Any) -> None:
    node = await node_factory(at="2026-11-22T12:00:00-05:00")  # a Sunday
    await until(lambda: node.daemon.events_handled >= 1)  # the start-up window check
    assert node.state == "OFF"
    doc = node.daemon.state_document()
    assert doc["window"]["open"] is False
    assert doc["window"]["next_change"] == "2026-11-23T04:00:00-05:00"


async def test_window_closes_to_off_with_the_gateway_gone_and_reopens(node_factory: Any) -> None:
    node = await node_factory(at="2026-11-23T19:59:00-05:00")
    await serving(node)
    pid = node.launcher.pid
    assert pid is not None
    await drive(node.clock, lambda: node.state == "OFF", step=10)
    await until(lambda: not pid_alive(pid))
    await until(lambda: node.launcher.pid is None)
    assert node.daemon.state_document()["transitions"][0]["trigger"] == "window_closed"
    # Tuesday 04:00 opens it again.
    await drive(node.clock, lambda: node.state != "OFF", step=600)
    await serving(node)


async def test_time_jump_reevaluates_the_window(node_factory: Any) -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")
    try:
        node = await node_factory()
        await serving(node)
        await node.clock.wait_for_sleepers()
        node.clock.set(node.clock.now() + timedelta(hours=10))  # laptop resumed at 22:00
        await until(lambda: node.state == "OFF")
    finally:
        logger.remove(sink)
    assert any("the clock jumped" in line for line in lines)


# ---------------------------------------------------------------------- failures


async def test_gateway_killed_backs_off_and_serves_again(node_factory: Any) -> None:
    node = await node_factory()
    await serving(node)
    first_pid = node.launcher.pid
    with pytest.raises((anyio.EndOfStream, anyio.IncompleteRead, OSError)):
        await node.launcher.control("exit 1")
    await until(lambda: node.state == "BACKOFF")
    await drive(node.clock, lambda: node.state == "SERVING", step=1)
    assert node.launcher.pid != first_pid
    doc = node.daemon.state_document()
    assert doc["restarts"]["used"] == 1
    assert "entered_backoff" in node.notifier.kinds()
    assert "recovered" in node.notifier.kinds()


async def test_silent_gateway_degrades_then_recovers(node_factory: Any) -> None:
    node = await node_factory()
    await serving(node)
    await node.launcher.control("silent on")
    await drive(node.clock, lambda: node.state == "DEGRADED", step=1)
    doc = node.daemon.state_document()
    assert doc["heartbeat"]["misses"] >= 2
    assert doc["transitions"][0]["trigger"] == "heartbeat_lost"
    await node.launcher.control("silent off")
    await drive(node.clock, lambda: node.state == "SERVING", step=1)
    assert node.daemon.state_document()["transitions"][0]["trigger"] == "recovered"


async def test_silent_gateway_restarts_after_the_grace(node_factory: Any) -> None:
    node = await node_factory(CONNECTIVITY_GRACE=30)
    await serving(node)
    await node.launcher.control("silent on")
    await drive(node.clock, lambda: node.state == "DEGRADED", step=1)
    await drive(node.clock, lambda: node.state == "BACKOFF", step=5)
    assert node.daemon.state_document()["transitions"][0]["trigger"] == "grace_expired"
    await drive(node.clock, lambda: node.state == "SERVING", step=1)  # a fresh gateway


async def test_1100_degrades_and_1102_restores(node_factory: Any) -> None:
    node = await node_factory()
    await serving(node)
    await node.launcher.control("notice 1100")
    await until(lambda: node.state == "DEGRADED")
    await node.launcher.control("notice 1102")
    await until(lambda: node.state == "SERVING")


async def test_1100_heard_during_the_handshake_degrades(node_factory: Any, sim: Simulator) -> None:
    """IB sends 1100 to a client that connects during an outage, within the start-up sync:
    the node must not forget it on the way to SERVING."""
    sim.faults.send_notice(1100)  # IB is unreachable before the node connects
    node = await node_factory(GATEWAY_LAUNCHER="external", PAPER_GATEWAY_PORT=sim.port)
    await until(lambda: node.state == "DEGRADED")
    doc = node.daemon.state_document()
    assert (doc["transitions"][0]["from"], doc["transitions"][0]["trigger"]) == (
        "SERVING", "connectivity_lost")  # fmt: skip
    sim.faults.send_notice(1102)
    await serving(node)


async def test_a_fill_ib_never_delivered_during_1100_is_reconciled_on_recovery(
    node_factory: Any, sim: Simulator, tmp_path: Path
) -> None:
    """IB delivers no execution while it is unreachable (failure-modes #31): leaving DEGRADED
    reconciles, as after a reconnect, so the fill is in the order before SERVING."""
    arm = tmp_path / "arm_orders_confirmed.txt"
    arm.write_text("armed\n", encoding="utf-8")
    node = await node_factory(GATEWAY_LAUNCHER="external", PAPER_GATEWAY_PORT=sim.port,
                              ORDERS_ENABLED=True, ARM_ORDERS_FILE=arm)  # fmt: skip
    await serving(node)
    price = sim.market.quote("AAPL").last
    api = f"http://127.0.0.1:{node.api_port}"
    async with httpx.AsyncClient(base_url=api, headers={"X-API-Key": "test-key"}) as http:
        placed = await http.post("/v1/orders", json={
            "client_order_id": "gtc-1", "symbol": "AAPL", "side": "buy", "type": "limit",
            "qty": "5", "limit_price": f"{price * 0.9:.2f}", "time_in_force": "gtc"})  # fmt: skip
        assert placed.status_code == 201, placed.text
    assert [o.status for o in sim.engine.open_orders()] == ["Submitted"]  # resting at IB
    store = node.daemon.store
    sim.faults.send_notice(1100)
    await until(lambda: node.state == "DEGRADED")
    sim.faults.set_silent(True)  # what IB does while unreachable: the fill reaches no one
    sim.set_price("AAPL", price * 0.8)
    sim.faults.set_silent(False)
    assert [o.status for o in sim.engine.completed_orders()] == ["Filled"]
    sim.faults.send_notice(1102)
    await serving(node)
    order = await store.get_order("gtc-1")
    assert order is not None
    assert (order.status, order.filled_qty) == ("filled", Decimal(5))
    recovered = node.daemon.state_document()["transitions"][0]
    assert recovered["trigger"] == "recovered"
    assert "1 orders reconciled by orderRef" in recovered["reason"]


async def test_farm_flap_never_leaves_serving(node_factory: Any) -> None:
    node = await node_factory()
    await serving(node)
    visits = len(node.daemon.state_document()["transitions"])
    await node.launcher.control("notice 2103")
    await until(lambda: node.daemon.state_document()["gateway"]["market_data"] == "degraded")
    await node.launcher.control("notice 2104")
    await until(lambda: node.daemon.state_document()["gateway"]["market_data"] == "ok")
    assert node.state == "SERVING"
    assert len(node.daemon.state_document()["transitions"]) == visits


# ---------------------------------------------------------------------- external gateways


@pytest.fixture
async def stalled_sim(sim_factory: Any) -> Simulator:
    simulator: Simulator = await sim_factory()
    simulator.faults.set_handshake_stall(True)
    return simulator


async def test_handshake_never_completes_backs_off_after_the_deadline(
    node_factory: Any, stalled_sim: Simulator
) -> None:
    node = await node_factory(
        GATEWAY_LAUNCHER="external",
        PAPER_GATEWAY_PORT=stalled_sim.port,
        CONNECT_ATTEMPT_TIMEOUT=0.5,
        GATEWAY_START_TIMEOUT=120,
    )
    await until(lambda: node.state == "STARTING_GATEWAY")
    await drive(node.clock, lambda: node.state == "BACKOFF", step=5)
    reason = node.daemon.state_document()["transitions"][0]["reason"]
    assert "not ready within 120 s" in reason


async def test_window_closing_during_start_goes_off_and_next_opening_starts_again(
    node_factory: Any, stalled_sim: Simulator
) -> None:
    node = await node_factory(
        at="2026-11-23T19:59:30-05:00",
        GATEWAY_LAUNCHER="external",
        PAPER_GATEWAY_PORT=stalled_sim.port,
        CONNECT_ATTEMPT_TIMEOUT=0.5,
    )
    await until(lambda: node.state == "STARTING_GATEWAY")
    await drive(node.clock, lambda: node.state == "OFF", step=5)
    stalled_sim.faults.set_handshake_stall(False)
    await drive(node.clock, lambda: node.state != "OFF", step=600)
    await serving(node)


async def test_window_closing_during_backoff_goes_off(node_factory: Any, sim: Simulator) -> None:
    node = await node_factory(
        at="2026-11-23T19:58:00-05:00",
        GATEWAY_LAUNCHER="external",
        PAPER_GATEWAY_PORT=sim.port,
        BACKOFF_DELAYS="300",
    )
    await serving(node)
    sim.faults.drop_all()
    await until(lambda: node.state == "BACKOFF")
    await drive(node.clock, lambda: node.state == "OFF", step=10)
    assert node.daemon.state_document()["transitions"][0]["from"] == "BACKOFF"
    await drive(node.clock, lambda: node.state != "OFF", step=600)  # Tuesday 04:00
    await serving(node)


async def test_budget_spent_stays_in_backoff_notifies_once_and_resumes(
    node_factory: Any, sim: Simulator
) -> None:
    node = await node_factory(
        GATEWAY_LAUNCHER="external", PAPER_GATEWAY_PORT=sim.port, MAX_RESTARTS_PER_HOUR=1
    )
    await serving(node)
    await restarted_once(node, sim)
    sim.faults.drop_all()
    await drive(node.clock, lambda: "budget_exhausted" in node.notifier.kinds(), step=1)
    assert node.state == "BACKOFF"
    retry_at = node.daemon.state_document()["restarts"]["next_retry_at"]
    assert retry_at is not None
    await node.clock.wait_for_sleepers()
    node.clock.set(datetime.fromisoformat(retry_at.replace("Z", "+00:00")))  # the slot frees
    await serving(node)
    assert node.notifier.kinds().count("budget_exhausted") == 1


async def test_non_paper_account_latches_off_until_cleared(
    node_factory: Any, sim_factory: Any
) -> None:
    live: Simulator = await sim_factory(account="U7654321")
    node = await node_factory(GATEWAY_LAUNCHER="external", PAPER_GATEWAY_PORT=live.port)
    await until(lambda: node.state == "OFF" and node.daemon.state_document()["latched"])
    latched = node.daemon.state_document()["latched"]
    assert "U7654321" in latched
    assert "needs_human" in node.notifier.kinds()
    live.engine.account.account_id = "DU7654321"  # the operator fixed the login
    node.daemon.command("clear-latch")
    await serving(node)
    assert node.daemon.state_document()["latched"] is None


async def test_repeated_failed_starts_latch_needs_human(node_factory: Any) -> None:
    node = await node_factory(
        GATEWAY_LAUNCHER="external",
        PAPER_GATEWAY_PORT=1,
        LOGIN_FAILURE_LIMIT=2,
        GATEWAY_START_TIMEOUT=5,
    )
    await drive(node.clock, lambda: node.daemon.state_document()["latched"] is not None, step=1)
    assert node.state == "OFF"
    assert "2 failed starts in a row" in node.daemon.state_document()["latched"]


# ---------------------------------------------------------------------- operator state


async def test_stop_force_and_budget_survive_a_daemon_restart(
    node_factory: Any, sim: Simulator, tmp_path: Path
) -> None:
    state_dir = tmp_path / "shared-state"
    settings = {"GATEWAY_LAUNCHER": "external", "PAPER_GATEWAY_PORT": sim.port}
    sunday = "2026-11-22T12:00:00-05:00"
    node = await node_factory(at=sunday, state_dir=state_dir, **settings)
    node.daemon.command("start", force=True)
    await serving(node)
    await restarted_once(node, sim)
    node.daemon.command("shutdown")
    await node.done.wait()

    again = await node_factory(at=sunday, state_dir=state_dir, clock=node.clock, **settings)
    await serving(again)  # still forced although it is Sunday
    doc = again.daemon.state_document()
    assert doc["window"]["forced"] is True
    assert doc["restarts"]["used"] == 1
    again.daemon.command("stop")
    await until(lambda: again.state == "OFF")
    again.daemon.command("shutdown")
    await again.done.wait()

    third = await node_factory(at=sunday, state_dir=state_dir, clock=node.clock, **settings)
    await until(lambda: third.daemon.events_handled >= 1)
    assert third.state == "OFF"
    assert "stopped by the operator" in third.daemon.lifecycle.blocked_reason()
    third.daemon.command("start")
    await serving(third)


async def test_release_ends_a_forced_start_outside_the_window(
    node_factory: Any, sim: Simulator
) -> None:
    node = await node_factory(
        at="2026-11-22T12:00:00-05:00", GATEWAY_LAUNCHER="external", PAPER_GATEWAY_PORT=sim.port
    )
    node.daemon.command("start", force=True)
    await serving(node)
    node.daemon.command("release")
    await until(lambda: node.state == "OFF")


async def test_force_expires_after_force_max_hours(node_factory: Any, sim: Simulator) -> None:
    node = await node_factory(
        at="2026-11-22T12:00:00-05:00",
        GATEWAY_LAUNCHER="external",
        PAPER_GATEWAY_PORT=sim.port,
        FORCE_MAX_HOURS=1,
    )
    node.daemon.command("start", force=True)
    await serving(node)
    await drive(node.clock, lambda: node.state == "OFF", step=60)
    assert node.daemon.state_document()["window"]["forced"] is False


async def test_reset_backoff_clears_the_budget(node_factory: Any, sim: Simulator) -> None:
    node = await node_factory(GATEWAY_LAUNCHER="external", PAPER_GATEWAY_PORT=sim.port)
    await serving(node)
    await restarted_once(node, sim)
    node.daemon.command("reset-backoff")
    doc = node.daemon.state_document()["restarts"]
    assert (doc["used"], doc["attempt"]) == (0, 0)


async def test_reset_backoff_restarts_a_budget_blocked_backoff_now(
    node_factory: Any, sim: Simulator
) -> None:
    node = await node_factory(
        GATEWAY_LAUNCHER="external", PAPER_GATEWAY_PORT=sim.port, MAX_RESTARTS_PER_HOUR=1
    )
    await serving(node)
    await restarted_once(node, sim)
    sim.faults.drop_all()
    await drive(node.clock, lambda: "budget_exhausted" in node.notifier.kinds(), step=1)
    assert "restarting now" in node.daemon.command("reset-backoff")
    await serving(node)  # without moving the clock: no wait for the hour to pass


async def test_start_says_why_it_cannot(node_factory: Any) -> None:
    node = await node_factory(at="2026-11-22T12:00:00-05:00")  # Sunday, outside the window
    await until(lambda: node.daemon.events_handled >= 1)
    assert "outside the run window" in node.daemon.command("start")
    assert node.daemon.command("start", force=True).startswith("start forced until")
    await serving(node)


async def test_disconnect_racing_the_reconcile_is_a_retry_not_a_latch(
    node_factory: Any, sim: Simulator
) -> None:
    from node.events import Event, Trigger

    node = await node_factory(GATEWAY_LAUNCHER="external", PAPER_GATEWAY_PORT=sim.port,
                              at="2026-11-22T12:00:00-05:00")  # fmt: skip
    node.daemon.command("start", force=True)
    await serving(node)
    # Replay the race by hand: the machine is CONNECTED with the socket already gone.
    lifecycle = node.daemon.lifecycle
    node.daemon.broker.disconnect()
    lifecycle.state = "CONNECTED"
    await lifecycle.handle(Event(Trigger.RECONCILED, "race"))
    assert node.state == "BACKOFF"
    assert node.daemon.state_document()["latched"] is None


async def test_a_drop_during_the_reconcile_backs_off_and_serves_again(
    node_factory: Any, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket closing while CONNECTED waits for IB's orders is a gateway failure like
    any other (BACKOFF, then a fresh start), not an exception that ends the daemon."""
    from node.broker import Broker

    refresh = Broker.refresh_completed
    dropped: list[bool] = []

    async def dropped_midway(broker: Broker) -> None:
        if not dropped:
            dropped.append(True)
            sim.faults.set_silent(True)  # the request goes unanswered...
            sim.faults.drop_all()  # ...and the gateway closes the socket
        await refresh(broker)

    monkeypatch.setattr(Broker, "refresh_completed", dropped_midway)
    errors: list[str] = []
    sink = logger.add(errors.append, level="ERROR", format="{message}")
    try:
        node = await node_factory(GATEWAY_LAUNCHER="external", PAPER_GATEWAY_PORT=sim.port)
        await until(lambda: node.state == "BACKOFF" or node.done.is_set())
        sim.faults.set_silent(False)
        await drive(node.clock, lambda: node.state == "SERVING" or node.done.is_set())
    finally:
        logger.remove(sink)
    assert not node.done.is_set(), "the daemon ended"
    assert node.state == "SERVING"
    assert not [e for e in errors if "work failed" in e], "the drop was taken for a bug"


async def test_a_bug_in_a_states_work_backs_off_instead_of_ending_the_daemon(
    node_factory: Any, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.daemon import Daemon

    reconcile = Daemon._reconcile
    failed: list[bool] = []

    async def buggy(daemon: Daemon) -> str:
        if not failed:
            failed.append(True)
            raise RuntimeError("a bug")
        return await reconcile(daemon)

    monkeypatch.setattr(Daemon, "_reconcile", buggy)
    node = await node_factory(GATEWAY_LAUNCHER="external", PAPER_GATEWAY_PORT=sim.port)
    await until(lambda: node.state == "BACKOFF" or node.done.is_set())
    assert not node.done.is_set(), "the daemon ended"
    failure = node.daemon.state_document()["transitions"][0]
    assert (failure["from"], failure["trigger"]) == ("CONNECTED", "work_failed")
    assert "RuntimeError: a bug" in failure["reason"]
    await drive(node.clock, lambda: node.state == "SERVING")


async def test_second_daemon_on_the_same_state_dir_is_refused(
    node_factory: Any, tmp_path: Path
) -> None:
    from node.config import Settings
    from node.runtime import StartupError, run_node

    node = await node_factory()
    settings = Settings(
        _env_file=None,
        STATE_DIR=node.settings.STATE_DIR,  # type: ignore[call-arg]
        GATEWAY_LAUNCHER="external",
        API_KEY="k",
    )
    with pytest.raises(StartupError, match="holds STATE_DIR"):
        await run_node(settings, handle_signals=False)


# ---------------------------------------------------------------------- an IBC login failure

IBC_SECOND_FACTOR_TIMEOUT = """#!/bin/sh
# A stand-in for IBC's gatewaystart.sh: the second factor was not confirmed (IBC's exit code
# 1111, which a POSIX exit status keeps modulo 256).
exit 87
"""


@pytest.mark.skipif(os.name != "posix", reason="the stand-in start script is a POSIX script")
async def test_an_ibc_login_failure_is_a_failed_start_not_a_crash(
    node_factory: Any, tmp_path: Path
) -> None:
    ibc = tmp_path / "ibc"
    ibc.mkdir()
    script = ibc / "gatewaystart.sh"
    script.write_text(IBC_SECOND_FACTOR_TIMEOUT)
    script.chmod(0o755)
    ini = tmp_path / "config.ini"
    ini.write_text(
        "TradingMode=paper\nAcceptNonBrokerageAccountWarning=yes\n"
        "ExistingSessionDetectedAction=primary\nCommandServerPort=7462\n"
        "BindAddress=127.0.0.1\nControlFrom=\n"
    )
    node = await node_factory(GATEWAY_LAUNCHER="ibc", IBC_PATH=ibc, IBC_INI=ini)

    def into_backoff() -> list[dict[str, Any]]:
        return [t for t in node.daemon.state_document()["transitions"] if t["to"] == "BACKOFF"]

    await until(lambda: bool(into_backoff()) or node.done.is_set())
    assert not node.done.is_set(), "the daemon ended"
    [failed_start] = into_backoff()
    assert "second factor" in failed_start["reason"], failed_start
