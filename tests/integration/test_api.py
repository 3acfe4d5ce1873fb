"""The first HTTP surface: real HTTP against a running daemon, and the access rules per route."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from starlette.routing import Route

from node import ctl
from node.api.access import ADMIN_PREFIX, ALLOW_LIST_ONLY, AllowList, networks
from node.api.keys import KeyRing
from support import until

pytestmark = pytest.mark.anyio

KEY = "test-key"
STATE_FIELDS = {
    "state", "since", "reason", "latched", "simulated", "trading_mode", "window", "gateway",
    "heartbeat", "restarts", "gates", "transitions",
}  # fmt: skip


def client(node: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.api_port}", timeout=10)


async def test_state_document_and_probes_over_http(node_factory: Any) -> None:
    node = await node_factory()
    await until(lambda: node.state == "SERVING")
    async with client(node) as http:
        live = await http.get("/livez")
        assert live.status_code == 200
        assert live.headers["x-request-id"]
        assert (await http.get("/readyz")).status_code == 200
        response = await http.get("/v1/state", headers={"Authorization": f"Bearer {KEY}"})
        assert response.status_code == 200
        doc = response.json()
        assert set(doc) == STATE_FIELDS
        assert set(doc["window"]) == {"open", "forced", "next_change", "timezone"}
        assert set(doc["gateway"]) == {"launcher", "host", "port", "pid", "server_version",
                                       "account", "connected_since", "market_data"}  # fmt: skip
        assert set(doc["heartbeat"]) == {"last_ok", "latency_ms", "misses"}
        assert set(doc["restarts"]) == {"used", "limit", "window_s", "next_retry_at", "attempt"}
        assert set(doc["gates"]) == {"orders_enabled", "armed", "live_override", "kill_switch",
                                     "can_place_orders", "blocked_by"}  # fmt: skip
        assert doc["simulated"] is True  # the sim launcher outside --demo
        assert doc["transitions"][0]["to"] == "SERVING"
        by_header = await http.get("/v1/state", headers={"X-API-Key": KEY})
        assert by_header.status_code == 200
        for path in ("/health", "/v1/health"):
            health = await http.get(path, headers={"X-API-Key": KEY})
            assert health.status_code == 200
            assert health.headers["content-type"].startswith("application/health+json")
            assert health.json()["status"] == "pass"


async def test_missing_or_wrong_key_is_a_401_problem(node_factory: Any) -> None:
    node = await node_factory(at="2026-11-22T12:00:00-05:00")  # OFF: Sunday
    async with client(node) as http:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"X-API-Key": "nope"},
                        {"Authorization": "Basic dGVzdA=="}):  # fmt: skip
            response = await http.get("/v1/state", headers=headers)
            assert response.status_code == 401
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["www-authenticate"] == "Bearer"
            body = response.json()
            assert body["type"] == "/problems/unauthorized"
            assert body["request_id"] == response.headers["x-request-id"]
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.headers["retry-after"]
        assert ready.json()["state"] == "OFF"
        health = await http.get("/health", headers={"X-API-Key": KEY})
        assert health.status_code == 503
        assert health.json()["status"] == "fail"
        missing = await http.get("/v1/nothing", headers={"X-API-Key": KEY})
        assert (missing.status_code, missing.json()["type"]) == (404, "/problems/not-found")
        wrong_method = await http.get("/v1/admin/start", headers={"X-API-Key": KEY})
        assert wrong_method.status_code == 405
        assert wrong_method.json()["type"] == "/problems/method-not-allowed"
        unknown = await http.post("/v1/admin/explode", headers={"X-API-Key": KEY})
        assert unknown.status_code == 404


async def test_ctl_and_state_cli_functions(node_factory: Any) -> None:
    # The CLI's HTTP calls block; they run in a thread while the daemon serves in this loop.
    def call(function: Any, *args: Any, **kwargs: Any) -> Any:
        return anyio.to_thread.run_sync(lambda: function(*args, **kwargs))

    node = await node_factory()
    await until(lambda: node.state == "SERVING")
    doc = await call(ctl.get_state, node.settings)
    assert ctl.state_exit_code(doc) == ctl.SERVING
    assert "SERVING" in ctl.describe_state(doc)
    reply = await call(ctl.admin, node.settings, "stop")
    assert reply["result"].startswith("stopped")
    await until(lambda: node.state == "OFF")
    assert ctl.state_exit_code(await call(ctl.get_state, node.settings)) == ctl.NOT_SERVING
    await call(ctl.admin, node.settings, "start", force=True)
    await until(lambda: node.state == "SERVING")
    assert (await call(ctl.get_state, node.settings))["window"]["forced"] is True
    wrong = node.settings.model_copy(update={"API_KEY": "wrong"})
    with pytest.raises(ctl.CtlError, match="refused the API key"):
        await call(ctl.get_state, wrong)
    nobody = node.settings.model_copy(update={"API_PORT": 1})
    with pytest.raises(ctl.CtlError, match="does not answer"):
        await call(ctl.get_state, nobody)


# ---------------------------------------------------------------------- access per route


def every_route(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) the app serves: a new route cannot be forgotten here."""
    found = []
    for route in app.routes:
        assert isinstance(route, Route)
        path = (route.path.replace("{action}", "start").replace("{id}", "01NOSUCHORDER")
                .replace("{cid}", "nope"))  # fmt: skip
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                found.append((method, path))
    return found


@pytest.fixture
async def full_app(node_factory: Any) -> Any:
    """The daemon's real app (every route), reached in process with any peer address."""
    from node.runtime import build_app

    node = await node_factory(at="2026-11-22T12:00:00-05:00")  # OFF: nothing is touched
    await until(lambda: node.daemon.events_handled >= 1)
    allowed = networks(["192.168.1.50"])
    return build_app(node.daemon, KeyRing(KEY, None), lambda: allowed)


def asgi(app: Any, peer: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 51234))
    return httpx.AsyncClient(transport=transport, base_url="http://node")


SAFE = {("POST", "/v1/admin/start"), ("GET", "/v1/events")}  # would change or stream


async def test_every_route_refuses_unlisted_peers_and_missing_keys(full_app: Any) -> None:
    routes = every_route(full_app)
    assert ("POST", "/v1/orders") in routes
    assert ("GET", "/metrics") in routes
    async with asgi(full_app, "10.9.9.9") as outsider, asgi(full_app, "192.168.1.50") as pi:
        for method, path in routes:
            refused = await outsider.request(method, path, headers={"X-API-Key": KEY})
            assert refused.status_code == 403, (method, path)
            assert refused.json()["type"] == "/problems/ip-not-allowed"
            without_key = await pi.request(method, path)
            if path.startswith(ADMIN_PREFIX):
                assert without_key.status_code == 403, (method, path)
                assert without_key.json()["type"] == "/problems/loopback-only"
                with_key = await pi.request(method, path, headers={"X-API-Key": KEY})
                assert with_key.json()["type"] == "/problems/loopback-only"
            elif path in ALLOW_LIST_ONLY:
                assert without_key.status_code in (200, 503), (method, path)
            else:
                assert without_key.status_code == 401, (method, path)
                assert without_key.json()["type"] == "/problems/unauthorized"
                if (method, path) not in SAFE:
                    with_key = await pi.request(method, path, headers={"X-API-Key": KEY})
                    assert with_key.status_code not in (401, 403, 500), (method, path)


@pytest.mark.parametrize("peer", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
async def test_loopback_peers_may_use_admin_with_the_key(full_app: Any, peer: str) -> None:
    async with asgi(full_app, peer) as http:
        refused = await http.post("/v1/admin/release")
        accepted = await http.post("/v1/admin/release", headers={"Authorization": f"Bearer {KEY}"})
    assert refused.status_code == 401
    assert accepted.status_code == 202


async def test_forwarded_for_is_ignored(full_app: Any) -> None:
    async with asgi(full_app, "10.9.9.9") as http:
        response = await http.get("/livez", headers={"X-Forwarded-For": "127.0.0.1"})
    assert response.status_code == 403


async def test_key_rotation_takes_effect_without_restart(tmp_path: Any) -> None:
    key_file = tmp_path / "api_key.txt"
    key_file.write_text("old-key\n", encoding="utf-8")
    ring = KeyRing(None, key_file)
    assert ring.accepts("old-key")
    key_file.write_text("new-key\nold-key\n", encoding="utf-8")
    ring._checked = 0.0  # skip the once-a-second throttle instead of waiting for it
    assert ring.accepts("new-key")
    assert ring.accepts("old-key")  # the previous key stays valid until the next rotation
    key_file.write_text("newest-key\nnew-key\n", encoding="utf-8")
    ring._checked = 0.0
    assert not ring.accepts("old-key")


async def test_every_admin_action_over_http(node_factory: Any, sim_factory: Any) -> None:
    live = await sim_factory(account="U1")  # a live account in paper mode latches
    node = await node_factory(GATEWAY_LAUNCHER="external", PAPER_GATEWAY_PORT=live.port)
    headers = {"X-API-Key": KEY}
    async with client(node) as http:
        await until(lambda: node.daemon.state_document()["latched"] is not None)
        live.engine.account.account_id = "DU1"
        cleared = await http.post("/v1/admin/clear-latch", headers=headers)
        assert cleared.status_code == 202
        await until(lambda: node.state == "SERVING")
        reset = await http.post("/v1/admin/reset-backoff", headers=headers)
        assert reset.json()["result"].startswith("restart budget")
        forced = await http.post("/v1/admin/start?force=true", headers=headers)
        assert forced.json()["result"].startswith("start forced until")
        released = await http.post("/v1/admin/release", headers=headers)
        assert released.json()["result"] == "force released"
        down = await http.post("/v1/admin/shutdown", headers=headers)
        assert down.status_code == 202
        await node.done.wait()


async def test_allow_list_follows_the_env_file(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("PI_IP", raising=False)
    monkeypatch.delenv("ALLOWED_IPS", raising=False)
    env = tmp_path / ".env"
    env.write_text("PI_IP=192.168.1.50\n", encoding="utf-8")
    allow = AllowList(["192.168.1.50"], env)
    assert [str(n) for n in allow()] == ["192.168.1.50/32"]
    env.write_text("PI_IP=192.168.1.51\nALLOWED_IPS=10.0.0.0/24\n", encoding="utf-8")
    allow._checked = 0.0  # skip the once-a-second throttle instead of waiting for it
    assert [str(n) for n in allow()] == ["192.168.1.51/32", "10.0.0.0/24"]
    env.write_text("PI_IP=not-an-address\n", encoding="utf-8")
    allow._checked = 0.0
    assert [str(n) for n in allow()] == ["192.168.1.51/32", "10.0.0.0/24"]  # kept
