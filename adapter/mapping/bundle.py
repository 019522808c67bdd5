"""Case record → transaction Bundle: runs every mapper and wires the entries together.

Each entry is a conditional update on its business identifier (``PUT
Type?identifier=system|value``): the first push creates the resource, a corrected record
updates it (the server keeps the old version in its history), and an unchanged resend is a
no-op the server does not version. Types a server cannot search by identifier (R4
AdverseEvent) and Provenance, which has no identifier element, are PUT to an id derived from
the record. The same record always gives byte-identical output. Removing what a corrected
record no longer produces needs the server's state, so it happens at push time
(:mod:`adapter.reconcile`), not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from adapter.mapping.adverse_event import map_adverse_event
from adapter.mapping.condition import map_condition
from adapter.mapping.context import ConversionOptions, MappingContext
from adapter.mapping.courses import plan_courses
from adapter.mapping.medication import medication_administrations, medication_request
from adapter.mapping.observation import (
    map_age,
    map_follow_up,
    map_history,
    map_measurement,
    map_response,
)
from adapter.mapping.patient import map_patient
from adapter.mapping.procedure import map_procedure
from adapter.mapping.profiles import claim_mcode_profiles
from adapter.mapping.provenance import map_provenance, provenance_id
from adapter.mappings import staged_conditions


@dataclass
class ConversionResult:
    """The bundle and the warnings a careful reader should see (never silently fixed)."""

    bundle: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _primary_diagnosis(record: dict[str, Any]) -> str | None:
    return next((d["id"] for d in record.get("diagnoses", []) if d["role"] == "primary"), None)


def _reason_of(treatment: dict[str, Any], primary: str | None) -> str | None:
    """The diagnosis a treatment was given for: the one the source names (``for_diagnosis``),
    else the record's primary diagnosis."""
    reason: str | None = treatment.get("for_diagnosis", primary)
    return reason


def _business_identifier(resource: dict[str, Any]) -> dict[str, str]:
    identifier = resource["identifier"]
    first: dict[str, str] = identifier[0] if isinstance(identifier, list) else identifier
    return first


PUT_BY_ID = frozenset({"AdverseEvent"})
"""Types an R4 server cannot search by identifier (R4 AdverseEvent has no ``identifier``
search parameter), so a conditional update is impossible: they are PUT to an id derived from
the record instead, which versions and matches just the same. Provenance, which has no
identifier at all, is always PUT the same way. (R5 AdverseEvent could be searched, but keeps
the derived id so that its server id does not depend on the FHIR release.)"""

_SEARCH_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", "$": "\\$", "|": "\\|"})
_LITERAL = re.compile(r"[A-Za-z0-9_.~:/-]*")
"""Characters that neither the search escaping nor ``quote(..., safe=':/|-._~')`` change."""


def conditional_url(resource_type: str, system: str, value: str) -> str:
    """``Type?identifier=system|value``, escaped so that no namespace can break the query.

    FHIR search escaping (backslash before ``\\ , $ |``) applies to each part, then
    percent-encoding of anything outside the characters a URL query keeps literally; the
    identifiers the adapter assigns contain none of them, so the URL reads as written.

    The identifiers the adapter assigns are made of characters that neither step changes, so
    that common case is recognised first and written as it is (the same text, at a fraction
    of the cost: the escaping was a tenth of a conversion).
    """
    if _LITERAL.fullmatch(system) and _LITERAL.fullmatch(value):
        return f"{resource_type}?identifier={system}|{value}"
    token = f"{system.translate(_SEARCH_ESCAPES)}|{value.translate(_SEARCH_ESCAPES)}"
    return f"{resource_type}?identifier={quote(token, safe=':/|-._~')}"


def _entry(ctx: MappingContext, resource: dict[str, Any]) -> dict[str, Any]:
    """A transaction entry whose fullUrl matches the references other mappers built."""
    resource_type = resource["resourceType"]
    if resource_type == "Provenance":
        return {
            "fullUrl": ctx.full_url("Provenance", "provenance"),
            "resource": resource,
            "request": {"method": "PUT", "url": f"Provenance/{resource['id']}"},
        }
    if resource_type in PUT_BY_ID:
        key = _business_identifier(resource)["value"].split("/", 2)[2]
        resource_id = ctx.client_id(resource_type, key)
        body = {"resourceType": resource_type, "id": resource_id}
        body.update((k, v) for k, v in resource.items() if k != "resourceType")
        return {
            "fullUrl": ctx.full_url(resource_type, key),
            "resource": body,
            "request": {"method": "PUT", "url": f"{resource_type}/{resource_id}"},
        }
    identifier = _business_identifier(resource)
    value = identifier["value"]
    if resource_type == "Patient":
        full_url = ctx.full_url("Patient", "patient")
    else:
        full_url = ctx.full_url(resource_type, value.split("/", 2)[2])
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {
            "method": "PUT",
            "url": conditional_url(resource_type, identifier["system"], value),
        },
    }


def _recorded(record: dict[str, Any], options: ConversionOptions) -> str:
    if "recorded_at" in record:
        return str(record["recorded_at"])
    if options.recorded:
        return options.recorded
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def convert_record(
    record: dict[str, Any],
    options: ConversionOptions | None = None,
) -> ConversionResult:
    """Map a validated case record to a FHIR transaction Bundle (R4 by default, or R5).

    The record must have passed :func:`adapter.record.validate_record`; mapping assumes the
    shape and references the validator guarantees.
    """
    options = options or ConversionOptions()
    primary = _primary_diagnosis(record)
    cancers = staged_conditions()
    is_cancer = any(
        d["id"] == primary and d["condition"] in cancers for d in record.get("diagnoses", [])
    )
    ctx = MappingContext(record["record_id"], options, primary if is_cancer else None)
    warnings: list[str] = []
    resources: list[dict[str, Any]] = [map_patient(ctx, record)]
    trial = record["source"].get("trial")
    for dx in record.get("diagnoses", []):
        condition_resources, condition_warnings = map_condition(ctx, record, dx)
        resources.extend(condition_resources)
        warnings.extend(condition_warnings)
    treatments = {t["id"]: t for t in record.get("treatments", [])}
    plans = plan_courses(record)
    warnings.extend(
        f"$.treatments[?(@.id=='{tid}')]: schedule not expanded: {plan.problem}"
        for tid, course_plans in plans.items()
        for plan in course_plans
        if plan.problem
    )
    course_refs: dict[str, list[dict[str, Any]]] = {}
    for treatment in record.get("treatments", []):
        reason = _reason_of(treatment, primary)
        if treatment["kind"] == "drug":
            texts = {a["drug"]: a.get("text") for a in treatment["agents"]}
            refs = []
            for plan in plans[treatment["id"]]:
                resources.append(medication_request(ctx, treatment, plan, texts[plan.drug], reason))
                resources.extend(
                    medication_administrations(ctx, treatment, plan, texts[plan.drug], reason)
                )
                refs.append(ctx.reference("MedicationRequest", plan.request_key))
            course_refs[treatment["id"]] = refs
        else:
            resources.append(map_procedure(ctx, treatment, reason))
            course_refs[treatment["id"]] = [ctx.reference("Procedure", treatment["id"])]
    for event in record.get("adverse_events", []):
        resources.append(map_adverse_event(ctx, event, treatments, plans, trial))
    for treatment in record.get("treatments", []):
        for index, response in enumerate(treatment.get("responses", [])):
            resources.append(
                map_response(
                    ctx,
                    treatment,
                    index,
                    response,
                    course_refs[treatment["id"]],
                    _reason_of(treatment, primary),
                    treatments,
                    plans,
                )
            )
    for index, age in enumerate(record["patient"].get("ages", [])):
        resources.append(map_age(ctx, index, age))
    for index, item in enumerate(record["patient"].get("history", [])):
        resources.append(map_history(ctx, index, item))
    if "follow_up" in record:
        resources.append(map_follow_up(ctx, record["follow_up"], primary, treatments, plans))
    for index, item in enumerate(record.get("observations", [])):
        resources.append(map_measurement(ctx, index, item, treatments, plans))
    entries = [_entry(ctx, r) for r in resources]
    claimed = claim_mcode_profiles(
        ctx, [e["resource"] for e in entries], [e["fullUrl"] for e in entries]
    )
    for entry, resource in zip(entries, claimed, strict=True):
        entry["resource"] = resource
    targets = [e["fullUrl"] for e in entries]
    provenance = map_provenance(ctx, record, targets, _recorded(record, options))
    entries.append(_entry(ctx, provenance))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    return ConversionResult(bundle, warnings)


__all__ = ["ConversionOptions", "ConversionResult", "convert_record", "provenance_id"]
