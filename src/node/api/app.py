"""Routes: liveness, readiness, health, the state document and the operator's admin actions."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from node.api.access import AccessMiddleware, Network
from node.api.keys import KeyRing
from node.api.metrics import HttpMetricsMiddleware, NodeMetrics
from node.api.problems import problem
from node.logs import log_folder

ADMIN_ACTIONS = (
    "start", "stop", "release", "reset-backoff", "clear-latch", "clear-kill", "shutdown",
)  # fmt: skip
RETRY_AFTER = "5"


class NodeControl(Protocol):
    """What the API may do with the daemon: read its status, post operator commands."""

    @property
    def state(self) -> str: ...

    def state_document(self) -> dict[str, Any]: ...

    def command(self, action: str, *, force: bool = False) -> str: ...


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def create_app(
    node: NodeControl,
    keys: KeyRing,
    allowed: Callable[[], tuple[Network, ...]],
    *,
    extra_routes: Sequence[Route] = (),
    metrics: NodeMetrics | None = None,
    openapi: Callable[[list[Route]], dict[str, Any]] | None = None,
    on_refusal: Callable[[str, str, str], None] = lambda slug, detail, request_id: None,
) -> Starlette:
    async def livez(request: Request) -> Response:
        return JSONResponse({"status": "alive", "state": node.state})

    async def readyz(request: Request) -> Response:
        if node.state == "SERVING":
            return JSONResponse({"status": "ready", "state": node.state})
        return problem("not-ready", 503, f"state is {node.state}", request_id(request),
                       headers={"Retry-After": RETRY_AFTER}, state=node.state)  # fmt: skip

    async def health(request: Request) -> Response:
        document = node.state_document()
        state = document["state"]
        status = {"SERVING": "pass", "DEGRADED": "warn"}.get(state, "fail")
        body = {
            "status": status,
            "description": f"ibkr-node: {state} ({document['reason']})",
            "checks": {
                "lifecycle:state": [{"observedValue": state, "status": status,
                                     "time": document["since"]}],
                "gateway:market_data": [{"observedValue": document["gateway"]["market_data"],
                                         "status": status}],
                "heartbeat:latency": [{"observedValue": document["heartbeat"]["latency_ms"],
                                       "observedUnit": "ms", "status": status}],
            },
        }  # fmt: skip
        logs = log_folder()
        if logs.wanted is not None:
            body["checks"]["logs:folder"] = [{  # type: ignore[index]
                "observedValue": str(logs.used) if logs.used else None,
                "status": "warn" if logs.fell_back else "pass",
                **({"output": f"cannot write to {logs.wanted}; logging to "
                              f"{logs.used or 'the console only'}"} if logs.fell_back else {}),
            }]  # fmt: skip
        return Response(json.dumps(body), status_code=503 if status == "fail" else 200,
                        media_type="application/health+json")  # fmt: skip

    async def state(request: Request) -> Response:
        return JSONResponse(node.state_document())

    async def admin(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ADMIN_ACTIONS:
            return problem("not-found", 404, f"no admin action {action!r}; known: "
                           f"{', '.join(ADMIN_ACTIONS)}", request_id(request))  # fmt: skip
        force = request.query_params.get("force", "").lower() in ("1", "true", "yes")
        message = node.command(action, force=force)
        return JSONResponse({"action": action, "result": message, "state": node.state},
                            status_code=202)  # fmt: skip

    async def server_error(request: Request, exc: Exception) -> Response:
        # Never a stack trace to the client; the log has it with the request id.
        from loguru import logger

        logger.opt(exception=exc).error("request {} {} failed", request_id(request),
                                        request.url.path)  # fmt: skip
        return problem("internal-error", 500, "the node failed to answer; the log has the "
                       f"details under request id {request_id(request)}",
                       request_id(request))  # fmt: skip

    async def not_found(request: Request, exc: Exception) -> Response:
        return problem("not-found", 404, f"no route {request.url.path}", request_id(request))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            return problem("method-not-allowed", 405, f"{request.method} is not allowed on "
                           f"{request.url.path}", request_id(request),
                           headers=dict(exc.headers or {}))  # fmt: skip
        return problem("not-found" if exc.status_code == 404 else "malformed-request",
                       exc.status_code, str(exc.detail), request_id(request))  # fmt: skip

    routes = [
        Route("/livez", livez),
        Route("/readyz", readyz),
        Route("/health", health),
        Route("/v1/health", health),
        Route("/v1/state", state),
        Route("/v1/admin/{action}", admin, methods=["POST"]),
        *extra_routes,
    ]
    if metrics is not None:
        routes.append(Route("/metrics", metrics.render))
    if openapi is not None:
        document = openapi(list(routes))

        async def openapi_json(request: Request) -> Response:
            return JSONResponse(document)

        routes.append(Route("/openapi.json", openapi_json))
    middleware = [Middleware(AccessMiddleware, keys=keys, allowed=allowed, on_refusal=on_refusal)]
    if metrics is not None:
        # Outermost, so refused requests are counted too.
        middleware.insert(0, Middleware(HttpMetricsMiddleware, metrics=metrics, routes=routes))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={404: not_found, HTTPException: http_error, 500: server_error},
    )
