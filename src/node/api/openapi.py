"""GET /openapi.json: OpenAPI 3.1 generated from the pydantic models and the route table.

The operations are listed here once, next to the models they take and return; a route the
app serves without an entry here fails start-up, so the document cannot fall behind.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.routing import Route

from node.api import schemas as s

REF = "#/components/schemas/{model}"
PROBLEM = "application/problem+json"


class HealthDocument(BaseModel):
    status: str
    description: str
    checks: dict[str, Any]


class AdminResult(BaseModel):
    action: str
    result: str
    state: str


class CancelAll(BaseModel):
    items: list[s.CancelResult]


class Probe(BaseModel):
    status: str
    state: str


# (method, path) -> (summary, access, request model, {status: (description, model | None)})
Operation = tuple[str, str, type[BaseModel] | None, dict[int, tuple[str, type[BaseModel] | None]]]
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/livez"): ("The process is alive (every state)", "allow-list", None,
                        {200: ("alive", Probe)}),
    ("GET", "/readyz"): ("Ready to trade: 200 only in SERVING", "allow-list", None,
                         {200: ("serving", Probe), 503: ("not serving", None)}),
    ("GET", "/health"): ("Health (the Pi's check)", "key", None,
                         {200: ("pass or warn", HealthDocument),
                          503: ("fail", HealthDocument)}),
    ("GET", "/v1/health"): ("Health", "key", None,
                            {200: ("pass or warn", HealthDocument),
                             503: ("fail", HealthDocument)}),
    ("GET", "/v1/state"): ("The state document", "key", None,
                           {200: ("the state", s.StateDocument)}),
    ("POST", "/v1/admin/{action}"): ("An operator command (loopback peers only)", "admin", None,
                                     {202: ("accepted", AdminResult), 404: ("no such action",
                                                                            None)}),
    ("POST", "/v1/orders"): ("Place an order behind the safety gates", "key", s.OrderRequest,
                             {201: ("placed; IB's first report or pending_new", s.Order),
                              200: ("a replay of an accepted client_order_id", s.Order),
                              400: ("malformed", None), 403: ("refused by a gate", None),
                              409: ("the same client_order_id is in flight", None),
                              413: ("body too large", None), 415: ("not JSON", None),
                              422: ("invalid", None), 429: ("rate limited", None),
                              503: ("not serving, or the audit trail is unavailable", None)}),
    ("GET", "/v1/orders"): ("List orders (?status=open|closed|all, symbols, after, until, "
                            "limit)", "key", None, {200: ("orders", s.OrderList),
                                                    422: ("bad filter", None)}),
    ("DELETE", "/v1/orders"): ("Cancel every open order of the node", "key", None,
                               {207: ("one result per order", CancelAll),
                                503: ("gateway not connected", None)}),
    ("POST", "/v1/orders/preview"): ("IB what-if and a dry run of the gates", "key",
                                     s.OrderRequest, {200: ("the preview", s.Preview),
                                                      400: ("malformed", None),
                                                      413: ("body too large", None),
                                                      415: ("not JSON", None),
                                                      422: ("invalid", None),
                                                      503: ("not serving", None)}),
    ("GET", "/v1/orders/by-client-id/{cid}"): ("An order by its client_order_id", "key", None,
                                               {200: ("the order", s.Order),
                                                404: ("never accepted", None)}),
    ("GET", "/v1/orders/{id}"): ("An order by its id", "key", None,
                                 {200: ("the order", s.Order), 404: ("no such order", None)}),
    ("DELETE", "/v1/orders/{id}"): ("Cancel an order", "key", None,
                                    {202: ("pending_cancel", s.Order), 404: ("no such order", None),
                                     409: ("already finished", None),
                                     503: ("gateway not connected", None)}),
    ("POST", "/v1/kill"): ("Latch the kill switch and cancel open orders (?scope=account)",
                           "key", None, {202: ("latched", s.KillResult),
                                         422: ("unknown scope", None)}),
    ("GET", "/v1/account"): ("Account values", "key", None,
                             {200: ("the account", s.Account), 503: ("not serving", None)}),
    ("GET", "/v1/positions"): ("Positions", "key", None,
                               {200: ("positions", s.PositionList), 503: ("not serving", None)}),
    ("GET", "/v1/quotes"): ("Quote snapshots (?symbols=AAPL,MSFT)", "key", None,
                            {200: ("quotes", s.QuoteList), 422: ("bad or unknown symbols", None),
                             503: ("not serving", None)}),
    ("GET", "/v1/events"): ("Server-Sent Events: state and order events (Last-Event-ID "
                            "replays)", "key", None, {200: ("text/event-stream", None)}),
    ("GET", "/metrics"): ("Prometheus metrics", "allow-list", None, {200: ("text", None)}),
    ("GET", "/openapi.json"): ("This document", "key", None, {200: ("OpenAPI 3.1", None)}),
}  # fmt: skip


def _query(name: str, description: str, required: bool = False, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": {"type": "string", **schema}}  # fmt: skip


QUERY: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("GET", "/v1/orders"): [
        _query("status", "open (default), closed or all", enum=["open", "closed", "all"]),
        _query("symbols", "comma-separated symbols"),
        _query("after", "RFC 3339 time, exclusive", format="date-time"),
        _query("until", "RFC 3339 time, exclusive", format="date-time"),
        _query("limit", "1 to 500 (default 50)", pattern="^[0-9]+$"),
    ],
    ("GET", "/v1/quotes"): [_query("symbols", "comma-separated symbols (at most 20)", True)],
    ("POST", "/v1/kill"): [_query("scope", "node (default) or account",
                                  enum=["node", "account"])],
    ("POST", "/v1/admin/{action}"): [_query("force", "with start: hold the window open")],
}  # fmt: skip


def openapi_document(routes: list[Route]) -> dict[str, Any]:
    models: set[type[BaseModel]] = {s.Problem}
    for _, _, request, responses in OPERATIONS.values():
        if request is not None:
            models.add(request)
        models.update(model for _, model in responses.values() if model is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    refs, schema = models_json_schema(
        [(m, "validation" if m is s.OrderRequest else "serialization") for m in ordered],
        ref_template=REF,
    )
    # pydantic names a model used both ways "X-Input"/"X-Output": take its own references.
    names = {model: refs[(model, "validation" if model is s.OrderRequest else "serialization")]
             for model in ordered}  # fmt: skip
    paths: dict[str, dict[str, Any]] = {}
    served = {(method, route.path) for route in routes for method in (route.methods or ())
              if method != "HEAD"}  # fmt: skip
    served.add(("GET", "/openapi.json"))
    missing = served - set(OPERATIONS)
    if missing:
        raise RuntimeError(f"routes without an OpenAPI entry: {sorted(missing)}")
    for method, path in sorted(served):
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, names)
    return {
        "openapi": "3.1.0",
        "info": {"title": "ibkr-node", "version": "1",
                 "description": "The execution node's LAN API: orders behind safety gates."},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }  # fmt: skip


def _operation(method: str, path: str, names: dict[type[BaseModel], Any]) -> dict[str, Any]:
    summary, access, request, responses = OPERATIONS[(method, path)]
    slug = path.strip("/")
    for old, new in (("/", "_"), ("{", ""), ("}", ""), (".", "_"), ("-", "_")):
        slug = slug.replace(old, new)
    operation: dict[str, Any] = {
        "summary": summary,
        "operationId": f"{method.lower()}_{slug}",
        "responses": {},
    }
    if access != "allow-list":
        operation["security"] = [{"bearer": []}, {"apiKey": []}]
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in ("action", "cid", "id") if "{" + name + "}" in path
    ]  # fmt: skip
    parameters += QUERY.get((method, path), [])
    if parameters:
        operation["parameters"] = parameters
    if request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": dict(names[request])}},
        }
    for status, (description, model) in responses.items():
        if model is HealthDocument:
            content = {"application/health+json": {"schema": dict(names[model])}}
        elif model is not None:
            content = {"application/json": {"schema": dict(names[model])}}
        elif status >= 400:
            content = {PROBLEM: {"schema": dict(names[s.Problem])}}
        else:
            content = {}
        operation["responses"][str(status)] = {
            "description": description,
            **({"content": content} if content else {}),
        }
    if access != "allow-list":
        operation["responses"].setdefault("401", {
            "description": "missing or wrong API key",
            "content": {PROBLEM: {"schema": dict(names[s.Problem])}},
        })  # fmt: skip
    return operation
