"""An OrderProblem as the HTTP response the Pi reads."""

from __future__ import annotations

import json

import pytest
from starlette.requests import Request

from node.api.trading import from_problem
from node.orders import OrderProblem


def request() -> Request:
    return Request({"type": "http", "method": "POST", "path": "/v1/orders", "headers": [],
                    "state": {"request_id": "r-1"}})  # fmt: skip


@pytest.mark.parametrize(
    ("retry_after", "header"), [(0.2, "1"), (1.0, "1"), (1.4, "2"), (59.01, "60")]
)
def test_retry_after_is_rounded_up(retry_after: float, header: str) -> None:
    """A client that waits as told must not come back a moment early, into a second 429."""
    response = from_problem(OrderProblem("rate-limited", 429, "busy", retry_after), request())
    assert response.headers["retry-after"] == header


def test_no_retry_after_for_a_final_refusal() -> None:
    response = from_problem(OrderProblem("not-armed", 403, "disarmed"), request())
    assert "retry-after" not in response.headers
    assert json.loads(response.body)["request_id"] == "r-1"
