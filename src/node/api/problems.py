"""RFC 9457 problem details: every error the API returns, with a specific type."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

TITLES = {
    "unauthorized": "Missing or wrong API key",
    "ip-not-allowed": "This address may not use the API",
    "loopback-only": "Only the laptop itself may do this",
    "not-found": "No such resource",
    "method-not-allowed": "Method not allowed on this resource",
    "not-ready": "The gateway is not serving",
    "malformed-request": "The request could not be read",
    "unsupported-media-type": "Unsupported content type",
    "payload-too-large": "The request body is too large",
    "gateway-unavailable": "The gateway is not connected",
}


def problem(
    slug: str, status: int, detail: str, request_id: str = "",
    headers: dict[str, str] | None = None, **extra: Any,
) -> JSONResponse:  # fmt: skip
    body = {
        "type": f"/problems/{slug}",
        "title": TITLES.get(slug, slug.replace("-", " ").capitalize()),
        "status": status,
        "detail": detail,
        "request_id": request_id,
        **extra,
    }
    return JSONResponse(
        body, status_code=status, headers=headers, media_type="application/problem+json"
    )
