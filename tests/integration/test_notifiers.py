"""Notifiers against a real HTTP server on loopback; time driven by a ManualClock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio
import httpx
import pytest
from anyio.abc import SocketStream, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream
from loguru import logger

from node.clock import ManualClock
from node.plugins.notifiers import (
    BUILTIN_NOTIFIERS,
    LogNotifier,
    Notice,
    Notifier,
    PushNotifier,
    WebhookNotifier,
    redact_url,
)
from node.plugins.notifiers.base import scrub_url

pytestmark = pytest.mark.anyio

WAIT = 10  # generous: only a broken notifier ever gets near it
T0 = datetime(2024, 3, 4, 14, 0, tzinfo=UTC)
TOKEN = "s3cret-token"


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpServer:
    """Answers each request with the next queued status (then `default`) and records it."""

    port: int = 0
    default: int = 200
    statuses: list[int] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    _arrived: anyio.Event = field(default_factory=anyio.Event)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def wait_for_requests(self, count: int) -> list[Request]:
        with anyio.fail_after(WAIT):
            while len(self.requests) < count:
                self._arrived = anyio.Event()
                await self._arrived.wait()
        return self.requests

    async def handle(self, stream: SocketStream) -> None:
        async with stream:
            reader = BufferedByteReceiveStream(stream)
            while True:
                try:
                    head = await reader.receive_until(b"\r\n\r\n", 65536)
                except (anyio.IncompleteRead, anyio.EndOfStream):
                    return
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.receive_exactly(length) if length else b""
                self.requests.append(Request(method, target, headers, body))
                self._arrived.set()
                status = self.statuses.pop(0) if self.statuses else self.default
                await stream.send(
                    f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode("latin-1")
                )


@pytest.fixture
async def task_group() -> AsyncIterator[TaskGroup]:
    async with anyio.create_task_group() as tg:
        yield tg
        tg.cancel_scope.cancel()


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        http = HttpServer(port=listener.extra(anyio.abc.SocketAttribute.local_port))
        tg.start_soon(listener.serve, http.handle)
        yield http
        tg.cancel_scope.cancel()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # trust_env off: a proxy configured in the environment must not see loopback traffic.
    async with httpx.AsyncClient(trust_env=False) as http_client:
        yield http_client


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{level} {message}")
    yield lines
    logger.remove(sink)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def notice(kind: str = "entered_degraded", **details: str) -> Notice:
    return Notice(
        kind=kind,
        message="heartbeat lost twice",
        state="DEGRADED",
        at=T0,
        details=dict(details),
    )


async def closed_port() -> int:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port: int = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    return port


# -- webhook -----------------------------------------------------------------------------------


async def test_webhook_posts_the_notice_as_json(
    server: HttpServer, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    webhook = WebhookNotifier(server.url(), client=client, clock=clock)
    await webhook.notify(notice(reason="heartbeat"))
    (request,) = await server.wait_for_requests(1)
    assert request.method == "POST"
    assert request.target == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {
        "source": "ibkr-node",
        "kind": "entered_degraded",
        "message": "heartbeat lost twice",
        "state": "DEGRADED",
        "at": "2024-03-04T14:00:00+00:00",
        "details": {"reason": "heartbeat"},
    }


async def test_webhook_retries_after_a_500_through_the_clock(
    server: HttpServer, client: httpx.AsyncClient, clock: ManualClock, task_group: TaskGroup
) -> None:
    server.statuses = [500, 503]
    webhook = WebhookNotifier(server.url(), client=client, retries=3, clock=clock, retry_delay=2)
    done = anyio.Event()

    async def deliver() -> None:
        await webhook.notify(notice())
        done.set()

    task_group.start_soon(deliver)
    with anyio.fail_after(WAIT):
        await clock.wait_for_sleepers()
        assert len(server.requests) == 1
        clock.advance(2)
        await clock.wait_for_sleepers()
        assert len(server.requests) == 2
        assert clock.next_deadline == T0.replace(second=6)  # the wait doubled: 2 s, then 4 s
        clock.advance(4)
        await done.wait()
    assert len(server.requests) == 3
    assert [json.loads(r.body)["kind"] for r in server.requests] == ["entered_degraded"] * 3


async def test_webhook_gives_up_after_its_retries(
    server: HttpServer, client: httpx.AsyncClient, clock: ManualClock, log_lines: list[str]
) -> None:
    server.default = 500
    # A zero delay is a due deadline on the ManualClock: no advancing needed.
    webhook = WebhookNotifier(server.url(), client=client, retries=2, clock=clock, retry_delay=0)
    with anyio.fail_after(WAIT):
        await webhook.notify(notice())
    assert len(server.requests) == 3  # the first attempt and two retries
    assert any("WARNING" in line and "giving up" in line for line in log_lines)


async def test_webhook_does_not_retry_a_refusal(
    server: HttpServer, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    server.default = 400
    webhook = WebhookNotifier(server.url(), client=client, retries=3, clock=clock, retry_delay=0)
    with anyio.fail_after(WAIT):
        await webhook.notify(notice())
    assert len(server.requests) == 1


async def test_webhook_to_a_dead_url_never_raises_nor_logs_the_token(
    client: httpx.AsyncClient, clock: ManualClock, log_lines: list[str]
) -> None:
    port = await closed_port()
    url = f"http://127.0.0.1:{port}/hooks/{TOKEN}?token={TOKEN}"
    webhook = WebhookNotifier(url, client=client, retries=2, clock=clock, retry_delay=0)
    with anyio.fail_after(WAIT):
        await webhook.notify(notice())
    assert any("not delivered" in line for line in log_lines)
    assert f"127.0.0.1:{port}" in "\n".join(log_lines)
    assert all(TOKEN not in line for line in log_lines)


async def test_webhook_with_its_own_client_and_a_bad_url_never_raises(
    clock: ManualClock, log_lines: list[str]
) -> None:
    webhook = WebhookNotifier(f"ftp://example.invalid/?token={TOKEN}", clock=clock, retry_delay=0)
    try:
        with anyio.fail_after(WAIT):
            await webhook.notify(notice())
    finally:
        await webhook.aclose()
    assert all(TOKEN not in line for line in log_lines)


# -- push --------------------------------------------------------------------------------------


async def test_push_pings_only_while_serving(
    server: HttpServer, client: httpx.AsyncClient, clock: ManualClock, task_group: TaskGroup
) -> None:
    status = "SERVING"
    push = PushNotifier(server.url("/ping/abc"), clock=clock, interval=60, client=client)
    task_group.start_soon(push.run, lambda: status)

    with anyio.fail_after(WAIT):
        await server.wait_for_requests(1)  # the first ping goes out at once
        await clock.wait_for_sleepers()
        clock.advance(60)
        await server.wait_for_requests(2)
        await clock.wait_for_sleepers()

        status = "DEGRADED"
        for _ in range(3):
            clock.advance(60)
            # Back asleep means the loop looked at the status and went round once more.
            await clock.wait_for_sleepers()
        assert len(server.requests) == 2

        status = "SERVING"
        clock.advance(60)
        await server.wait_for_requests(3)
    assert [(r.method, r.target) for r in server.requests] == [("GET", "/ping/abc")] * 3


async def test_push_survives_a_dead_monitor_and_warns_once(
    client: httpx.AsyncClient, clock: ManualClock, task_group: TaskGroup, log_lines: list[str]
) -> None:
    port = await closed_port()
    push = PushNotifier(
        f"http://127.0.0.1:{port}/ping/{TOKEN}", clock=clock, interval=60, client=client
    )
    task_group.start_soon(push.run, lambda: "SERVING")
    with anyio.fail_after(WAIT):
        for _ in range(3):
            await clock.wait_for_sleepers()
            clock.advance(60)
        await clock.wait_for_sleepers()
    failures = [line for line in log_lines if "ping failed" in line]
    assert len(failures) >= 3
    assert [line.split()[0] for line in failures].count("WARNING") == 1
    assert all(TOKEN not in line for line in log_lines)


async def test_push_ignores_notices(client: httpx.AsyncClient, clock: ManualClock) -> None:
    push = PushNotifier("http://127.0.0.1:9/ping", clock=clock, client=client)
    await push.notify(notice())
    await push.aclose()  # a borrowed client stays open
    assert not client.is_closed


# -- log and the registry ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "level"),
    [
        ("entered_degraded", "WARNING"),
        ("entered_backoff", "WARNING"),
        ("needs_human", "WARNING"),
        ("kill_switch", "WARNING"),
        ("order_rejected", "WARNING"),
        ("budget_exhausted", "WARNING"),
        ("something_new", "WARNING"),
        ("recovered", "INFO"),
    ],
)
async def test_log_notifier_levels(kind: str, level: str, log_lines: list[str]) -> None:
    log = LogNotifier()
    await log.notify(notice(kind, reason="x"))
    with anyio.fail_after(WAIT):
        await log.run(lambda: "SERVING")  # nothing to run in the background: returns at once
    await log.aclose()
    (line,) = log_lines
    assert line.startswith(level)
    assert kind in line
    assert "reason=x" in line


async def test_builtin_notifiers_follow_the_protocol(clock: ManualClock) -> None:
    assert set(BUILTIN_NOTIFIERS) == {"log", "webhook", "push"}
    made: list[Notifier] = [
        LogNotifier(),
        WebhookNotifier("http://127.0.0.1:9/", clock=clock),
        PushNotifier("http://127.0.0.1:9/", clock=clock),
    ]
    for name, notifier in zip(["log", "webhook", "push"], made, strict=True):
        assert isinstance(notifier, Notifier)
        assert isinstance(notifier, BUILTIN_NOTIFIERS[name])
        assert notifier.name == name
        await notifier.aclose()


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://hooks.slack.com/services/T0/B0/secret", "https://hooks.slack.com"),
        ("https://hc-ping.com/uuid-here?x=1", "https://hc-ping.com"),
        ("http://user:pw@10.0.0.5:8080/hook?token=abc#frag", "http://10.0.0.5:8080"),
        ("http://[::1]:9000/p", "http://[::1]:9000"),
    ],
)
def test_redact_url(url: str, safe: str) -> None:
    assert redact_url(url) == safe


def test_scrub_url_masks_every_secret_part() -> None:
    url = f"https://bob:{TOKEN}@hooks.example/services/{TOKEN}?token={TOKEN}"
    text = f"ConnectError for {url} (path /services/{TOKEN}, query token={TOKEN})"
    scrubbed = scrub_url(text, url)
    assert TOKEN not in scrubbed
    assert "https://hooks.example" in scrubbed
