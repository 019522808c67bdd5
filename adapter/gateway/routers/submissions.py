"""``GET /submissions/{id}``: what became of a push that was answered with 202 (or 201)."""

from __future__ import annotations

from fastapi import APIRouter, Path
from starlette.responses import Response

from adapter.gateway.auth import Principal
from adapter.gateway.dependencies import ClientPrincipal, GatewayDep
from adapter.gateway.openapi import error_responses, json_response
from adapter.gateway.outbox import Submission
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
    principal: ClientPrincipal,
    gateway: GatewayDep,
    submission_id: str = Path(max_length=64, description="The id from the Location header"),
) -> Response:
    """A submission's state.

    A client sees its own submissions (whichever of its credentials pushed them), ``admin``
    sees all; another client's are reported as not found, so that ids cannot be probed.
    """
    row = await gateway.read_store(gateway.outbox.get, submission_id)
    if row is None or not visible(row, principal):
        raise GatewayError(404, error("not-found", "no such submission"))
    return fhir_response(200, submission_view(row), media_type="application/json")


def visible(row: Submission, principal: Principal) -> bool:
    """Whether ``principal`` may see ``row``: its client pushed it, or it is an admin.

    Rows stored before submissions carried their client are visible to the credential that
    pushed them (and to admins) only.
    """
    if principal.can("admin"):
        return True
    if row.client is not None:
        return principal.client is not None and row.client == principal.client.id
    return row.principal == principal.name
