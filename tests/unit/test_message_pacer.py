"""MessagePacer: whole messages, in order, however the bytes arrive; a run ends after each
message that can move an order; asked to, it leaves the rest for the next loop turn."""

from __future__ import annotations

import random
from collections.abc import Callable

from node.message_pacer import MessagePacer
from support import frame, split_frames


def ids(data: bytes) -> list[str]:
    """The message ids in whole frames (fails on a partial one)."""
    return [fields[0] for fields in split_frames(data)]


class Loop:
    """call_soon by hand: what is scheduled runs when the test says."""

    def __init__(self) -> None:
        self.ready: list[Callable[[], None]] = []

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.ready.append(callback)

    def turn(self) -> None:
        ready, self.ready = self.ready, []
        for callback in ready:
            callback()


def pacer_with(
    on_delivery: Callable[[MessagePacer, list[str]], None] = lambda pacer, ids: None,
) -> tuple[MessagePacer, list[list[str]], Loop]:
    loop = Loop()
    runs: list[list[str]] = []

    def deliver(data: bytes) -> None:
        runs.append(ids(data))
        on_delivery(pacer, runs[-1])

    pacer = MessagePacer(deliver, loop.call_soon)
    return pacer, runs, loop


STREAM = [frame("6", "NetLiquidation", str(i)) for i in range(3)] + [
    frame("3", "7", "Submitted"),
    frame("5", "7", "AAPL"),
    frame("11", "-1", "exec"),
    frame("73", "1", "DU1", "x" * 300),
    frame("59", "1", "comm"),
    frame("4", "2", "7", "201", "rejected"),
    frame("8", "1"),
]
WHOLE = b"".join(STREAM)
EXPECTED = [ids(f)[0] for f in STREAM]


def test_a_run_ends_after_each_message_that_can_move_an_order() -> None:
    pacer, runs, _ = pacer_with()
    pacer.data_received(WHOLE)
    assert runs == [["6", "6", "6", "3"], ["5"], ["11"], ["73", "59"], ["4"], ["8"]]


def test_whole_messages_in_order_however_the_bytes_arrive() -> None:
    cut_sets = [[cut] for cut in range(1, len(WHOLE))]  # every single cut
    rng = random.Random(20261126)
    cut_sets += [sorted(rng.sample(range(1, len(WHOLE)), k)) for k in (2, 5, 20, 80)
                 for _ in range(25)]  # fmt: skip
    cut_sets.append(list(range(1, len(WHOLE))))  # one byte at a time
    for cuts in cut_sets:
        pacer, runs, _ = pacer_with()
        for a, b in zip([0, *cuts], [*cuts, len(WHOLE)], strict=True):
            pacer.data_received(WHOLE[a:b])
        assert [i for run in runs for i in run] == EXPECTED, cuts


def defer_at_the_status(pacer: MessagePacer, run: list[str]) -> None:
    if run[-1] == "3":
        pacer.defer_rest()


def test_deferred_the_rest_waits_for_the_next_turn_and_new_bytes_queue_behind_it() -> None:
    pacer, runs, loop = pacer_with(defer_at_the_status)
    pacer.data_received(b"".join(STREAM[:5]))
    assert runs == [["6", "6", "6", "3"]]  # stopped right after the status
    pacer.data_received(b"".join(STREAM[5:]))  # arrives before the turn: queued behind
    assert runs == [["6", "6", "6", "3"]]
    loop.turn()
    assert [i for run in runs for i in run] == EXPECTED
    assert not loop.ready


def test_flush_delivers_now_and_the_scheduled_turn_then_does_nothing() -> None:
    def defer_every_time(pacer: MessagePacer, run: list[str]) -> None:
        pacer.defer_rest()

    pacer, runs, loop = pacer_with(defer_every_time)
    pacer.data_received(WHOLE + STREAM[0][:5])  # and the start of one more message
    assert runs == [["6", "6", "6", "3"]]
    pacer.flush()  # the connection closes: everything whole is decoded first
    assert [i for run in runs for i in run] == EXPECTED
    delivered = len(runs)
    loop.turn()
    assert len(runs) == delivered
    pacer.data_received(STREAM[0][5:])  # the partial message was kept
    assert runs[-1] == ["6"]


def test_after_close_nothing_is_delivered() -> None:
    pacer, runs, loop = pacer_with(defer_at_the_status)
    pacer.data_received(WHOLE)
    pacer.close()
    loop.turn()
    pacer.data_received(WHOLE)
    pacer.flush()
    assert runs == [["6", "6", "6", "3"]]


def test_a_deferral_with_nothing_pending_costs_nothing() -> None:
    pacer, runs, loop = pacer_with()
    pacer.defer_rest()
    pacer.defer_rest()  # one turn, however often asked
    assert len(loop.ready) == 1
    loop.turn()
    assert runs == []
    pacer.data_received(WHOLE)
    assert [i for run in runs for i in run] == EXPECTED


def test_bytes_arriving_during_a_delivery_queue_behind_and_nothing_comes_twice() -> None:
    """A nested event loop could hand over bytes while ib_async decodes a run."""
    late = b"".join(STREAM[4:])

    def more_while_decoding(pacer: MessagePacer, run: list[str]) -> None:
        nonlocal late
        if late:
            arrived, late = late, b""
            pacer.data_received(arrived)

    pacer, runs, _ = pacer_with(more_while_decoding)
    pacer.data_received(b"".join(STREAM[:4]))
    assert [i for run in runs for i in run] == EXPECTED
