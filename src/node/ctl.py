"""The laptop's side of the API: `ibkr-node state` and `ibkr-node ctl`, always over 127.0.0.1."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Any

import httpx

from node.api.keys import KeyRing
from node.config import Settings

TIMEOUT = 10.0
# `ibkr-node state` exit codes (scripts such as healthcheck.ps1 rely on them)
SERVING, NOT_SERVING, UNREACHABLE = 0, 1, 2


class CtlError(Exception):
    """The daemon could not be reached or refused; str() says what to do."""


def local_key(settings: Settings) -> str | None:
    if settings.API_KEY:
        return settings.API_KEY
    from node.runtime import demo_key_path  # the daemon's imports: only when asked

    for path in (settings.API_KEY_FILE, demo_key_path(settings)):
        try:
            keys = KeyRing.read_file(path)
        except OSError:
            continue
        if keys:
            return keys[0]
    return None


def _call(settings: Settings, method: str, path: str, **params: str) -> dict[str, Any]:
    key = local_key(settings)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    scheme = "https" if settings.TLS_CERT_FILE else "http"
    url = f"{scheme}://127.0.0.1:{settings.API_PORT}{path}"
    try:
        # A pinned or self-signed certificate is for the Pi; on loopback the peer is us.
        response = httpx.request(method, url, headers=headers, params=params, timeout=TIMEOUT,
                                 verify=False)  # fmt: skip
    except httpx.HTTPError as exc:
        raise CtlError(f"the daemon does not answer on 127.0.0.1:{settings.API_PORT} ({exc}); "
                       "is `ibkr-node run` running?") from None  # fmt: skip
    if response.status_code == 401:
        raise CtlError("the daemon refused the API key: check API_KEY / API_KEY_FILE")
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        raise CtlError(f"unexpected answer ({response.status_code}) from the daemon") from None
    if response.status_code >= 400:
        raise CtlError(str(body.get("detail") or body))
    return body


def get_state(settings: Settings) -> dict[str, Any]:
    return _call(settings, "GET", "/v1/state")


def admin(settings: Settings, action: str, force: bool = False) -> dict[str, Any]:
    params = {"force": "true"} if force else {}
    return _call(settings, "POST", f"/v1/admin/{action}", **params)


def describe_state(doc: dict[str, Any]) -> str:
    """The state document for a person."""
    window, gateway, heartbeat = doc["window"], doc["gateway"], doc["heartbeat"]
    restarts, gates = doc["restarts"], doc["gates"]
    lines = [
        f"state      {doc['state']} since {doc['since']} ({doc['reason']})",
    ]
    if doc.get("latched"):
        lines.append(f"LATCHED    {doc['latched']}  -> `ibkr-node ctl clear-latch`")
    lines += [
        f"mode       {doc['trading_mode']}{' (simulated gateway)' if doc['simulated'] else ''}",
        f"window     {'open' if window['open'] else 'closed'}"
        f"{' (forced)' if window['forced'] else ''}, next change {window['next_change']} "
        f"({window['timezone']})",
        f"gateway    {gateway['launcher']} {gateway['host']}:{gateway['port']} pid "
        f"{gateway['pid']} account {gateway['account']} server v{gateway['server_version']} "
        f"market data {gateway['market_data']}",
        f"heartbeat  last ok {heartbeat['last_ok']}, {heartbeat['latency_ms']} ms, "
        f"{heartbeat['misses']} missed",
        f"restarts   {restarts['used']}/{restarts['limit']} in the last hour, attempt "
        f"{restarts['attempt']}, next retry {restarts['next_retry_at']}",
        f"orders     {'can be placed' if gates['can_place_orders'] else 'blocked'}"
        f"{': ' + ', '.join(gates['blocked_by']) if gates['blocked_by'] else ''}",
    ]
    for t in doc["transitions"][:5]:
        lines.append(f"  {t['at']}  {t['from']} -> {t['to']} on {t['trigger']}: {t['reason']}")
    return "\n".join(lines)


def state_exit_code(doc: dict[str, Any]) -> int:
    return SERVING if doc.get("state") == "SERVING" else NOT_SERVING


def keygen(path: Path, *, rotate: bool) -> str:
    """Write a new key; with rotate the current one stays valid as the previous key.

    The file holds at most two keys (DESIGN.md §6): the new one on line 1, the one it replaces
    on line 2; an older previous key is dropped. Owner-only (0600) from creation on POSIX.
    """
    from node.atomic import write_text_atomic

    previous: list[str] = []
    if path.exists():
        try:
            current = KeyRing.read_file(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise CtlError(f"{path} cannot be read ({exc}); move it aside or fix its "
                           "permissions") from None  # fmt: skip
        if current and not rotate:
            raise CtlError(
                f"{path} already holds a key; use `ibkr-node keygen --rotate` to "
                "replace it (the old key stays valid until the next rotation)"
            )
        previous = current[:1]
    key = secrets.token_urlsafe(32)
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        if sys.platform != "win32":
            path.parent.chmod(0o700)  # a new secrets/ folder: the owner's only
    write_text_atomic(path, "\n".join([key, *previous]) + "\n", mode=0o600)
    return key


def set_armed(path: Path, armed: bool) -> str:
    """The arm file is the laptop's consent: created and removed only here, never by the API."""
    if armed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("armed by `ibkr-node ctl arm`\n", encoding="utf-8")
        return f"armed: {path} created (orders still need ORDERS_ENABLED and the other gates)"
    path.unlink(missing_ok=True)
    return f"disarmed: {path} removed"


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2)
