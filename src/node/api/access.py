"""Access control as pure ASGI middleware: request id, allow-list on the real peer, then the key.

Order matters (DESIGN.md §6): the allow-list is checked on the socket's peer address
(X-Forwarded-For is ignored); admin routes need a loopback peer before the key is even
looked at; everything but /livez, /readyz and /metrics needs a key.
"""

from __future__ import annotations

import ipaddress
import os
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from dotenv import dotenv_values
from loguru import logger
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from node.api.keys import KeyRing
from node.api.problems import problem

ALLOW_LIST_ONLY = ("/livez", "/readyz", "/metrics")
ADMIN_PREFIX = "/v1/admin/"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def peer_address(scope: Scope) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    client = scope.get("client")
    if not client:
        return None
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def networks(addresses: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(a, strict=False) for a in addresses)


class AllowList:
    """PI_IP and ALLOWED_IPS, re-read when the env file changes (at most once a second), so
    a new allowed address needs no restart. The environment still wins over the file."""

    def __init__(self, addresses: Iterable[str], env_file: Path | None = None) -> None:
        self._networks = networks(addresses)
        self._env_file = env_file
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            stat = self._env_file.stat() if self._env_file else None
        except OSError:
            return None
        return (stat.st_mtime, stat.st_size) if stat else None

    def __call__(self) -> tuple[Network, ...]:
        if self._env_file is not None and time.monotonic() - self._checked >= 1.0:
            self._checked = time.monotonic()
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                self._reload()
        return self._networks

    def _reload(self) -> None:
        assert self._env_file is not None
        values = {**dotenv_values(self._env_file), **os.environ}
        addresses = [values.get("PI_IP") or "", *(values.get("ALLOWED_IPS") or "").split(",")]
        try:
            self._networks = networks(a.strip() for a in addresses if a and a.strip())
        except ValueError as exc:
            logger.error("{} changed but its allow-list is invalid ({}); keeping the previous "
                         "one", self._env_file, exc)  # fmt: skip
            return
        logger.info("{} changed: allow-list is now {}", self._env_file,
                    ", ".join(str(n) for n in self._networks) or "loopback only")  # fmt: skip


def presented_key(headers: Headers) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


class AccessMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        keys: KeyRing,
        allowed: Callable[[], tuple[Network, ...]],
        on_refusal: Callable[[str, str, str], None] = lambda slug, detail, request_id: None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.allowed = allowed
        self.on_refusal = on_refusal  # (slug, detail, request id): the audit journal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        refusal = self._refuse(scope, request_id)
        if refusal is not None:
            await refusal(scope, receive, send_with_id)
            return
        await self.app(scope, receive, send_with_id)

    def _refuse(self, scope: Scope, request_id: str) -> ASGIApp | None:
        path: str = scope["path"]
        peer = peer_address(scope)
        loopback = peer is not None and peer.is_loopback
        if not loopback and not (peer is not None and any(peer in n for n in self.allowed())):
            logger.warning("request {} {} from {} refused: address not allowed",
                           request_id, path, peer)  # fmt: skip
            self.on_refusal("ip-not-allowed", f"{scope['method']} {path} from {peer}", request_id)
            return problem("ip-not-allowed", 403, f"{peer} is not in the allow-list "
                           "(PI_IP, ALLOWED_IPS)", request_id)  # fmt: skip
        if path.startswith(ADMIN_PREFIX) and not loopback:
            logger.warning("request {} {} from {} refused: admin is loopback-only",
                           request_id, path, peer)  # fmt: skip
            self.on_refusal("loopback-only", f"{scope['method']} {path} from {peer}", request_id)
            return problem("loopback-only", 403, "admin actions are taken on the laptop itself "
                           "with `ibkr-node ctl`", request_id)  # fmt: skip
        if path in ALLOW_LIST_ONLY:
            return None
        if not self.keys.accepts(presented_key(Headers(scope=scope))):
            logger.warning("request {} {} from {} refused: missing or wrong API key",
                           request_id, path, peer)  # fmt: skip
            self.on_refusal("unauthorized", f"{scope['method']} {path} from {peer}", request_id)
            return problem("unauthorized", 401, "send the API key as `Authorization: Bearer "
                           "<key>` or `X-API-Key: <key>`", request_id,
                           headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        return None
