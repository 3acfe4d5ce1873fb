"""A tidy shutdown loses nothing: what IB and the lifecycle said last is in the audit trail."""

from __future__ import annotations

from typing import Any

import pytest

from node.audit import AuditStore
from node.events import Event, Trigger
from support import until

pytestmark = pytest.mark.anyio


async def test_rows_queued_as_the_gateway_goes_are_journaled(node_factory: Any, sim: Any) -> None:
    """The broker's last flush decodes IB's final messages as the socket closes: what they
    queue (an IB notice here) is written before the journal writer stops, and so is the
    lifecycle's last transition."""
    node = await node_factory(GATEWAY_LAUNCHER="external", PAPER_GATEWAY_PORT=sim.port)
    await until(lambda: node.state == "SERVING")
    broker = node.daemon.broker
    disconnect = broker.disconnect

    def disconnect_with_a_last_notice() -> None:
        broker.on_ib_error(2104, "decoded during the final flush", -1)
        disconnect()

    broker.disconnect = disconnect_with_a_last_notice
    node.daemon.post(Event(Trigger.SHUTDOWN, "test shutdown"))
    await node.done.wait()
    async with await AuditStore.open(node.daemon.store.path) as store:
        rows = await store.journal_since(0)
    notices = [r.data["message"] for r in rows if r.kind == "ib_error"]
    assert "decoded during the final flush" in notices
    transitions = [r.data["to"] for r in rows if r.kind == "transition"]
    assert transitions[-1] == "OFF"
