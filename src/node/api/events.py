"""GET /v1/events: Server-Sent Events for state and order events.

Event ids are journal sequence numbers, so `Last-Event-ID` replays exactly what a client
missed from the audit journal, then the stream goes live. Keep-alive comments hold idle
connections open through proxies; the stream ends promptly when the daemon shuts down.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from loguru import logger
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from node.api.problems import problem
from node.audit import KIND_ORDER_EVENT, KIND_TRANSITION

KEEPALIVE_SECONDS = 15.0
SUBSCRIBER_BUFFER = 1000  # events queued for one slow client before it is cut off
REPLAY_LIMIT = 1000
# Journal kinds that are SSE events, and the SSE event name each becomes.
STREAMED_KINDS = {KIND_TRANSITION: "state", KIND_ORDER_EVENT: "order"}


@dataclass(frozen=True)
class StreamEvent:
    seq: int
    name: str  # state | order
    data: dict[str, Any]

    def encode(self) -> bytes:
        payload = json.dumps(self.data, separators=(",", ":"), default=str)
        return f"id: {self.seq}\nevent: {self.name}\ndata: {payload}\n\n".encode()


class EventHub:
    """Fans journaled events out to every connected SSE client."""

    def __init__(self) -> None:
        self._subscribers: set[MemoryObjectSendStream[StreamEvent]] = set()
        self.closed = anyio.Event()

    def publish(self, event: StreamEvent) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber.send_nowait(event)
            except anyio.WouldBlock:
                logger.warning("an SSE client fell {} events behind; closing its stream",
                               SUBSCRIBER_BUFFER)  # fmt: skip
                self._drop(subscriber)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._drop(subscriber)

    def subscribe(self) -> MemoryObjectReceiveStream[StreamEvent]:
        send, receive = anyio.create_memory_object_stream[StreamEvent](SUBSCRIBER_BUFFER)
        if self.closed.is_set():
            send.close()
        else:
            self._subscribers.add(send)
        return receive

    def _drop(self, subscriber: MemoryObjectSendStream[StreamEvent]) -> None:
        self._subscribers.discard(subscriber)
        subscriber.close()

    def close(self) -> None:
        """Shutdown: every stream ends after what it already holds."""
        self.closed.set()
        for subscriber in list(self._subscribers):
            self._drop(subscriber)


Replay = Callable[[int, Collection[str], int], Awaitable[list[StreamEvent]]]


def last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise ValueError(f"Last-Event-ID {raw!r} is not an event id (a whole number)")
    return int(raw)


def events_route(hub: EventHub, replay: Replay, *, keepalive: float = KEEPALIVE_SECONDS
                 ) -> Callable[[Request], Awaitable[Response]]:  # fmt: skip
    async def events(request: Request) -> Response:
        try:
            after = last_event_id(request)
        except ValueError as exc:
            request_id = str(request.scope.get("state", {}).get("request_id", ""))
            return problem("malformed-request", 400, str(exc), request_id)
        types = {t.strip() for t in request.query_params.get("types", "").split(",") if t}
        wanted = {k for k, name in STREAMED_KINDS.items() if not types or name in types}
        live = hub.subscribe()  # before the replay, so nothing falls between the two

        async def body() -> AsyncIterator[bytes]:
            yield b"retry: 3000\n\n"
            seen = after or 0
            async with live:
                if after is not None:
                    while True:
                        batch = await replay(seen, wanted, REPLAY_LIMIT)
                        for event in batch:
                            seen = event.seq
                            yield event.encode()
                        if len(batch) < REPLAY_LIMIT:
                            break
                while True:
                    with anyio.move_on_after(keepalive) as idle:
                        try:
                            event = await live.receive()
                        except anyio.EndOfStream:
                            return
                    if idle.cancelled_caught:
                        yield b": keep-alive\n\n"
                        continue
                    if event.seq > seen and (not types or event.name in types):
                        seen = event.seq
                        yield event.encode()

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})  # fmt: skip

    return events


def journal_replay(journal_since: Callable[..., Awaitable[list[Any]]]) -> Replay:
    """Adapt the audit store's journal to SSE events."""

    async def replay(after: int, kinds: Collection[str], limit: int) -> list[StreamEvent]:
        rows = await journal_since(after, kinds=kinds, limit=limit)
        return [StreamEvent(row.seq, STREAMED_KINDS[row.kind], row.data) for row in rows]

    return replay
