"""Serving an ASGI app with Hypercorn inside the daemon's task group."""

from __future__ import annotations

import ipaddress
import logging

import anyio
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.types import ASGIApp


def bind_addresses(host: str, port: int) -> list[str]:
    """The configured address, plus loopback when that is a LAN address (the CLI uses it)."""
    binds = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    if host not in ("localhost",) and not ipaddress.ip_address(host).is_loopback:
        binds.append(f"127.0.0.1:{port}")
    return binds


def hypercorn_config(
    binds: list[str], cert_file: str | None = None, key_file: str | None = None
) -> Config:
    config = Config()
    config.bind = binds
    config.accesslog = None  # the API logs one line per refused request itself
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 2.0
    config.include_server_header = False
    if cert_file and key_file:
        config.certfile = cert_file
        config.keyfile = key_file
    return config


async def serve_http(app: ASGIApp, config: Config, stop: anyio.Event) -> None:
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
