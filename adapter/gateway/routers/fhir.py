"""``POST /fhir`` (an EHR's own transaction or batch Bundle) and ``GET /metadata``.

A Bundle goes through, in this order (``docs/authorization.md``): parse → structural checks
(type, methods, accepted resource types) → normalisation into the caller's space
(``normalise.py``: server ids, idempotent PUTs, references) → write policy (what the caller
may match on and reference) → model validation (fhir.resources, entry by entry) → the
gateway's Provenance → outbox. Everything is checked before the Bundle is accepted because
once the EHR has its 201/202 it will not resend; a Bundle that cannot be delivered must be
refused now, with every problem located at the entry the client sent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from adapter import __version__
from adapter.gateway.audit import audit_record
from adapter.gateway.bundles import check_structure, entry_is_replay_safe, model_issues
from adapter.gateway.clients import Client
from adapter.gateway.config import Settings
from adapter.gateway.dependencies import GatewayDep, ReadPrincipal, WritePrincipal, read_body
from adapter.gateway.normalise import normalise_bundle
from adapter.gateway.openapi import bundle_body, error_responses, json_response
from adapter.gateway.outcomes import GatewayError, Issue, error, fhir_response, record_errors
from adapter.gateway.resource_types import accepted_types
from adapter.record.errors import RecordInputError
from adapter.record.loader import parse_json_object

router = APIRouter(tags=["FHIR"])

_FHIR_VERSIONS = {"R4": "4.0.1", "R5": "5.0.0"}
# Below this many bytes the checks are fast enough to run on the event loop.
_INLINE_CHECK_BYTES = 64 * 1024


def _too_many_entries(count: int, limit: int) -> GatewayError:
    return GatewayError(
        413,
        error(
            "too-long",
            f"the Bundle has {count} entries; this gateway forwards at most {limit} per Bundle "
            "(FHIR_ADAPTER_MAX_BUNDLE_ENTRIES). Send the resources in several Bundles of at "
            f"most {limit} entries (references between them by Type/id or by identifier keep "
            "working; urn:uuid references only resolve inside one Bundle), or ask the "
            "gateway's operator to raise the limit",
            "Bundle.entry",
        ),
    )


def prepare_bundle(
    bundle: dict[str, Any], client: Client, settings: Settings
) -> GatewayError | None:
    """Check and normalise ``bundle`` in place; the refusal, or ``None`` when it may go on."""
    issues: list[Issue] = check_structure(
        bundle, allowed_types=accepted_types(settings.allowed_resource_types)
    )
    if not issues:
        issues = normalise_bundle(bundle, client)
    if issues:
        return GatewayError(422, issues)
    # The write policy (authorization rules 3, 5, 6, 7 and absolute references;
    # adapter/gateway/write_policy.py) is called here, on the normalised Bundle, and
    # answers 403 with its located issues before any model validation is paid for.
    issues = model_issues(bundle, settings.upstream_fhir_version)
    return GatewayError(422, issues) if issues else None


@router.post(
    "/fhir",
    status_code=201,
    summary="Forward an EHR transaction or batch Bundle",
    responses={
        201: json_response("Submission", "Delivered; `references` lists the upstream's answers."),
        202: json_response("Submission", "Queued (upstream unavailable); poll `Location`."),
        **error_responses((400, 401, 403, 413, 415, 422, 500, 502, 503)),
    },
    openapi_extra=bundle_body(),
)
async def push_bundle(request: Request, principal: WritePrincipal, gateway: GatewayDep) -> Response:
    """Check and normalise the Bundle, store it with a gateway Provenance, deliver or queue it."""
    settings = gateway.settings
    client = principal.client
    if client is None:
        raise GatewayError(
            403,
            error(
                "forbidden",
                "this credential is bound to no client; only a configured client may write "
                "Bundles (docs/authorization.md)",
            ),
        )
    body = await read_body(request, settings.max_body_bytes)
    try:
        bundle = parse_json_object(body)
    except RecordInputError as exc:
        raise record_errors(exc.errors, gateway.rule_system) from None
    entries = bundle.get("entry")
    if isinstance(entries, list) and len(entries) > settings.max_bundle_entries:
        raise _too_many_entries(len(entries), settings.max_bundle_entries)

    if len(body) <= _INLINE_CHECK_BYTES:
        refusal = prepare_bundle(bundle, client, settings)
    else:
        refusal = await run_in_threadpool(prepare_bundle, bundle, client, settings)
    if refusal is not None:
        raise refusal
    replay_safe = all(entry_is_replay_safe(entry) for entry in bundle["entry"])
    submission_id, response = await gateway.submit(
        kind="bundle",
        bundle=bundle,
        principal=principal.name,
        client_id=client.id,
        replay_safe=replay_safe,
    )
    record = audit_record(request.scope)
    if record is not None:
        record.submission = submission_id
    return response


def capability_statement(settings: Settings, date: str) -> dict[str, Any]:
    """What the gateway accepts, as a FHIR CapabilityStatement (kind ``instance``)."""
    canonical = settings.namespace.rstrip("/") + "/fhir"
    security: dict[str, Any] = {
        "cors": False,
        "description": "Bearer token on every request: a configured API key, or a JWT from "
        "the configured issuer with scope system/*.write (pushes) or system/*.read (reads).",
    }
    if settings.jwt_public_key or settings.jwt_secret:
        security["service"] = [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "OAuth",
                    }
                ]
            }
        ]
    resources = [
        {
            "type": resource_type,
            "interaction": [{"code": "create"}, {"code": "update"}],
            "conditionalCreate": True,
            "conditionalUpdate": True,
        }
        for resource_type in sorted(accepted_types(settings.allowed_resource_types))
    ]
    return {
        "resourceType": "CapabilityStatement",
        "id": "fhir-oncology-adapter-gateway",
        "url": f"{canonical}/CapabilityStatement/gateway",
        "version": __version__,
        "name": "FhirOncologyAdapterGateway",
        "title": "FHIR oncology adapter gateway",
        "status": "active",
        "experimental": False,
        "date": date,
        "publisher": "fhir-oncology-adapter",
        "description": "Store-and-forward gateway: accepts oncology case records "
        "(POST /case-records, converted to transaction Bundles) and FHIR transaction or "
        "batch Bundles (POST /fhir), stores each durably and delivers it to the upstream "
        "FHIR server with a Provenance naming the pushing client.",
        "kind": "instance",
        "software": {"name": "fhir-oncology-adapter gateway", "version": __version__},
        "implementation": {"description": f"fhir-oncology-adapter gateway {settings.instance_id}"},
        "fhirVersion": _FHIR_VERSIONS[settings.upstream_fhir_version],
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Entries are POSTs with a fullUrl or with ifNoneExist "
                "(identifier=system|value), or PUTs; the gateway turns each into an idempotent "
                "write under the sender's own server ids, so a resend creates nothing new and "
                "a corrected resend updates.",
                "security": security,
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
                "operation": [
                    {
                        "name": "convert",
                        "definition": f"{canonical}/OperationDefinition/case-record-convert",
                        "documentation": "POST /case-records/$convert: a case record in, "
                        "its FHIR Bundle out (?fhir_version=R4|R5); nothing is stored.",
                    }
                ],
            }
        ],
    }


_STARTED = datetime.now(UTC).date().isoformat()


@router.get(
    "/metadata",
    summary="CapabilityStatement of what the gateway accepts",
    responses={
        200: json_response("FhirResource", "CapabilityStatement", "application/fhir+json"),
        **error_responses((401, 403, 500)),
    },
)
async def metadata(principal: ReadPrincipal, gateway: GatewayDep) -> Response:
    """The gateway's own CapabilityStatement (not the upstream's)."""
    return fhir_response(200, capability_statement(gateway.settings, _STARTED))
