"""GET /openapi.json against a running daemon: the document itself, then schemathesis over HTTP.

The document must be OpenAPI 3.1, list every route the app serves (and nothing it does not),
resolve every `$ref` and validate against the OpenAPI 3.1 meta-schema, its Schema Objects
against JSON Schema 2020-12.

The fuzz run sends schemathesis' generated requests, valid and invalid, to a daemon of its own
over real HTTP on 127.0.0.1 with the key on every request, and fails on any answer >= 500, any
request the node does not answer within REQUEST_TIMEOUT, and any dropped connection.
"""

from __future__ import annotations

import copy
import itertools
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import jsonschema_rs  # schemathesis' own JSON Schema engine: no new dependency
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup

from node.api.app import ADMIN_ACTIONS
from node.api.keys import KeyRing
from node.sim.universe import UNIVERSE
from support import until

pytestmark = pytest.mark.anyio

KEY = "test-key"
# Both ways of presenting the key: explicit headers also replace whatever credentials
# schemathesis generates from the security schemes.
HEADERS = {"Authorization": f"Bearer {KEY}", "X-API-Key": KEY}
SCHEMAS = "#/components/schemas/"
REQUEST_TIMEOUT = 10  # seconds; a request the node leaves unanswered this long is a failure
MAX_EXAMPLES = 30  # per operation and generation mode
KILL_EXAMPLES = 5

# Only "no 5xx" by default: the response-schema, content-type and status-code checks find
# mismatches between the document and the routes (reported, not yet fixed). Set
# OPENAPI_FUZZ_CHECKS=all to run every schemathesis check and see them.
CHECKS: list[Any] | None = (
    None if os.environ.get("OPENAPI_FUZZ_CHECKS") == "all" else [not_a_server_error]
)

# Left out of the fuzz run: the SSE stream never ends, and the kill switch latches (it runs
# last, on its own). POST /v1/admin/{action} runs with every real action filtered out:
# stop and shutdown would end the run, the others change the lifecycle under it.
EVENTS, KILL, ADMIN = ("GET", "/v1/events"), ("POST", "/v1/kill"), ("POST", "/v1/admin/{action}")
ORDER_BODIES = {("POST", "/v1/orders"), ("POST", "/v1/orders/preview")}
BY_ID = {("GET", "/v1/orders/{id}"), ("DELETE", "/v1/orders/{id}")}
BY_CLIENT_ID = ("GET", "/v1/orders/by-client-id/{cid}")

SYMBOLS = tuple(instrument.symbol for instrument in UNIVERSE)
KNOWN_OR_NOT = r"(AAPL|MSFT|SPY|[A-Z]{1,5})"
# Query parameters the routes read that the document does not declare (only its summaries
# name them): added to the fuzz run's copy so that schemathesis sends them too.
UNDECLARED_QUERY: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("get", "/v1/orders"): [
        {"name": "status", "in": "query", "schema": {"enum": ["open", "closed", "all"]}},
        {"name": "symbols", "in": "query", "schema": {"type": "string"}},
        {"name": "after", "in": "query", "schema": {"type": "string", "format": "date-time"}},
        {"name": "until", "in": "query", "schema": {"type": "string", "format": "date-time"}},
        {"name": "limit", "in": "query",
         "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
    ],
    ("get", "/v1/quotes"): [
        {"name": "symbols", "in": "query", "required": True,
         "schema": {"type": "string",
                    "pattern": f"^{KNOWN_OR_NOT}(,{KNOWN_OR_NOT}){{0,4}}$"}},
    ],
    ("post", "/v1/kill"): [
        {"name": "scope", "in": "query", "schema": {"enum": ["node", "account"]}},
    ],
}  # fmt: skip


# ---------------------------------------------------------------------- the document


def served_operations(node: Any) -> set[tuple[str, str]]:
    """(method, path) of every route of the app the daemon serves, HEAD aside."""
    from node.runtime import build_app

    app = build_app(node.daemon, KeyRing(KEY, None), ())
    return {
        (method, route.path)
        for route in app.routes
        for method in (route.methods or ())
        if method != "HEAD"
    }


def refs(node: Any) -> list[str]:
    """Every `$ref` value anywhere in a JSON document."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(refs(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(refs(item))
    return found


def resolve(document: dict[str, Any], ref: str) -> Any:
    """A local reference `#/a/b` (RFC 6901); KeyError or IndexError when it points nowhere."""
    if not ref.startswith("#/"):
        raise KeyError(f"{ref} is not a local reference")
    target: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        target = target[int(part)] if isinstance(target, list) else target[part]
    return target


async def test_openapi_document_matches_the_served_routes(node_factory: Any) -> None:
    node = await node_factory()
    await until(lambda: node.state == "SERVING")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.api_port}",
                                 timeout=REQUEST_TIMEOUT) as http:  # fmt: skip
        assert (await http.get("/openapi.json")).status_code == 401, "the document needs the key"
        response = await http.get("/openapi.json", headers={"X-API-Key": KEY})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()

    assert document["openapi"] == "3.1.0"
    documented = {(method.upper(), path) for path, item in document["paths"].items()
                  for method in item}  # fmt: skip
    served = served_operations(node)
    assert sorted(served - documented) == [], "served but not documented"
    assert sorted(documented - served) == [], "documented but not served"
    operation_ids = [operation["operationId"] for item in document["paths"].values()
                     for operation in item.values()]  # fmt: skip
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"

    unresolved = []
    for ref in sorted(set(refs(document))):
        try:
            resolve(document, ref)
        except (KeyError, IndexError, TypeError, ValueError):
            unresolved.append(ref)
    components = sorted(document["components"]["schemas"])
    assert unresolved == [], f"{unresolved} point nowhere; the components are {components}"

    # The OpenAPI 3.1 meta-schema, as schemathesis checks it ...
    schemathesis.openapi.from_dict(copy.deepcopy(document)).validate()
    # ... leaves Schema Objects free-form: each must also be valid JSON Schema 2020-12, the
    # dialect OpenAPI 3.1 uses by default.
    for name, component in document["components"]["schemas"].items():
        dialect = {"$schema": "https://json-schema.org/draft/2020-12/schema", **component}
        try:
            jsonschema_rs.meta.validate(dialect)
        except jsonschema_rs.ValidationError as exc:
            pytest.fail(f"components/schemas/{name} is not valid JSON Schema 2020-12: {exc}")


# ---------------------------------------------------------------------- the fuzz run


def for_fuzzing(document: dict[str, Any]) -> dict[str, Any]:
    """The served document, made usable for the run without hiding what it lacks.

    A dangling `#/components/schemas/X` is pointed at `X-Input` (pydantic splits a model used
    in both directions; the document test reports the dangling reference), and the query
    parameters of UNDECLARED_QUERY the document lacks are declared.
    """
    document = copy.deepcopy(document)
    schemas = document["components"]["schemas"]

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(SCHEMAS):
                name = ref.removeprefix(SCHEMAS)
                if name not in schemas and f"{name}-Input" in schemas:
                    node["$ref"] = f"{SCHEMAS}{name}-Input"
            for value in node.values():
                fix(value)
        elif isinstance(node, list):
            for item in node:
                fix(item)

    fix(document)
    for (method, path), parameters in UNDECLARED_QUERY.items():
        operation = document["paths"][path][method]
        declared = {p.get("name") for p in operation.get("parameters", [])}
        operation.setdefault("parameters", []).extend(
            p for p in parameters if p["name"] not in declared
        )
    return document


@dataclass
class Findings:
    """What the run saw: status codes per operation, and each distinct failure once."""

    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    failures: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    nothing_to_negate: list[str] = field(default_factory=list)

    def fail(self, label: str, what: str, example: str) -> None:
        count, first = self.failures.get((label, what), (0, example))
        self.failures[(label, what)] = (count + 1, first)

    def report(self) -> str:
        lines = [f"{label}: {dict(sorted(codes.items()))}"
                 for label, codes in self.statuses.items()]  # fmt: skip
        lines += [f"no invalid request possible: {label}" for label in self.nothing_to_negate]
        lines += [f"FAILED {label}: {what} (x{count})\n    {example}"
                  for (label, what), (count, example) in self.failures.items()]  # fmt: skip
        return "\n".join(lines)


@dataclass
class Fuzzer:
    base_url: str
    session: requests.Session
    findings: Findings = field(default_factory=Findings)

    def explore(self, strategy: Any, label: str, max_examples: int = MAX_EXAMPLES) -> None:
        """Send up to max_examples cases; record every failure and go on (so no shrinking)."""
        findings = self.findings

        @given(case=strategy)
        @settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def run(case: Any) -> None:
            curl = case.as_curl_command(headers=HEADERS, base_url=self.base_url)
            try:
                response = case.call(base_url=self.base_url, session=self.session,
                                     headers=HEADERS, timeout=REQUEST_TIMEOUT)  # fmt: skip
            except Exception as exc:  # a timeout or a dropped connection
                findings.fail(label, f"{type(exc).__name__}: {exc}", curl)
                return
            findings.statuses.setdefault(label, Counter())[response.status_code] += 1
            if response.status_code >= 500:  # whatever the checks make of it
                findings.fail(label, f"server error {response.status_code}",
                              f"{curl}\n    -> {response.text[:500]}")  # fmt: skip
            try:
                case.validate_response(response, checks=CHECKS, headers=HEADERS,
                                       transport_kwargs={"base_url": self.base_url,
                                                         "session": self.session,
                                                         "headers": HEADERS,
                                                         "timeout": REQUEST_TIMEOUT})  # fmt: skip
            except FailureGroup as group:
                for failure in group.exceptions:
                    first = failure.message.strip().splitlines()[0] if failure.message else ""
                    findings.fail(label, f"{failure.code} {failure.title}: {first}",
                                  f"{curl}\n    -> {response.status_code} "
                                  f"{response.text[:300]}")  # fmt: skip

        try:
            run()
        except Unsatisfiable:
            # Nothing to make invalid (no parameters, no body): negative mode has no case.
            findings.nothing_to_negate.append(label)

    def both_modes(
        self,
        operation: Any,
        strategy_for: Callable[[GenerationMode], Any] | None = None,
        max_examples: int = MAX_EXAMPLES,
    ) -> None:
        """Valid requests, then invalid ones."""
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if strategy_for is None:
                strategy = operation.as_strategy(generation_mode=mode)
            else:
                strategy = strategy_for(mode)
            self.explore(strategy, f"{operation.label} [{mode.value}]", max_examples)


def valid_orders(operation: Any) -> Any:
    """Schema-valid bodies made acceptable: the schema alone lets qty be any string and does
    not tie limit_price/stop_price to the type, so hardly a generated order would pass."""
    serial = itertools.count()

    def valid(args: tuple[Any, str, int, int, int]) -> Any:
        case, symbol, qty, limit_cents, stop_cents = args
        body = dict(case.body)
        body["client_order_id"] = f"{body['client_order_id'][:40]}-{next(serial)}"
        body["symbol"] = symbol
        body["qty"] = str(qty)
        body.pop("limit_price", None)
        body.pop("stop_price", None)
        if body["type"] in ("limit", "stop_limit"):
            body["limit_price"] = f"{limit_cents / 100:.2f}"
        if body["type"] in ("stop", "stop_limit"):
            body["stop_price"] = f"{stop_cents / 100:.2f}"
        case.body = body
        return case

    return st.tuples(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        st.sampled_from(SYMBOLS),
        st.integers(1, 500),
        st.integers(1, 100_000),
        st.integers(1, 100_000),
    ).map(valid)


def no_real_action(operation: Any, mode: GenerationMode) -> Any:
    return operation.as_strategy(generation_mode=mode).filter(
        lambda case: case.path_parameters.get("action") not in ADMIN_ACTIONS
    )


def with_path_values(operation: Any, name: str, values: list[str]) -> Any:
    """Positive cases of an operation whose path parameter takes one of the given values."""
    return st.sampled_from(values).flatmap(
        lambda value: operation.as_strategy(path_parameters={name: value})
    )


def fuzz(base_url: str) -> Findings:
    """The whole run; synchronous (schemathesis sends with requests), so the test runs it in a
    worker thread while the daemon keeps serving on the test's event loop."""
    response = requests.get(f"{base_url}/openapi.json", headers=HEADERS, timeout=REQUEST_TIMEOUT)
    response.raise_for_status()
    schema = schemathesis.openapi.from_dict(for_fuzzing(response.json()))
    operations = {
        (operation.method.upper(), operation.path): operation
        for operation in (result.ok() for result in schema.get_all_operations())
    }
    with requests.Session() as session:
        fuzzer = Fuzzer(base_url, session)
        # First orders the node accepts, then the routes that take an order's id with them
        # (before the cancel-all of DELETE /v1/orders).
        for key in sorted(ORDER_BODIES):
            operation = operations[key]
            fuzzer.explore(valid_orders(operation), f"{operation.label} [accepted orders]")
        placed = session.get(
            f"{base_url}/v1/orders",
            params={"status": "all", "limit": 500},
            headers=HEADERS,
            timeout=REQUEST_TIMEOUT,
        ).json()["items"]
        assert placed, "the run placed no order the node accepted"
        for key, name, field_ in (*((key, "id", "id") for key in sorted(BY_ID)),
                                  (BY_CLIENT_ID, "cid", "client_order_id")):  # fmt: skip
            operation = operations[key]
            values = [order[field_] for order in placed]
            fuzzer.explore(with_path_values(operation, name, values),
                           f"{operation.label} [placed orders]")  # fmt: skip
        # Then every operation, valid and invalid requests.
        for key, operation in operations.items():
            if key == ADMIN:
                fuzzer.both_modes(operation, partial(no_real_action, operation))
            elif key not in (EVENTS, KILL):
                fuzzer.both_modes(operation)
        # Last, the kill switch: it latches and refuses every order after it.
        fuzzer.both_modes(operations[KILL], max_examples=KILL_EXAMPLES)
    return fuzzer.findings


@pytest.mark.timeout(240)
async def test_schemathesis_finds_no_server_error(node_factory: Any, tmp_path: Path) -> None:
    arm = tmp_path / "arm_orders_confirmed.txt"
    arm.write_text("armed\n", encoding="utf-8")
    node = await node_factory(ORDERS_ENABLED=True, ARM_ORDERS_FILE=arm)
    await until(lambda: node.state == "SERVING")
    started = time.monotonic()
    findings = await anyio.to_thread.run_sync(fuzz, f"http://127.0.0.1:{node.api_port}")
    print(f"fuzzed in {time.monotonic() - started:.1f} s\n{findings.report()}")
    assert findings.failures == {}, findings.report()
    assert node.state == "SERVING", "the run must not have taken the node down"
