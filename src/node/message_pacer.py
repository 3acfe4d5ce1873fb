"""Hands ib_async the gateway's bytes, and can stop after a message so the event loop runs.

The gateway answers an order with one burst: the order's status, then its fill, the account's
values and the portfolio (70 messages, 6 kB, in one read from the simulator). ib_async decodes a
read whole in one callback, so a request answered by the burst's first status could only be
resumed once the whole burst was decoded, 2 ms later on a small machine. The pacer sits
between the socket and ib_async's decoder: it delivers the bytes a run of whole messages at a
time, ending a run after each message that can move an order, and when asked to
(`defer_rest`) it leaves the rest for the next turn of the event loop, after the tasks woken
so far. Nothing is dropped or reordered: bytes that arrive meanwhile queue behind the rest.

Message framing: a 4-byte big-endian length, then the fields, each ending in NUL, the first
being the message id in decimal (tws-protocol.md §1).
"""

from __future__ import annotations

from collections.abc import Callable

# orderStatus, error, openOrder, execDetails, commissionReport: what can report on an order.
ORDER_MESSAGE_IDS = frozenset({b"3", b"4", b"5", b"11", b"59"})
_PREFIX = 4


class MessagePacer:
    def __init__(
        self, deliver: Callable[[bytes], None], call_soon: Callable[[Callable[[], None]], object]
    ) -> None:
        self._deliver = deliver  # ib_async's decoder: takes whole messages
        self._call_soon = call_soon
        self._pending = b""  # received, not yet delivered (whole messages, then a partial one)
        self._deferred = False  # the rest waits for a scheduled `_resume`
        self._turn = 0  # which scheduled `_resume` is the current one
        self._delivering = False
        self._closed = False

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._pending += data
        if not self._deferred:
            self._deliver_pending()

    def defer_rest(self) -> None:
        """Deliver what is left on the next turn of the event loop. Scheduled now, so the rest
        is decoded after the tasks already woken and before those woken later."""
        if self._deferred or self._closed:
            return
        self._deferred = True
        self._turn += 1
        turn = self._turn
        self._call_soon(lambda: self._resume(turn))

    def flush(self) -> None:
        """Deliver every whole message received, now (the connection is closing: what the
        gateway sent before it must be decoded before ib_async hears of the close)."""
        self._deferred = False
        self._deliver_pending(pausing=False)

    def close(self) -> None:
        self._closed = True
        self._pending = b""

    def _resume(self, turn: int) -> None:
        if not self._deferred or self._closed or turn != self._turn:
            return  # flushed or closed meanwhile, or a later deferral's turn
        self._deferred = False
        self._deliver_pending()

    def _deliver_pending(self, *, pausing: bool = True) -> None:
        if self._delivering:
            return  # called from within a delivery: the loop below takes what arrived
        self._delivering = True
        try:
            while not self._closed and not (pausing and self._deferred):
                end = self._next_run_end()
                if not end:
                    break  # nothing whole left
                # Taken out before it is delivered: bytes that arrive during the delivery
                # queue behind the rest, and nothing is delivered twice.
                run, self._pending = self._pending[:end], self._pending[end:]
                self._deliver(run)
        finally:
            self._delivering = False

    def _next_run_end(self) -> int:
        """Where the next run of whole messages ends: after the first message that can move
        an order, or after the last whole message; 0 when there is none."""
        buffer, size, end = self._pending, len(self._pending), 0
        while size - end >= _PREFIX:
            message_end = end + _PREFIX + int.from_bytes(buffer[end : end + _PREFIX], "big")
            if message_end > size:
                break  # a partial message: wait for the rest of it
            head_end = buffer.find(b"\0", end + _PREFIX, message_end)
            message_id = buffer[end + _PREFIX : head_end if head_end >= 0 else message_end]
            end = message_end
            if message_id in ORDER_MESSAGE_IDS:
                break
        return end
