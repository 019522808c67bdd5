"""``/healthz`` (the process answers) and ``/readyz`` (upstream and queue reachable).

Both are unauthenticated so that orchestrators can probe them. Note for load balancers:
``/readyz`` fails while the upstream is down, yet that is exactly when the gateway's queue is
most useful; route traffic on ``/healthz`` and alert on ``/readyz``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import APIRouter
from starlette.responses import Response

from adapter.fhir import FhirError
from adapter.gateway.dependencies import GatewayDep
from adapter.gateway.openapi import error_responses, json_response
from adapter.gateway.outcomes import GatewayError, Issue, error, fhir_response

router = APIRouter(tags=["health"])

READY_TIMEOUT = 5.0


@router.get(
    "/healthz",
    summary="Liveness: the process is up",
    responses={200: json_response("Health", "Alive")},
)
async def healthz() -> Response:
    """Always 200 while the event loop runs; checks nothing else on purpose."""
    return fhir_response(200, {"status": "ok"}, media_type="application/json")


@router.get(
    "/readyz",
    summary="Readiness: upstream /metadata and the queue database are reachable",
    responses={200: json_response("Health", "Ready"), **error_responses((503,))},
)
async def readyz(gateway: GatewayDep) -> Response:
    """200 with queue counts when both dependencies answer, else 503 naming the failures."""
    issues: list[Issue] = []
    checks: dict[str, Any] = {}
    try:
        checks["queue"] = await asyncio.wait_for(
            asyncio.to_thread(gateway.outbox.counts), READY_TIMEOUT
        )
    except Exception as exc:  # any failure means "not ready", whatever the driver raised
        issues.append(error("transient", f"queue database unreachable: {type(exc).__name__}"))
    if gateway.client is None:
        issues.append(error("not-supported", "no upstream configured (FHIR_ADAPTER_UPSTREAM_URL)"))
    else:
        try:
            await asyncio.wait_for(gateway.client.capabilities(), READY_TIMEOUT)
            checks["upstream"] = "reachable"
        except (FhirError, httpx.HTTPError, TimeoutError) as exc:
            issues.append(
                error("transient", f"upstream /metadata unreachable: {type(exc).__name__}")
            )
    if issues:
        raise GatewayError(503, issues, headers={"Retry-After": "10"})
    return fhir_response(200, {"status": "ready", "checks": checks}, media_type="application/json")
