"""Non-drug therapies → Procedure: photopheresis, phototherapy, TSEB, radiotherapy, transplant."""

from __future__ import annotations

from typing import Any

from adapter import terminology
from adapter.mapping import extensions
from adapter.mapping.context import MappingContext
from adapter.mapping.courses import course_status
from adapter.mapping.datatypes import annotation, concept, period

_STATUS = {
    "completed": "completed",
    "stopped": "stopped",
    "ongoing": "in-progress",
    "unknown": "unknown",
}


def procedure_concept(treatment: dict[str, Any]) -> str:
    """The most specific concept of procedures.json the record's facts support.

    A concept may say which facts refine which kind (``refines``: the transplant type and stem
    cell source of an allogeneic peripheral blood transplant); the concept of the course's
    kind is used when no refinement matches every stated fact.
    """
    kind = str(treatment["kind"])
    details = treatment.get("transplant", {})
    for key, entry in terminology.table("procedures").items():
        refines = entry.attributes.get("refines")
        if not refines or refines.get("kind") != kind:
            continue
        wanted = {k: v for k, v in refines.items() if k != "kind"}
        if all(details.get(field) == value for field, value in wanted.items()):
            return key
    return kind


def map_procedure(
    ctx: MappingContext,
    treatment: dict[str, Any],
    primary_dx: str | None,
) -> dict[str, Any]:
    """One Procedure per course; sessions, dose and donor sit in documented extensions."""
    ext = [extensions.treatment_course(ctx, treatment)]
    ext += [extensions.interruption(ctx, p) for p in treatment.get("interruptions", [])]
    if "radiation" in treatment:
        ext.append(extensions.radiation(ctx, treatment["radiation"]))
    if "transplant" in treatment:
        ext.append(extensions.transplant(ctx, treatment["transplant"]))
    if "start_after" in treatment:
        ext.append(extensions.relative_time(ctx, treatment["start_after"], "relative-start"))
    resource: dict[str, Any] = {
        "resourceType": "Procedure",
        "extension": ext,
        "identifier": [ctx.identifier("Procedure", treatment["id"])],
        "status": _STATUS[course_status(treatment)],
    }
    if "stop_reason" in treatment:
        resource["statusReason"] = concept(
            "stop-reasons", treatment["stop_reason"], treatment.get("stop_reason_text")
        )
    elif "stop_reason_text" in treatment:
        resource["statusReason"] = {"text": treatment["stop_reason_text"]}
    resource["code"] = concept("procedures", procedure_concept(treatment), treatment.get("name"))
    resource["subject"] = ctx.patient_reference
    start, end = treatment.get("start"), treatment.get("end")
    prefix = "occurrence" if ctx.version == "R5" else "performed"
    if start and start == end:
        resource[f"{prefix}DateTime"] = start
    elif start or end:
        resource[f"{prefix}Period"] = period(start, end, ctx.extension_url("period-end"))
    if primary_dx:
        key = "reason" if ctx.version == "R5" else "reasonReference"
        ref = ctx.reference("Condition", primary_dx)
        resource[key] = [{"reference": ref}] if ctx.version == "R5" else [ref]
    notes = []
    schedule = treatment.get("schedule")
    if schedule and "text" in schedule:
        notes.append(annotation(f"Schedule as written: {schedule['text']}"))
    if "note" in treatment:
        notes.append(annotation(treatment["note"]))
    if notes:
        resource["note"] = notes
    return resource
