"""`ibkr-node sim` as a user and the node's launcher run it: a child process on free ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from ib_async import LimitOrder, MarketOrder, Stock

from support import WAIT, connect_ib, until

pytestmark = pytest.mark.anyio

connect = connect_ib


async def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(WAIT):
        return await anyio.run_process(
            [sys.executable, "-m", "node", *args],
            check=False,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )


async def test_ctrl_c_exits_0(spawn_sim: Any) -> None:
    async with spawn_sim() as child:
        ib = await connect(child.port)
        child.process.send_signal(signal.SIGINT)
        assert await child.wait_exit() == 0
        await until(lambda: not ib.isConnected())


async def test_sigterm_exits_0(spawn_sim: Any) -> None:
    async with spawn_sim() as child:
        child.process.terminate()
        assert await child.wait_exit() == 0


async def test_exit_with_parent_ends_when_stdin_closes(spawn_sim: Any) -> None:
    async with spawn_sim("--exit-with-parent", stdin=subprocess.PIPE) as child:
        assert (await child.control("status"))["ok"]
        assert child.process.stdin is not None
        await child.process.stdin.aclose()
        assert await child.wait_exit() == 0


async def test_exit_fault_ends_the_process_like_a_crash(spawn_sim: Any) -> None:
    async with spawn_sim() as child:
        ib = await connect(child.port)
        with pytest.raises((anyio.EndOfStream, anyio.IncompleteRead, ConnectionError, OSError)):
            await child.control("exit 3")  # the process dies before it can answer
        assert await child.wait_exit() == 3
        await until(lambda: not ib.isConnected())


async def test_control_channel_commands(spawn_sim: Any) -> None:
    async with spawn_sim() as child:
        ib = await connect(child.port, client_id=4)
        codes: list[int] = []
        ib.errorEvent += lambda req_id, code, msg, contract: codes.append(code)
        try:
            status = await child.control("status")
            assert status["ok"]
            assert status["clients"] == [4]
            assert status["port"] == child.port
            assert set(json.dumps((await child.control("help"))["commands"]).split()) >= {
                '"drop":',
                '"exit',
            }
            assert (await child.control("notice 1100"))["clients"] == 1
            await until(lambda: 1100 in codes)
            assert (await child.control("notice 1102"))["ok"]
            quote = (await child.control("price aapl 123.45"))["quote"]
            assert quote["last"] == 123.45
            assert (await child.control("reject 201 Order rejected - reason:no"))["ok"]
            [contract] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
            trade = ib.placeOrder(contract, MarketOrder("BUY", 1))
            await until(lambda: 201 in codes)
            assert trade.orderStatus.status in ("Cancelled", "Inactive")
            assert (await child.control("partial 5"))["ok"]
            assert (await child.control("latency 0"))["ok"]
            assert (await child.control("step 3"))["ok"]
            assert (await child.control("open"))["ok"]
            for bad, why in [
                ("frobnicate", "unknown command"),
                ("notice 9999", "unknown notice"),
                ("silent maybe", "on or off"),
                ("price AAPL", "usage"),
                ("latency -1", "negative"),
                ("partial 0", "positive"),
                ("price NOPE 1", "unknown symbol"),
            ]:
                reply = await child.control(bad)
                assert reply["ok"] is False, bad
                assert why in reply["error"], bad
            assert (await child.control("stall on"))["ok"]
            assert (await child.control("status"))["faults"]["handshake_stall"] is True
            assert (await child.control("stall off"))["ok"]
            assert (await child.control("silent on"))["ok"]
            assert (await child.control("silent off"))["ok"]
            assert (await child.control("drop"))["dropped"] == 1
            await until(lambda: not ib.isConnected())
        finally:
            ib.disconnect()


async def test_state_survives_kill_9(spawn_sim: Any, state_file: Path) -> None:
    async with spawn_sim("--state-file", str(state_file), "--account", "DU7654321") as child:
        ib = await connect(child.port, client_id=2)
        [contract] = await ib.qualifyContractsAsync(Stock("SPY", "SMART", "USD"))
        filled = ib.placeOrder(contract, MarketOrder("BUY", 12, orderRef="coid-fill"))
        resting = ib.placeOrder(contract, LimitOrder("BUY", 3, 10.0, orderRef="coid-rest"))
        cancelled = ib.placeOrder(contract, LimitOrder("BUY", 1, 11.0, orderRef="coid-cxl"))
        await until(lambda: cancelled.orderStatus.status == "Submitted")
        ib.cancelOrder(cancelled.order)
        await child.control("reject")
        rejected = ib.placeOrder(contract, MarketOrder("BUY", 1, orderRef="coid-rej"))
        await until(
            lambda: (
                filled.isDone()
                and cancelled.isDone()
                and rejected.isDone()
                and resting.orderStatus.status == "Submitted"
            )
        )
        child.process.kill()  # SIGKILL: no chance to save anything more
        await child.wait_exit()
        await until(lambda: not ib.isConnected())
        highest_id = max(t.order.orderId for t in (filled, resting, cancelled, rejected))

    async with spawn_sim("--state-file", str(state_file)) as child:
        ib = await connect(child.port, client_id=2)
        try:
            assert ib.managedAccounts() == ["DU7654321"]
            [position] = ib.positions()
            assert (position.contract.symbol, position.position) == ("SPY", 12)
            assert [t.order.orderRef for t in ib.openTrades()] == ["coid-rest"]
            assert ib.openTrades()[0].order.permId == resting.order.permId
            completed = {
                t.order.orderRef: t.orderStatus.status
                for t in await ib.reqCompletedOrdersAsync(False)
            }
            assert completed == {
                "coid-fill": "Filled",
                "coid-cxl": "Cancelled",
                "coid-rej": "Inactive",
            }
            assert [f.execution.orderRef for f in ib.fills()] == ["coid-fill"]
            assert ib.client._reqIdSeq > highest_id
            # Ids keep increasing: a new order gets a fresh permId and fills.
            [contract] = await ib.qualifyContractsAsync(Stock("SPY", "SMART", "USD"))
            again = ib.placeOrder(contract, MarketOrder("SELL", 2))
            await until(again.isDone)
            assert again.order.permId > resting.order.permId
        finally:
            ib.disconnect()


async def test_corrupt_state_file_stops_start_up_with_a_clear_line(tmp_path: Path) -> None:
    broken = tmp_path / "state.json"
    broken.write_text("{not json", encoding="utf-8")
    result = await run_cli("sim", "--port", "0", "--state-file", str(broken))
    assert result.returncode == 2
    assert b"move it aside" in result.stderr


async def test_invalid_setting_names_the_variable_and_the_fix(tmp_path: Path) -> None:
    result = await run_cli("sim", "--port", "0", env={"PAPER_GATEWAY_PORT": "99999"}, cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.decode().strip().splitlines()
    assert "PAPER_GATEWAY_PORT" in line
    assert "1 to 65535" in line


async def test_env_file_is_read(tmp_path: Path) -> None:
    env = tmp_path / "custom.env"
    env.write_text("LOG_FORMAT=yaml\n", encoding="utf-8")
    result = await run_cli("--env-file", str(env), "sim", "--port", "0")
    assert result.returncode == 2
    assert b"LOG_FORMAT" in result.stderr
    assert b"text or json" in result.stderr
    missing = await run_cli("--env-file", str(tmp_path / "nope.env"), "sim")
    assert missing.returncode == 2
    assert b"no such file" in missing.stderr


async def test_port_in_use_is_a_clear_error(spawn_sim: Any) -> None:
    async with spawn_sim() as child:
        result = await run_cli("sim", "--port", str(child.port))
        assert result.returncode == 2
        assert b"choose another --port" in result.stderr


async def test_account_must_be_a_paper_account() -> None:
    result = await run_cli("sim", "--account", "U1234567")
    assert result.returncode == 2
    assert b"not a paper account" in result.stderr


@pytest.mark.parametrize(("level", "logs_info"), [("WARNING", False), ("INFO", True)])
async def test_log_level_quiets_the_per_request_lines(level: str, logs_info: bool) -> None:
    """The node's launcher runs its simulator at WARNING: at INFO it writes a line per request
    and per order change, which the node would read and drop."""
    command = [sys.executable, "-m", "node", "sim", "--host", "127.0.0.1", "--port", "0",
               "--control-port", "0", "--tick-interval", "0", "--log-level", level]  # fmt: skip
    async with await anyio.open_process(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE) as process:  # fmt: skip
        assert process.stdout is not None
        assert process.stderr is not None
        reader = BufferedByteReceiveStream(process.stdout)
        with anyio.fail_after(30):
            while b"control channel on" not in await reader.receive_until(b"\n", 4096):
                pass
            process.terminate()
            await process.wait()
            log = b"".join([chunk async for chunk in process.stderr])
    assert (b"simulated IB Gateway listening on" in log) is logs_info, log
