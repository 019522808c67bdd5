"""``POST /case-records`` (validate, convert, push) and ``POST /case-records/$convert``.

Both go through :func:`adapter.pipeline.convert_bytes`, the path the CLI uses, so a record
rejected here is rejected identically by ``fhir-adapter validate``; it runs on the gateway's
CPU pool, never on the event loop. A record is converted with the namespace of the caller's
client, so its identifiers are the caller's own (``docs/authorization.md``). Converted bundles
are not re-validated with fhir.resources per request: that would cost more than the
conversion, and the mappers' output is validated in the test suite instead.
"""

from __future__ import annotations

from typing import Literal

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from adapter.gateway.audit import audit_record
from adapter.gateway.auth import Principal
from adapter.gateway.bundles import provenance_id
from adapter.gateway.dependencies import (
    ConvertPrincipal,
    GatewayDep,
    RespondAsync,
    WritePrincipal,
    read_body,
)
from adapter.gateway.openapi import case_record_body, error_responses, json_response
from adapter.gateway.outcomes import (
    MAX_ISSUES,
    GatewayError,
    error,
    fhir_response,
    record_errors,
)
from adapter.gateway.runtime import Gateway
from adapter.mapping import ConversionOptions
from adapter.pipeline import Outcome, convert_bytes

router = APIRouter(tags=["case records"])


def converted(
    body: bytes, options: ConversionOptions, *, rule_system: str, max_entries: int
) -> Outcome:
    """Validate and convert, or raise the (capped) error refusing the record: off the loop.

    Everything proportional to the body, including the error list and the freeing of the
    parsed record, happens in the calling worker thread. A record that converts to more
    resources than ``FHIR_ADAPTER_MAX_BUNDLE_ENTRIES`` is refused like an EHR Bundle that
    large, which bounds every later step (storage, delivery) by the same limit.
    """
    # Validation stops listing at the cap the answer shows (a hostile record may carry 40,000
    # problems); the rest are counted, not rendered.
    outcome = convert_bytes("request", body, options, max_errors=MAX_ISSUES)
    if outcome.bundle is None:
        if not outcome.errors:  # pragma: no cover - convert_bytes always explains
            raise GatewayError(422, error("invalid", "the record could not be converted", "$"))
        raise record_errors(outcome.errors, rule_system)
    entries = len(outcome.bundle.get("entry") or [])
    if entries > max_entries:
        raise GatewayError(
            413,
            error(
                "too-long",
                f"the record converts to {entries} resources; the limit is {max_entries} "
                "(FHIR_ADAPTER_MAX_BUNDLE_ENTRIES)",
                "$",
            ),
        )
    return outcome


def converted_for_push(
    body: bytes,
    options: ConversionOptions,
    *,
    rule_system: str,
    max_entries: int,
    client_id: str,
) -> tuple[Outcome, str]:
    """:func:`converted`, plus the id of the gateway's Provenance for this content.

    The digest is computed here, in the worker process that built the Bundle, rather than
    on the gateway's event-loop process after the Bundle has crossed over.
    """
    outcome = converted(body, options, rule_system=rule_system, max_entries=max_entries)
    assert outcome.bundle is not None  # converted() raises otherwise
    return outcome, provenance_id(client_id, outcome.bundle)


def converted_json(
    body: bytes, options: ConversionOptions, *, rule_system: str, max_entries: int
) -> bytes:
    """:func:`converted`'s Bundle as JSON bytes (what ``$convert`` answers)."""
    outcome = converted(body, options, rule_system=rule_system, max_entries=max_entries)
    return orjson.dumps(outcome.bundle)


def _options(gateway: Gateway, principal: Principal, fhir_version: str) -> ConversionOptions:
    """The caller's client namespace (the gateway's own for a caller bound to none)."""
    namespace = principal.client.namespace if principal.client else gateway.settings.namespace
    return ConversionOptions(
        fhir_version="R5" if fhir_version == "R5" else "R4", namespace=namespace
    )


_PUSH_RESPONSES = {
    201: json_response(
        "Submission",
        "Delivered: the upstream server confirmed; `references` lists what it created or "
        "matched. `Location` points at the submission.",
        headers={"Location": {"schema": {"type": "string"}}},
    ),
    202: json_response(
        "Submission",
        "Accepted and queued (upstream unavailable, or the request said `Prefer: "
        "respond-async`): poll `Location` (`/submissions/{id}`; also `Content-Location` "
        "under `Prefer: respond-async`, with `Preference-Applied`).",
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
    request: Request, principal: WritePrincipal, gateway: GatewayDep, respond_async: RespondAsync
) -> Response:
    """Convert the record to a transaction Bundle and deliver it (201) or queue it (202).

    With ``Prefer: respond-async`` it is queued without waiting for the upstream: 202 once
    the submission is stored (FHIR's asynchronous request pattern).

    The submission is stored before the answer; 400/422 list every problem of the record
    with its JSON path. An upstream refusal of the data is passed on (400/409/412/422) with
    the upstream's OperationOutcome; the submission is then ``failed``.
    """
    body = await read_body(request, gateway.settings.max_body_bytes)
    options = _options(gateway, principal, gateway.settings.upstream_fhir_version)
    client_id = principal.client.id if principal.client is not None else principal.name
    outcome, gateway_provenance = await gateway.cpu.run(
        converted_for_push,
        body,
        options,
        rule_system=gateway.rule_system,
        max_entries=gateway.settings.max_bundle_entries,
        client_id=client_id,
    )
    assert outcome.bundle is not None  # converted() raises otherwise
    submission_id, response = await gateway.submit(
        kind="case-record",
        bundle=outcome.bundle,
        principal=principal.name,
        client_id=client_id,
        replay_safe=True,  # conditional updates and PUTs, planned at each delivery
        warnings=tuple(outcome.warnings),
        provenance=gateway_provenance,
        respond_async=respond_async,
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
    principal: ConvertPrincipal,
    gateway: GatewayDep,
    fhir_version: Literal["R4", "R5"] = Query("R4", description="FHIR release of the Bundle"),
) -> Response:
    """The Bundle ``POST /case-records`` would push (without the gateway's Provenance)."""
    body = await read_body(request, gateway.settings.max_body_bytes)
    serialised = await gateway.cpu.run(
        converted_json,
        body,
        _options(gateway, principal, fhir_version),
        rule_system=gateway.rule_system,
        max_entries=gateway.settings.max_bundle_entries,
    )
    return fhir_response(200, serialised)
