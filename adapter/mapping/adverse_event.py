"""Adverse events → AdverseEvent, in the R4 shape or the R5 shape.

Grade travels in the HL7 AE clinical-research grade extension; severity is derived from the
grade (1 mild, 2 moderate, 3-5 severe) only when a grade is given. A relative onset becomes a
date only when its anchor is known to the day; otherwise it stays structured in an extension.
"""

from __future__ import annotations

from typing import Any

from adapter import terminology
from adapter.mapping import extensions
from adapter.mapping.computed import set_primitive
from adapter.mapping.context import MappingContext
from adapter.mapping.courses import AgentPlan
from adapter.mapping.datatypes import annotation, concept, data_absent, period, text_concept
from adapter.mapping.research_study import trial_reference
from adapter.mappings import adverse_event_attributes

GRADE_EXTENSION = {
    "R4": "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition/ae-grade",
    "R5": "http://hl7.org/fhir/uv/ae-research-ig/StructureDefinition/ae-grade",
}
_SEVERITY_BY_GRADE = {1: "mild", 2: "moderate", 3: "severe", 4: "severe", 5: "severe"}


def attribute(
    name: str, value: str, version: str = "R5", text: str | None = None
) -> dict[str, Any]:
    """CodeableConcept for a record enum, via mappings/adverse-event-attributes.json.

    The alias file says which verified concept of ae-grades.json a value means; values with
    no HL7 code (WHO-UMC or clinical judgement as a named method) travel as text alone. R4
    output uses the capitalised R4 codes where R4 and THO differ. ``text`` (the source's own
    words) replaces the table's text when given.
    """
    aliases = adverse_event_attributes()
    table = aliases["r4"] if version == "R4" and name in aliases["r4"] else aliases
    key = table[name][value]
    text = text or aliases["text"].get(f"{name}.{value}")
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
    """The source's attribution of the event to the suspect, with its words as the text."""
    if "causality" not in suspect and "method" not in suspect:
        return []
    entry: dict[str, Any] = {}
    words = suspect.get("text")
    if ctx.version == "R5":
        if "method" in suspect:
            entry["assessmentMethod"] = attribute("method", suspect["method"], ctx.version)
        if "causality" in suspect:
            entry["entityRelatedness"] = attribute(
                "causality", suspect["causality"], ctx.version, words
            )
    else:
        if "causality" in suspect:
            assessment = attribute("causality", suspect["causality"], ctx.version)
            if words and "coding" not in assessment:
                # A text-only R4 assessment (no spelling of the code passes both validators,
                # see attribute()) keeps the category's words as its text, so that the
                # category is not lost; the source's words go beside it.
                entry["extension"] = [
                    {"url": ctx.extension_url("causality-words"), "valueString": words}
                ]
            elif words:
                assessment = attribute("causality", suspect["causality"], ctx.version, words)
            entry["assessment"] = assessment
        if "method" in suspect:
            entry["method"] = attribute("method", suspect["method"], ctx.version)
    return [entry]


def _given_in_trial(event: dict[str, Any], treatments: dict[str, dict[str, Any]]) -> bool:
    """Whether a suspect of the event was given within the record's trial.

    An event belongs to a study only through a drug given in it: a rash on a later, non-trial
    drug is not an event of the trial the patient once took part in.
    """
    return any(treatments[s["treatment"]].get("in_trial") for s in event.get("suspects", []))


def map_adverse_event(
    ctx: MappingContext,
    event: dict[str, Any],
    treatments: dict[str, dict[str, Any]],
    plans: dict[str, list[AgentPlan]],
    trial: dict[str, Any] | None,
) -> dict[str, Any]:
    """One AdverseEvent in the shape of the target FHIR version."""
    r5 = ctx.version == "R5"
    ext: list[dict[str, Any]] = [
        {"url": ctx.extension_url("concept-key"), "valueCode": event["term"]}
    ]
    if "grade" in event:
        ext.append(
            {
                "url": GRADE_EXTENSION[ctx.version],
                "valueCodeableConcept": attribute("grade", str(event["grade"])),
            }
        )
    onset, onset_ext, onset_computed = extensions.stated_or_relative(
        ctx, event.get("onset"), event.get("onset_after"), treatments, plans, "relative-onset"
    )
    resolution, resolution_ext, resolution_computed = extensions.stated_or_relative(
        ctx, event.get("end"), event.get("end_after"), treatments, plans, "relative-resolution"
    )
    ext.extend(e for e in (onset_ext, resolution_ext) if e is not None)
    resource: dict[str, Any] = {"resourceType": "AdverseEvent", "extension": ext}
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
            occurrence = period(onset, resolution, ctx.extension_url("period-end"))
            for name, how in (("start", onset_computed), ("end", resolution_computed)):
                if name in occurrence:
                    set_primitive(ctx, occurrence, name, occurrence[name], how)
            resource["occurrencePeriod"] = occurrence
        elif onset:
            set_primitive(ctx, resource, "occurrenceDateTime", onset, onset_computed)
    elif onset:
        set_primitive(ctx, resource, "date", onset, onset_computed)
    else:
        resource["_date"] = data_absent("unknown")
    if "serious" in event:
        resource["seriousness"] = attribute(  # R4 and THO codes differ in case
            "seriousness", "serious" if event["serious"] else "non-serious", ctx.version
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
    if trial and _given_in_trial(event, treatments):
        resource["study"] = [trial_reference(trial)]
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
