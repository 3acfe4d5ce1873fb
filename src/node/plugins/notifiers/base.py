"""What a notifier receives and what it must offer (DESIGN.md §4).

Notifiers are the node's voice when nobody is watching, so none of them may take the daemon down:
`notify` never raises (failures are logged), and a slow receiver only delays its own task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "BUDGET_EXHAUSTED",
    "ENTERED_BACKOFF",
    "ENTERED_DEGRADED",
    "KILL_SWITCH",
    "NEEDS_HUMAN",
    "ORDER_REJECTED",
    "RECOVERED",
    "RECOVERY_KINDS",
    "Notice",
    "Notifier",
    "redact_url",
    "scrub_url",
]

ENTERED_DEGRADED = "entered_degraded"
ENTERED_BACKOFF = "entered_backoff"
NEEDS_HUMAN = "needs_human"
KILL_SWITCH = "kill_switch"
ORDER_REJECTED = "order_rejected"
RECOVERED = "recovered"
BUDGET_EXHAUSTED = "budget_exhausted"

# Every other kind is a problem; listing the good news keeps an unforeseen kind loud.
RECOVERY_KINDS = frozenset({RECOVERED})


@dataclass(frozen=True)
class Notice:
    kind: str
    message: str
    state: str
    at: datetime
    details: dict[str, str] = field(default_factory=dict)

    @property
    def is_problem(self) -> bool:
        return self.kind not in RECOVERY_KINDS

    def to_json(self) -> dict[str, Any]:
        return {
            "source": "ibkr-node",
            "kind": self.kind,
            "message": self.message,
            "state": self.state,
            "at": self.at.isoformat(),
            "details": dict(self.details),
        }


@runtime_checkable
class Notifier(Protocol):
    """A destination for notices.

    The daemon runs every notifier's `run` in its task group for the node's lifetime, passing a
    callable that returns the current lifecycle state name ("SERVING", ...). Notifiers that need
    no background work return from `run` at once; a returned `run` is not an error.
    """

    name: str

    async def notify(self, notice: Notice) -> None:
        """Deliver one notice; must never raise (cancellation aside)."""
        ...

    async def run(self, status: Callable[[], str]) -> None: ...

    async def aclose(self) -> None: ...


def redact_url(url: str) -> str:
    """Scheme, host and port only, for logs.

    Webhook and ping tokens live in the query (`?token=`) and just as often in the path (Slack's
    /services/T../B../secret, healthchecks' /ping/<uuid>), so neither is ever logged.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
    except ValueError:
        return "<unparseable url>"
    return urlunsplit((parts.scheme, netloc, "", "", ""))


def scrub_url(text: str, url: str) -> str:
    """`text` (an exception message, say) with every secret-bearing part of `url` masked."""
    text = text.replace(url, redact_url(url))
    try:
        parts = urlsplit(url)
        secrets = [parts.query, parts.fragment, parts.path, parts.username, parts.password]
    except ValueError:
        return text
    # Longest first, so a query is masked whole before a shorter part could split it.
    for secret in sorted((s for s in secrets if s and len(s) > 1), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
