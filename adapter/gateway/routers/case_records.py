"""``POST /case-records`` (validate, convert, push) and ``POST /case-records/$convert``.

Both go through :func:`adapter.pipeline.convert_bytes`, the path the CLI uses, so a record
rejected here is rejected identically by ``fhir-adapter validate``. Converted bundles are not
re-validated with fhir.resources per request: that would cost more than the conversion, and
the mappers' output is validated in the test suite instead.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from adapter.gateway.audit import audit_record
from adapter.gateway.dependencies import AnyPrincipal, GatewayDep, WritePrincipal, read_body
from adapter.gateway.openapi import case_record_body, error_responses, json_response
from adapter.gateway.outcomes import GatewayError, error, fhir_response, record_errors
from adapter.mapping import ConversionOptions
from adapter.pipeline import convert_bytes

router = APIRouter(tags=["case records"])

_PUSH_RESPONSES = {
    201: json_response(
        "Submission",
        "Delivered: the upstream server confirmed; `references` lists what it created or "
        "matched. `Location` points at the submission.",
        headers={"Location": {"schema": {"type": "string"}}},
    ),
    202: json_response(
        "Submission",
        "Accepted and queued (upstream unavailable): poll `Location` (`/submissions/{id}`).",
        headers={"Location": {"schema": {"type": "string"}}},
    ),
    **error_responses((400, 401, 403, 413, 415, 422, 500, 502, 503)),
}


@router.post(
    "/case-records",
    status_code=201,
    summary="Validate, convert and push a case record",
    responses=_PUSH_RESPONSES,
    openapi_extra=case_record_body(),
)
async def push_case_record(
    request: Request, principal: WritePrincipal, gateway: GatewayDep
) -> Response:
    """Convert the record to a transaction Bundle and deliver it (201) or queue it (202).

    The submission is stored before the answer; 400/422 list every problem of the record
    with its JSON path. An upstream refusal of the data is passed on (400/409/412/422) with
    the upstream's OperationOutcome; the submission is then ``failed``.
    """
    body = await read_body(request, gateway.settings.max_body_bytes)
    outcome = convert_bytes("request", body, gateway.conversion_options)
    if outcome.bundle is None:
        raise record_errors(outcome.errors, gateway.rule_system)
    submission_id, response = await gateway.submit(
        kind="case-record",
        bundle=outcome.bundle,
        principal=principal.name,
        client_id=principal.client.id if principal.client is not None else principal.name,
        replay_safe=True,  # conditional updates and PUTs, planned at each delivery
        warnings=tuple(outcome.warnings),
    )
    record = audit_record(request.scope)
    if record is not None:
        record.submission = submission_id
    return response


@router.post(
    "/case-records/$convert",
    summary="Convert a case record to a FHIR Bundle without pushing it",
    responses={
        200: json_response("Bundle", "The transaction Bundle", "application/fhir+json"),
        **error_responses((400, 401, 403, 413, 415, 422, 500)),
    },
    openapi_extra=case_record_body(),
)
async def convert_case_record(
    request: Request,
    principal: AnyPrincipal,
    gateway: GatewayDep,
    fhir_version: Literal["R4", "R5"] = Query("R4", description="FHIR release of the Bundle"),
) -> Response:
    """The Bundle ``POST /case-records`` would push (without the gateway's Provenance)."""
    body = await read_body(request, gateway.settings.max_body_bytes)
    options = ConversionOptions(fhir_version=fhir_version, namespace=gateway.settings.namespace)
    outcome = convert_bytes("request", body, options)
    if outcome.bundle is None:
        if not outcome.errors:  # pragma: no cover - convert_bytes always explains
            raise GatewayError(422, error("invalid", "the record could not be converted", "$"))
        raise record_errors(outcome.errors, gateway.rule_system)
    return fhir_response(200, outcome.bundle)
