"""`ibkr-node run`: assemble the daemon from the settings and serve until shutdown."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from loguru import logger
from starlette.routing import Route

from node.api.access import AllowList
from node.api.app import create_app
from node.api.events import events_route, journal_replay
from node.api.keys import KeyRing
from node.api.trading import trading_routes
from node.audit import AuditError, AuditStore
from node.clock import Clock, RealClock, RunWindow, parse_days
from node.config import Settings
from node.daemon import Daemon, install_break_handler
from node.events import Event, Trigger
from node.http_server import bind_addresses, bind_sockets, hypercorn_config, serve_http
from node.lockfile import InstanceLock
from node.plugins.launchers.base import GatewayEndpoint, Launcher
from node.plugins.notifiers.base import Notifier
from node.plugins.registry import launcher_class
from node.signals import on_stop_signals

DEMO_KEY_FILE = "demo_api_key.txt"
ALL_DAYS = "Mon,Tue,Wed,Thu,Fri,Sat,Sun"


class StartupError(Exception):
    """The daemon cannot start; str() is one line telling the operator what to do."""


def demo_settings(settings: Settings) -> Settings:
    """`--demo` overrides only what makes it a demo (DESIGN.md §8)."""
    return settings.model_copy(update={
        "GATEWAY_LAUNCHER": "sim", "TRADING_MODE": "paper", "ORDERS_ENABLED": True,
        "RUN_WINDOW_START": "00:00", "RUN_WINDOW_END": "24:00", "RUN_WINDOW_DAYS": ALL_DAYS,
    })  # fmt: skip


def run_window(settings: Settings) -> RunWindow:
    return RunWindow(
        parse_days(settings.RUN_WINDOW_DAYS),
        settings.window_start,
        settings.window_end,
        settings.window_zone,
    )


def build_launcher(settings: Settings) -> Launcher:
    name = settings.GATEWAY_LAUNCHER
    endpoint = GatewayEndpoint(settings.IBKR_GATEWAY_HOST, settings.gateway_port)
    stop = settings.GATEWAY_STOP_TIMEOUT
    if name == "sim":
        from node.plugins.launchers.sim import SimLauncher

        # The child's lines reach the node's log at DEBUG only; at any other level an INFO
        # simulator would write a line per request and per order change for the node to read
        # and drop, costing both processes CPU on every order.
        return SimLauncher(
            endpoint.host, endpoint.port, settings.sim_control_port,
            settings.STATE_DIR / "sim-state.json", stop_timeout=stop,
            log_level="DEBUG" if settings.LOG_LEVEL == "DEBUG" else "WARNING",
        )  # fmt: skip
    if name == "ibc":
        from node.plugins.launchers.ibc import IbcLauncher

        if settings.IBC_PATH is None or settings.ibc_ini is None:
            raise StartupError("GATEWAY_LAUNCHER=ibc needs IBC_PATH (the IBC folder); "
                               "set it in .env")  # fmt: skip
        return IbcLauncher(
            settings.IBC_PATH, settings.ibc_ini, settings.IBKR_GATEWAY_PATH,
            settings.TRADING_MODE, settings.IBC_COMMAND_PORT, endpoint, stop_timeout=stop,
        )  # fmt: skip
    if name == "exe":
        from node.plugins.launchers.exe import ExeLauncher

        if settings.IBKR_GATEWAY_PATH is None:
            raise StartupError("GATEWAY_LAUNCHER=exe needs IBKR_GATEWAY_PATH (the gateway "
                               "executable); set it in .env")  # fmt: skip
        return ExeLauncher(settings.IBKR_GATEWAY_PATH, endpoint, stop_timeout=stop)
    if name == "external":
        from node.plugins.launchers.external import ExternalLauncher

        return ExternalLauncher(endpoint)
    if name is None:
        raise StartupError("GATEWAY_LAUNCHER is not set: set it to ibc, exe, external or sim "
                           "in .env, or run `ibkr-node run --demo` to try the node on its "
                           "simulated gateway")  # fmt: skip
    plugin: Any = launcher_class(name)
    launcher: Launcher = plugin.from_settings(settings)
    return launcher


def build_notifiers(settings: Settings, clock: Clock) -> list[Notifier]:
    from node.plugins.notifiers.log import LogNotifier
    from node.plugins.notifiers.push import PushNotifier
    from node.plugins.notifiers.webhook import WebhookNotifier

    notifiers: list[Notifier] = [LogNotifier()]
    if settings.NOTIFY_WEBHOOK_URL:
        notifiers.append(WebhookNotifier(settings.NOTIFY_WEBHOOK_URL, clock=clock))
    if settings.NOTIFY_PUSH_URL:
        notifiers.append(PushNotifier(settings.NOTIFY_PUSH_URL, clock=clock))
    return notifiers


def api_keys(settings: Settings, *, demo: bool) -> tuple[KeyRing, str | None]:
    """The key ring, and the demo key when one was generated (to print in the banner)."""
    key_file = settings.API_KEY_FILE
    ring = KeyRing(settings.API_KEY, key_file)
    if not ring.empty:
        return ring, None
    if not demo:
        raise StartupError(f"no API key: run `ibkr-node keygen` (writes {key_file}) or set "
                           "API_KEY; the Pi needs the same key")  # fmt: skip
    demo_file = settings.STATE_DIR / DEMO_KEY_FILE
    if demo_file.exists():
        key = KeyRing.read_file(demo_file)[0]
    else:
        key = secrets.token_urlsafe(32)
        demo_file.parent.mkdir(parents=True, exist_ok=True)
        demo_file.write_text(key + "\n", encoding="utf-8")
        demo_file.chmod(0o600)
    return KeyRing(key, None), key


def build_app(daemon: Daemon, keys: KeyRing, allowed: Callable[[], tuple[Any, ...]]) -> Any:
    from node.api.openapi import openapi_document

    events = events_route(daemon.trading.hub, journal_replay(daemon.store.journal_since))
    return create_app(
        daemon, keys, allowed,
        extra_routes=[*trading_routes(daemon), Route("/v1/events", events)],
        metrics=daemon.metrics, openapi=openapi_document,
        on_refusal=lambda slug, detail, request_id: daemon.trading.journal_later(
            "auth_failure", {"problem": slug, "detail": detail}, request_id),
    )  # fmt: skip


@dataclass
class Running:
    """A daemon being served: what tests and benchmarks reach into."""

    daemon: Daemon
    api_port: int
    demo_key: str | None


async def run_node(
    settings: Settings,
    *,
    demo: bool = False,
    clock: Clock | None = None,
    on_ready: Callable[[Running], None] = lambda running: None,
    notifiers: list[Notifier] | None = None,
    handle_signals: bool = True,
    env_file: Path | None = None,
) -> None:
    """Serve until shutdown. Raises StartupError for what the operator must fix first.

    Tests pass a ManualClock, their own notifiers, and ``handle_signals=False`` (the test
    runner keeps its own Ctrl+C).
    """
    if demo:
        settings = demo_settings(settings)
    clock = clock or RealClock()
    launcher = build_launcher(settings)
    keys, demo_key = api_keys(settings, demo=demo)
    window = run_window(settings)
    settings.STATE_DIR.mkdir(parents=True, exist_ok=True)
    lock = InstanceLock(settings.STATE_DIR)
    try:
        lock.acquire()
    except Exception as exc:  # AlreadyRunning carries the operator-facing text
        raise StartupError(str(exc)) from None
    try:
        if notifiers is None:
            notifiers = build_notifiers(settings, clock)
        binds = bind_addresses(settings.API_BIND_HOST, settings.API_PORT)
        config = hypercorn_config(
            binds,
            str(settings.TLS_CERT_FILE) if settings.TLS_CERT_FILE else None,
            str(settings.TLS_KEY_FILE) if settings.TLS_KEY_FILE else None,
        )
        try:
            sockets = bind_sockets(config)
        except OSError as exc:
            raise StartupError(f"the API cannot listen on {', '.join(binds)}: {exc.strerror}; "
                               "another program (or daemon) holds API_PORT "
                               f"{settings.API_PORT}, or API_BIND_HOST is not an address of "
                               "this machine") from None  # fmt: skip
        try:
            store = await AuditStore.open(settings.audit_db_path,
                                          sync_folder=settings.GDRIVE_BASE_PATH)  # fmt: skip
        except AuditError as exc:
            raise StartupError(f"audit store {settings.audit_db_path}: {exc}") from None
        try:
            daemon = Daemon(settings, clock, launcher, window, notifiers, store=store,
                            armed_by_demo=demo)  # fmt: skip
            app = build_app(daemon, keys, AllowList(settings.allowed_ips, env_file))
            await _serve(daemon, app, config, sockets, binds, demo_key, settings, on_ready,
                         handle_signals)  # fmt: skip
        finally:
            with anyio.CancelScope(shield=True):
                await store.close()  # the daemon closed it already unless start-up failed
    finally:
        lock.release()


async def _serve(
    daemon: Daemon, app: Any, config: Any, sockets: Any, binds: list[str],
    demo_key: str | None, settings: Settings, on_ready: Callable[[Running], None],
    handle_signals: bool,
) -> None:  # fmt: skip
    logger.info("configuration: {}", settings.redacted())
    stop_http = anyio.Event()
    async with anyio.create_task_group() as tg:
        if handle_signals:
            await tg.start(
                on_stop_signals,
                lambda name: daemon.post(Event(Trigger.SHUTDOWN, f"{name} received")),
            )
            install_break_handler(daemon)
        await tg.start(daemon.run)
        async with anyio.create_task_group() as http:
            http.start_soon(serve_http, app, config, sockets, stop_http)
            logger.info("API listening on {}", ", ".join(binds))
            on_ready(Running(daemon, settings.API_PORT, demo_key))
            await daemon.stopped.wait()
            stop_http.set()  # Hypercorn finishes in-flight requests, then returns
        tg.cancel_scope.cancel()


def banner(settings: Settings, key: str | None, demo: bool) -> str:
    lines = []
    if demo:
        lines += [
            "=" * 72,
            "  DEMO: a SIMULATED IB Gateway with FAKE MONEY. Nothing reaches Interactive Brokers.",
            "=" * 72,
        ]
    lines.append(f"ibkr-node API on http://{settings.API_BIND_HOST}:{settings.API_PORT}")
    if key:
        lines.append(f"demo API key: {key}   (also in {settings.STATE_DIR / DEMO_KEY_FILE})")
    return "\n".join(lines)


def demo_key_path(settings: Settings) -> Path:
    return settings.STATE_DIR / DEMO_KEY_FILE
