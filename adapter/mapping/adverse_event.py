"""Adverse events → AdverseEvent, in the R4 shape or the R5 shape.

Grade travels in the HL7 AE clinical-research grade extension; severity is derived from the
grade (1 mild, 2 moderate, 3-5 severe) only when a grade is given. A relative onset becomes a
date only when its anchor is known to the day; otherwise it stays structured in an extension.
"""

from __future__ import annotations

from typing import Any

from adapter import terminology
from adapter.mapping import extensions
from adapter.mapping.context import MappingContext
from adapter.mapping.courses import AgentPlan, resolve_relative
from adapter.mapping.datatypes import annotation, concept, data_absent, text_concept
from adapter.mappings import load_json

GRADE_EXTENSION = {
    "R4": "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition/ae-grade",
    "R5": "http://hl7.org/fhir/uv/ae-research-ig/StructureDefinition/ae-grade",
}
_SEVERITY_BY_GRADE = {1: "mild", 2: "moderate", 3: "severe", 4: "severe", 5: "severe"}


def attribute(name: str, value: str) -> dict[str, Any]:
    """CodeableConcept for a record enum, via mappings/adverse-event-attributes.json.

    The alias file says which verified concept of ae-grades.json a value means; values with
    no HL7 code (Naranjo as a named method, 'unrelated') travel as text alone.
    """
    aliases = load_json("adverse-event-attributes.json")
    key = aliases[name][value]
    text = aliases["text"].get(f"{name}.{value}")
    if key is None:
        return text_concept(text or value.replace("_", " "))
    return terminology.lookup("ae-grades", key).codeable_concept(text)


def _suspect_instances(
    ctx: MappingContext,
    suspect: dict[str, Any],
    treatments: dict[str, dict[str, Any]],
    plans: dict[str, list[AgentPlan]],
) -> list[dict[str, Any]]:
    """References to what the patient actually received of the suspect treatment."""
    treatment = treatments[suspect["treatment"]]
    if treatment["kind"] != "drug":
        return [ctx.reference("Procedure", treatment["id"])]
    refs: list[dict[str, Any]] = []
    for plan in plans.get(treatment["id"], []):
        if "drug" in suspect and plan.drug != suspect["drug"]:
            continue
        refs.extend(
            ctx.reference("MedicationAdministration", key) for key in plan.administration_keys
        )
    return refs


def _causality(ctx: MappingContext, suspect: dict[str, Any]) -> list[dict[str, Any]]:
    if "causality" not in suspect and "method" not in suspect:
        return []
    entry: dict[str, Any] = {}
    if ctx.version == "R5":
        if "method" in suspect:
            entry["assessmentMethod"] = attribute("method", suspect["method"])
        if "causality" in suspect:
            entry["entityRelatedness"] = attribute("causality", suspect["causality"])
    else:
        if "causality" in suspect:
            entry["assessment"] = attribute("causality", suspect["causality"])
        if "method" in suspect:
            entry["method"] = attribute("method", suspect["method"])
    return [entry]


def map_adverse_event(
    ctx: MappingContext,
    event: dict[str, Any],
    treatments: dict[str, dict[str, Any]],
    plans: dict[str, list[AgentPlan]],
    study_key: str | None,
) -> dict[str, Any]:
    """One AdverseEvent in the shape of the target FHIR version."""
    r5 = ctx.version == "R5"
    ext: list[dict[str, Any]] = []
    if "grade" in event:
        grade = terminology.lookup("ae-grades", f"grade_{event['grade']}")
        ext.append(
            {"url": GRADE_EXTENSION[ctx.version], "valueCodeableConcept": grade.codeable_concept()}
        )
    onset = event.get("onset")
    if onset is None and "onset_after" in event:
        onset = resolve_relative(event["onset_after"], treatments, plans)
        ext.append(extensions.relative_time(ctx, event["onset_after"], "relative-onset"))
    resolution = event.get("end")
    if resolution is None and "end_after" in event:
        resolution = resolve_relative(event["end_after"], treatments, plans)
        ext.append(extensions.relative_time(ctx, event["end_after"], "relative-resolution"))
    resource: dict[str, Any] = {"resourceType": "AdverseEvent"}
    if ext:
        resource["extension"] = ext
    identifier = ctx.identifier("AdverseEvent", event["id"])
    resource["identifier"] = [identifier] if r5 else identifier
    if r5:
        resource["status"] = "completed"
    resource["actuality"] = "actual"
    code_key = "code" if r5 else "event"
    resource[code_key] = concept("adverse-events", event["term"], event["text"])
    resource["subject"] = ctx.patient_reference
    if r5:
        if onset and resolution:
            resource["occurrencePeriod"] = {"start": onset, "end": resolution}
        elif onset:
            resource["occurrenceDateTime"] = onset
    elif onset:
        resource["date"] = onset
    else:
        resource["_date"] = data_absent("unknown")
    if "serious" in event:
        resource["seriousness"] = attribute(
            "seriousness", "serious" if event["serious"] else "non-serious"
        )
    if "grade" in event and not r5:
        resource["severity"] = attribute("severity", _SEVERITY_BY_GRADE[event["grade"]])
    if "outcome" in event:
        outcome = attribute("outcome", event["outcome"])
        resource["outcome"] = [outcome] if r5 else outcome
    suspects = []
    for suspect in event.get("suspects", []):
        causality = _causality(ctx, suspect)
        for instance in _suspect_instances(ctx, suspect, treatments, plans):
            entry: dict[str, Any] = (
                {"instanceReference": instance} if r5 else {"instance": instance}
            )
            if causality:
                entry["causality"] = causality[0] if r5 else causality
            suspects.append(entry)
    if suspects:
        resource["suspectEntity"] = suspects
    if study_key:
        resource["study"] = [ctx.reference("ResearchStudy", study_key)]
    notes = []
    if "management" in event:
        notes.append(annotation(f"Management: {event['management']}"))
    if event.get("actions"):
        notes.append(
            annotation(
                "Action taken with the suspect treatment: "
                + ", ".join(a.replace("_", " ") for a in event["actions"])
            )
        )
    if "note" in event:
        notes.append(annotation(event["note"]))
    if notes:
        if r5:
            resource["note"] = notes
        else:
            # R4 AdverseEvent has no note element; the words travel in a documented extension.
            resource.setdefault("extension", []).extend(
                {"url": ctx.extension_url("note"), "valueString": n["text"]} for n in notes
            )
    if event.get("actions"):
        resource.setdefault("extension", []).extend(
            {"url": ctx.extension_url("action-taken"), "valueCode": a} for a in event["actions"]
        )
    return resource
