"""Labs, scores, stated ages and treatment responses → Observation.

Values keep the unit fixed by mappings/terminology/observations.json; an observation whose date
is given only relative to a treatment gets that date when the anchor is known to the day, and
otherwise carries the relative time in an extension instead of a made-up date.
"""

from __future__ import annotations

from typing import Any

from adapter import terminology
from adapter.mapping import extensions
from adapter.mapping.computed import set_primitive
from adapter.mapping.context import MappingContext
from adapter.mapping.courses import AgentPlan
from adapter.mapping.datatypes import (
    UCUM,
    annotation,
    coding,
    concept,
    number,
    text_concept,
    ucum_quantity,
)
from adapter.mappings import follow_up_statuses, response_trends

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def _timing(
    ctx: MappingContext,
    item: dict[str, Any],
    treatments: dict[str, dict[str, Any]],
    plans: dict[str, list[AgentPlan]],
    resource: dict[str, Any],
) -> None:
    """effectiveDateTime as stated, else computed from a day-precise anchor and marked so; the
    relative statement itself is always kept."""
    when, relative, computed = extensions.stated_or_relative(
        ctx, item.get("date"), item.get("after"), treatments, plans
    )
    if when:
        set_primitive(ctx, resource, "effectiveDateTime", when, computed)
    if relative:
        resource.setdefault("extension", []).append(relative)


def map_measurement(
    ctx: MappingContext,
    index: int,
    item: dict[str, Any],
    treatments: dict[str, dict[str, Any]],
    plans: dict[str, list[AgentPlan]],
) -> dict[str, Any]:
    """One lab value or score of ``observations``."""
    kind = terminology.lookup("observations", item["kind"])
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "extension": [{"url": ctx.extension_url("concept-key"), "valueCode": item["kind"]}],
        "identifier": [ctx.identifier("Observation", f"obs{index + 1}")],
        "status": "final",
        "category": [
            {
                "coding": [
                    coding(OBSERVATION_CATEGORY, kind.attributes.get("category", "laboratory"))
                ]
            }
        ],
        "code": kind.codeable_concept(),
        "subject": ctx.patient_reference,
    }
    _timing(ctx, item, treatments, plans, resource)
    if "value" in item:
        unit = kind.attributes.get("unit")
        if unit:
            resource["valueQuantity"] = ucum_quantity(item["value"], unit, item.get("comparator"))
        else:
            resource["valueQuantity"] = {"value": number(item["value"])}
            if item.get("comparator"):
                resource["valueQuantity"]["comparator"] = item["comparator"]
    else:
        resource["valueString"] = item["text"]
    notes = []
    if "text" in item and "value" in item:
        notes.append(annotation(item["text"]))
    if "context" in item:
        notes.append(annotation(f"context: {item['context'].replace('_', ' ')}"))
    if notes:
        resource["note"] = notes
    return resource


def map_age(ctx: MappingContext, index: int, age: dict[str, Any]) -> dict[str, Any]:
    """A stated age, kept as the source gave it, with the event it refers to."""
    entry = terminology.table("observations").get("age")
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "extension": [{"url": ctx.extension_url("age-refers-to"), "valueCode": age["refers_to"]}],
        "identifier": [ctx.identifier("Observation", f"age{index + 1}")],
        "status": "final",
        "code": entry.codeable_concept() if entry else text_concept("Age"),
        "subject": ctx.patient_reference,
    }
    if "date" in age:
        resource["effectiveDateTime"] = age["date"]
    resource["valueQuantity"] = {
        "value": age["years"],
        "unit": "years",
        "system": UCUM,
        "code": "a",
    }
    notes = []
    if age["refers_to"] != "other":  # "other" is explained by the age's own note
        notes.append(annotation(f"age at {age['refers_to'].replace('_', ' ')}"))
    if "note" in age:
        notes.append(annotation(age["note"]))
    if notes:
        resource["note"] = notes
    return resource


def _disease_status_code(ctx: MappingContext, code: dict[str, Any]) -> dict[str, Any]:
    """R4, in a cancer record: the observation's own words with LOINC 97509-4 (cancer disease
    status) before them, the code mCODE's CancerDiseaseStatus fixes; otherwise the words alone."""
    if ctx.version != "R4" or ctx.cancer_condition is None:  # L-HES is not a cancer
        return code
    status = terminology.lookup("observations", "cancer_disease_status").codeable_concept()
    return {"coding": [*status["coding"], *code.get("coding", [])], "text": code["text"]}


def map_response(
    ctx: MappingContext,
    treatment: dict[str, Any],
    index: int,
    response: dict[str, Any],
    course_refs: list[dict[str, Any]],
    primary_dx: str | None,
    treatments: dict[str, dict[str, Any]],
    plans: dict[str, list[AgentPlan]],
) -> dict[str, Any]:
    """A response assessment of one compartment, tied to the course it is attributed to."""
    compartment = response["compartment"]
    code_entry = terminology.table("responses").get(f"{compartment}_response")
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "extension": [
            {"url": ctx.extension_url("concept-key"), "valueCode": response.get("category", "")}
        ]
        if "category" in response
        else [],
        "identifier": [ctx.identifier("Observation", f"{treatment['id']}.response{index + 1}")],
        "status": "final",
        "code": _disease_status_code(
            ctx,
            code_entry.codeable_concept()
            if code_entry
            else text_concept(f"{compartment.capitalize()} response to treatment"),
        ),
        "subject": ctx.patient_reference,
    }
    if course_refs:
        key = "basedOn" if treatment["kind"] == "drug" else "partOf"
        resource[key] = course_refs
    if primary_dx:
        resource["focus"] = [ctx.reference("Condition", primary_dx)]
    _timing(ctx, response, treatments, plans, resource)
    if "category" in response:
        value = concept("responses", response["category"], response.get("text"))
        trend = response_trends().get(response["category"])
        if trend and ctx.version == "R4" and ctx.cancer_condition is not None:
            # The trend mCODE's disease status states (improved, stable, worsened) beside
            # the response category: a second coding of coarser granularity, same meaning.
            value.setdefault("coding", []).extend(
                c.as_fhir() for c in terminology.lookup("responses", trend).emitted
            )
        resource["valueCodeableConcept"] = value
    else:
        resource["valueString"] = response["text"]
    if not resource["extension"]:
        del resource["extension"]
    return resource


def map_follow_up(
    ctx: MappingContext,
    follow_up: dict[str, Any],
    primary_dx: str | None,
    treatments: dict[str, dict[str, Any]],
    plans: dict[str, list[AgentPlan]],
) -> dict[str, Any]:
    """The last reported disease status, coded with mCODE's disease-status SNOMED codes."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "extension": [],
        "identifier": [ctx.identifier("Observation", "followup")],
        "status": "final",
        "code": _disease_status_code(ctx, text_concept("Disease status at last follow-up")),
        "subject": ctx.patient_reference,
    }
    if primary_dx:
        resource["focus"] = [ctx.reference("Condition", primary_dx)]
    _timing(ctx, follow_up, treatments, plans, resource)
    status = follow_up.get("status")
    if status:
        resource["extension"].append({"url": ctx.extension_url("concept-key"), "valueCode": status})
        key = follow_up_statuses()[status]
        words = status.replace("_", " ")
        resource["valueCodeableConcept"] = concept("responses", key) if key else text_concept(words)
    else:
        resource["valueString"] = follow_up.get("text", "not stated")
    if "text" in follow_up:
        resource["note"] = [annotation(follow_up["text"])]
    if not resource["extension"]:
        del resource["extension"]
    return resource


_HISTORY_CATEGORY = {"social": "social-history"}


def map_history(ctx: MappingContext, index: int, item: dict[str, Any]) -> dict[str, Any]:
    """A history statement (family history, smoking...) kept as the source's words."""
    kind = item.get("kind", "personal")
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "extension": [{"url": ctx.extension_url("history-kind"), "valueCode": kind}],
        "identifier": [ctx.identifier("Observation", f"history{index + 1}")],
        "status": "final",
    }
    if kind in _HISTORY_CATEGORY:
        resource["category"] = [{"coding": [coding(OBSERVATION_CATEGORY, _HISTORY_CATEGORY[kind])]}]
    resource["code"] = text_concept(f"{kind.capitalize()} history")
    resource["subject"] = ctx.patient_reference
    if "date" in item:
        resource["effectiveDateTime"] = item["date"]
    resource["valueString"] = item["text"]
    return resource
