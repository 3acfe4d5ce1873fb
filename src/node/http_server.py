"""Serving an ASGI app with Hypercorn inside the daemon's task group."""

from __future__ import annotations

import ipaddress
import logging

import anyio
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import wrap_app
from starlette.types import ASGIApp


def bind_addresses(host: str, port: int) -> list[str]:
    """The configured address, plus loopback when that is a LAN address (the CLI uses it).

    An unspecified address (0.0.0.0, ::) already covers loopback; binding 127.0.0.1 on
    the same port as well would fail.
    """
    binds = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    if host != "localhost":
        address = ipaddress.ip_address(host)
        if not address.is_loopback and not address.is_unspecified:
            binds.append(f"127.0.0.1:{port}")
    return binds


KEEP_ALIVE_TIMEOUT = 30.0  # seconds an idle keep-alive connection stays open


def hypercorn_config(
    binds: list[str], cert_file: str | None = None, key_file: str | None = None
) -> Config:
    config = Config()
    config.bind = binds
    config.accesslog = None  # the API logs one line per refused request itself
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 2.0
    config.include_server_header = False
    # Longer than the Retry-After of an order refused while the gateway is away (5 s): a
    # client that waits as told and reuses its connection must not meet the server closing
    # it at that very moment (hypercorn's default is exactly 5 s).
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    if cert_file and key_file:
        config.certfile = cert_file
        config.keyfile = key_file
    return config


def bind_sockets(config: Config) -> Sockets:
    """Bind and listen before anything else starts: a taken port is a clear start-up error,
    and a client that connects as soon as the daemon says it is up is queued, not refused."""
    sockets = config.create_sockets()
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
        sock.listen(config.backlog)
    return sockets


async def serve_http(app: ASGIApp, config: Config, sockets: Sockets, stop: anyio.Event) -> None:
    await worker_serve(
        wrap_app(app, config.wsgi_max_body_size, "asgi"),  # type: ignore[arg-type]
        config,
        sockets=sockets,
        shutdown_trigger=stop.wait,
    )
