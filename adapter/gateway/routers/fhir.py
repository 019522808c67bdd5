"""``POST /fhir`` (an EHR's own transaction or batch Bundle) and ``GET /metadata``.

A Bundle goes through, in this order (``docs/authorization.md``): parse → structural checks
(type, methods, accepted resource types) → normalisation into the caller's space
(``normalise.py``: server ids, idempotent PUTs, references) → write policy (what the caller
may write, match on and reference; ``write_policy.py``) → model validation (fhir.resources,
entry by entry) → the gateway's Provenance → outbox. Everything is checked before the Bundle
is accepted because once the EHR has its 201/202 it will not resend; a Bundle that cannot be
delivered, or that the caller may not write, must be refused now, with every problem located.
All of it runs on the gateway's CPU pool, off the event loop, whatever the size.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from adapter import __version__
from adapter.gateway.audit import audit_record
from adapter.gateway.bundles import check_structure, entry_is_replay_safe, model_issues
from adapter.gateway.client_registry import ClientRegistry
from adapter.gateway.clients import Client
from adapter.gateway.config import Settings
from adapter.gateway.dependencies import (
    AnyPrincipal,
    GatewayDep,
    RespondAsync,
    WritePrincipal,
    read_body,
)
from adapter.gateway.normalise import normalise_bundle
from adapter.gateway.openapi import bundle_body, error_responses, json_response
from adapter.gateway.outcomes import GatewayError, Issue, error, fhir_response, record_errors
from adapter.gateway.resource_types import accepted_types
from adapter.gateway.write_policy import check_resource_types, check_write_policy
from adapter.record.errors import RecordInputError
from adapter.record.loader import parse_json_object

router = APIRouter(tags=["FHIR"])

_FHIR_VERSIONS = {"R4": "4.0.1", "R5": "5.0.0"}


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


@router.post(
    "/fhir",
    status_code=201,
    summary="Forward an EHR transaction or batch Bundle",
    responses={
        201: json_response("Submission", "Delivered; `references` lists the upstream's answers."),
        202: json_response(
            "Submission",
            "Queued (upstream unavailable, or `Prefer: respond-async`); poll `Location`.",
        ),
        **error_responses((400, 401, 403, 413, 415, 422, 500, 502, 503)),
    },
    openapi_extra=bundle_body(),
)
async def push_bundle(
    request: Request, principal: WritePrincipal, gateway: GatewayDep, respond_async: RespondAsync
) -> Response:
    """Check and normalise the Bundle, store it with a gateway Provenance, deliver or queue it."""
    settings = gateway.settings
    client = principal.client
    if client is None:  # WritePrincipal is bound to a client; never forward without one
        raise GatewayError(
            403,
            error(
                "forbidden",
                "this credential is bound to no client; only a configured client may write "
                "Bundles (docs/authorization.md)",
            ),
        )
    body = await read_body(request, settings.max_body_bytes)
    bundle = await gateway.cpu.run(
        checked_bundle,
        body,
        settings=settings,
        client=client,
        registry=gateway.authenticator.registry,
        rule_system=gateway.rule_system,
    )
    replay_safe = all(entry_is_replay_safe(entry) for entry in bundle["entry"])
    submission_id, response = await gateway.submit(
        kind="bundle",
        bundle=bundle,
        principal=principal.name,
        client_id=client.id,
        replay_safe=replay_safe,
        respond_async=respond_async,
    )
    record = audit_record(request.scope)
    if record is not None:
        record.submission = submission_id
    return response


def checked_bundle(
    body: bytes,
    *,
    settings: Settings,
    client: Client,
    registry: ClientRegistry,
    rule_system: str,
) -> dict[str, Any]:
    """The Bundle as it will be stored, or the GatewayError refusing it (run off the loop).

    Order (``docs/authorization.md``): parse → types no client may write (403) → structural
    checks → normalise → write policy → model validation. The gateway's Provenance is added
    when the Bundle is stored.
    """
    try:
        bundle = parse_json_object(body)
    except RecordInputError as exc:
        raise record_errors(exc.errors, rule_system) from None
    entries = bundle.get("entry")
    if isinstance(entries, list) and len(entries) > settings.max_bundle_entries:
        raise _too_many_entries(len(entries), settings.max_bundle_entries)
    forbidden = check_resource_types(bundle)  # rule 7 is an authorization refusal: 403 first
    if forbidden is not None:
        raise forbidden.error()
    issues: list[Issue] = check_structure(
        bundle, allowed_types=accepted_types(settings.allowed_resource_types)
    )
    if not issues:
        issues = normalise_bundle(bundle, client)
    if issues:
        raise GatewayError(422, issues)
    refusal = check_write_policy(
        bundle, client=client, registry=registry, upstream_base=settings.upstream_url
    )
    if refusal is not None:
        raise refusal.error()
    issues = model_issues(bundle, settings.upstream_fhir_version)
    if issues:
        raise GatewayError(422, issues)
    return bundle


def capability_statement(settings: Settings, date: str) -> dict[str, Any]:
    """What the gateway accepts, as a FHIR CapabilityStatement (kind ``instance``)."""
    canonical = settings.namespace.rstrip("/") + "/fhir"
    security: dict[str, Any] = {
        "cors": False,
        "description": "Bearer token on every request: an API key of a configured client, or "
        "a JWT from the configured issuer whose subject is bound to a client; the client's "
        "scopes (read, write, convert, admin), intersected with the token's SMART scopes "
        "(system/*.read, system/*.write), decide what it may call, and a client writes only "
        "under its own identifier systems (docs/authorization.md).",
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
async def metadata(principal: AnyPrincipal, gateway: GatewayDep) -> Response:
    """The gateway's own CapabilityStatement (not the upstream's)."""
    return fhir_response(200, capability_statement(gateway.settings, _STARTED))
