"""``GET /submissions/{id}``: what became of a push that was answered with 202 (or 201)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Path
from starlette.responses import Response

from adapter.gateway.dependencies import AnyPrincipal, GatewayDep
from adapter.gateway.openapi import error_responses, json_response
from adapter.gateway.outcomes import GatewayError, error, fhir_response
from adapter.gateway.views import submission_view

router = APIRouter(tags=["submissions"])


@router.get(
    "/submissions/{submission_id}",
    summary="State of a submission",
    responses={
        200: json_response(
            "Submission",
            "queued, delivered (with the upstream's transaction-response and references) or "
            "failed (with the upstream's OperationOutcome)",
        ),
        **error_responses((400, 401, 403, 404, 500, 503)),
    },
)
async def get_submission(
    principal: AnyPrincipal,
    gateway: GatewayDep,
    submission_id: str = Path(max_length=64, description="The id from the Location header"),
) -> Response:
    """A submission's state.

    Callers with ``system/*.read`` see any submission; a push-only caller sees its own,
    and others' are reported as not found so that ids cannot be probed.
    """
    row = await asyncio.to_thread(gateway.outbox.get, submission_id)
    if row is None or not (principal.can("read") or row.principal == principal.name):
        raise GatewayError(404, error("not-found", "no such submission"))
    return fhir_response(200, submission_view(row), media_type="application/json")
