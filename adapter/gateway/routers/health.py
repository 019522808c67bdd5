"""``/healthz`` (the process answers) and ``/readyz`` (it can accept and keep a push).

Both need no token so that orchestrators can probe them. ``/readyz`` tells an anonymous
caller only "ready" or "not ready"; queue counts, disk space and the upstream's state are for
callers with the ``admin`` scope. Its checks are cached (``FHIR_ADAPTER_READY_CACHE_SECONDS``),
so probes never multiply upstream calls. Note for load balancers: ``/readyz`` fails while the
upstream is down, yet that is exactly when the gateway's queue is most useful; route traffic
on ``/healthz`` and alert on ``/readyz``.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from adapter.gateway.dependencies import GatewayDep, OptionalPrincipal
from adapter.gateway.openapi import error_responses, json_response
from adapter.gateway.outcomes import GatewayError, error, fhir_response

router = APIRouter(tags=["health"])

NOT_READY_RETRY_AFTER = "10"


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
    summary="Readiness: credentials, queue database (read, write, disk space), upstream",
    responses={200: json_response("Health", "Ready"), **error_responses((503,))},
)
async def readyz(gateway: GatewayDep, principal: OptionalPrincipal) -> Response:
    """200 when every check passes, else 503; details only for ``admin`` callers."""
    report = await gateway.readiness.report()
    admin = principal is not None and principal.can("admin")
    headers = {"Retry-After": NOT_READY_RETRY_AFTER}
    if not report.ready:
        if admin:
            raise GatewayError(503, list(report.issues), headers=headers)
        raise GatewayError(503, error("transient", "not ready"), headers=headers)
    body: dict[str, object] = {"status": "ready"}
    if admin:
        body["checks"] = report.checks
    return fhir_response(200, body, media_type="application/json")
