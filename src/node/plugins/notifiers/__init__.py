"""Built-in notifiers (DESIGN.md §4): log (default), webhook, push."""

from __future__ import annotations

from node.plugins.notifiers.base import Notice, Notifier, redact_url
from node.plugins.notifiers.log import LogNotifier
from node.plugins.notifiers.push import PushNotifier
from node.plugins.notifiers.webhook import WebhookNotifier

__all__ = [
    "BUILTIN_NOTIFIERS",
    "LogNotifier",
    "Notice",
    "Notifier",
    "PushNotifier",
    "WebhookNotifier",
    "redact_url",
]

BUILTIN_NOTIFIERS: dict[str, type[Notifier]] = {
    "log": LogNotifier,
    "webhook": WebhookNotifier,
    "push": PushNotifier,
}
