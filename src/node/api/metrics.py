"""GET /metrics: Prometheus text format, and the HTTP metrics middleware.

Counters are incremented where things happen (transitions, orders, refusals, reconnects);
the lifecycle gauge and the heartbeat latency are read from the daemon at scrape time so
they can never disagree with /v1/state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATES = ("OFF", "STARTING_GATEWAY", "CONNECTED", "SERVING", "DEGRADED", "BACKOFF")


class NodeMetrics:
    def __init__(self, state: Callable[[], str], heartbeat_ms: Callable[[], float | None]) -> None:
        self.registry = CollectorRegistry()
        self.transitions = Counter("ibkr_node_transitions", "Lifecycle transitions",
                                   ["from_state", "to_state", "trigger"],
                                   registry=self.registry)  # fmt: skip
        self.orders = Counter("ibkr_node_orders", "Order requests by outcome", ["outcome"],
                              registry=self.registry)  # fmt: skip
        self.gate_refusals = Counter("ibkr_node_gate_refusals", "Orders refused by a gate",
                                     ["gate"], registry=self.registry)  # fmt: skip
        self.reconnects = Counter("ibkr_node_reconnects", "Connections to the gateway made",
                                  registry=self.registry)  # fmt: skip
        self.http_requests = Counter(
            "ibkr_node_http_requests",
            "HTTP requests",
            ["route", "method", "code"],
            registry=self.registry,
        )
        self.http_latency = Histogram("ibkr_node_http_request_duration_seconds",
                                      "HTTP request latency", ["route"],
                                      buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                               0.25, 0.5, 1, 2.5, 5, 10),
                                      registry=self.registry)  # fmt: skip
        self.registry.register(_Live(state, heartbeat_ms))

    def render(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class _Live(Collector):
    def __init__(self, state: Callable[[], str], heartbeat_ms: Callable[[], float | None]) -> None:
        self._state = state
        self._heartbeat_ms = heartbeat_ms

    def collect(self) -> Iterator[GaugeMetricFamily]:
        current = self._state()
        family = GaugeMetricFamily(
            "ibkr_node_lifecycle_state", "1 for the current lifecycle state", labels=["state"]
        )
        for state in STATES:
            family.add_metric([state], 1.0 if state == current else 0.0)
        yield family
        latency = self._heartbeat_ms()
        heartbeat = GaugeMetricFamily("ibkr_node_heartbeat_latency_ms",
                                      "Latency of the last answered heartbeat")  # fmt: skip
        heartbeat.add_metric([], latency if latency is not None else float("nan"))
        yield heartbeat


class HttpMetricsMiddleware:
    """Counts and times every request by its route template (never the raw path)."""

    def __init__(self, app: ASGIApp, metrics: NodeMetrics, routes: list[Route]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def _template(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route.path
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = self._template(scope)
            self.metrics.http_requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.http_latency.labels(route).observe(time.perf_counter() - started)
