"""Drug courses → one MedicationRequest per agent (the course) and its MedicationAdministrations.

The request carries what was planned (schedule, line, counts, pauses); the administrations
carry what was given: one per dose when the course can be expanded (see schedule.py), else one
over the known period. Combinations share a groupIdentifier, so CHOP stays one course.
"""

from __future__ import annotations

from typing import Any

from adapter import terminology
from adapter.mapping import extensions
from adapter.mapping.context import MappingContext
from adapter.mapping.courses import AgentPlan
from adapter.mapping.datatypes import (
    annotation,
    concept,
    data_absent,
    period,
    text_concept,
    ucum_quantity,
)
from adapter.record.dates import PartialDate

MCODE_MEDICATION_ADMINISTRATION = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-cancer-related-medication-administration"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

_REQUEST_STATUS = {
    "completed": "completed",
    "stopped": "stopped",
    "ongoing": "active",
    "unknown": "unknown",
}
_COURSE_ADMIN_STATUS = {
    "completed": "completed",
    "stopped": "stopped",
    "ongoing": "in-progress",
    "unknown": "unknown",
}
_PERIOD_UNITS = {"d": "d", "wk": "wk", "mo": "mo"}


def _medication(ctx: MappingContext, drug: str, text: str | None) -> dict[str, Any]:
    """medication[x]: CodeableConcept in R4, CodeableReference in R5."""
    value = concept("drugs", drug, text)
    if ctx.version == "R5":
        return {"medication": {"concept": value}}
    return {"medicationCodeableConcept": value}


def _dosage_quantity(dose: dict[str, Any] | None) -> dict[str, Any] | None:
    return ucum_quantity(dose["value"], dose["unit"]) if dose else None


def _route(route: str | None) -> dict[str, Any] | None:
    return concept("routes", route) if route else None


def _timing(
    ctx: MappingContext, schedule: dict[str, Any] | None, treatment: dict[str, Any]
) -> dict[str, Any] | None:
    """Timing.repeat for what maps cleanly (bounds and a plain frequency); phases stay in text."""
    repeat: dict[str, Any] = {}
    bounds = period(treatment.get("start"), treatment.get("end"), ctx.extension_url("period-end"))
    if bounds:
        repeat["boundsPeriod"] = bounds
    frequency = (schedule or {}).get("frequency")
    if frequency:
        repeat.update(
            frequency=frequency["times"],
            period=frequency["period"],
            periodUnit=_PERIOD_UNITS[frequency["period_unit"]],
        )
    return {"repeat": repeat} if repeat else None


def _stop_reason(treatment: dict[str, Any]) -> list[dict[str, Any]] | None:
    """statusReason: the coded reason with the source's words, or the words alone."""
    if "stop_reason" in treatment:
        return [
            concept("stop-reasons", treatment["stop_reason"], treatment.get("stop_reason_text"))
        ]
    if "stop_reason_text" in treatment:
        return [text_concept(treatment["stop_reason_text"])]
    return None


def _reasons(ctx: MappingContext, primary_dx: str | None) -> dict[str, Any]:
    if primary_dx is None:
        return {}
    reference = ctx.reference("Condition", primary_dx)
    if ctx.version == "R5":
        return {"reason": [{"reference": reference}]}
    return {"reasonReference": [reference]}


def _notes(treatment: dict[str, Any], schedule: dict[str, Any] | None) -> list[dict[str, str]]:
    notes = []
    if schedule and "text" in schedule:
        notes.append(annotation(f"Schedule as written: {schedule['text']}"))
    if "note" in treatment:
        notes.append(annotation(treatment["note"]))
    return notes


def medication_request(
    ctx: MappingContext,
    treatment: dict[str, Any],
    plan: AgentPlan,
    agent_text: str | None,
    primary_dx: str | None,
) -> dict[str, Any]:
    """The course of one agent, as planned and as far as it went."""
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "identifier": [ctx.identifier("MedicationRequest", plan.request_key)],
    }
    course_extensions = [extensions.treatment_course(ctx, treatment)]
    course_extensions += [
        extensions.interruption(ctx, p) for p in treatment.get("interruptions", [])
    ]
    if "start_after" in treatment:
        course_extensions.append(
            extensions.relative_time(ctx, treatment["start_after"], "relative-start")
        )
    course_extensions.append(
        {"url": ctx.extension_url("agent-position"), "valuePositiveInt": plan.position}
    )
    if plan.schedule and "regimen" in plan.schedule:
        course_extensions.append(
            {"url": ctx.extension_url("regimen"), "valueCode": plan.schedule["regimen"]}
        )
    resource["extension"] = course_extensions
    resource["status"] = _REQUEST_STATUS.get(treatment.get("status", "unknown"), "unknown")
    stop = _stop_reason(treatment)
    if stop:
        resource["statusReason"] = stop[0]
    resource["intent"] = "order"
    resource.update(_medication(ctx, plan.drug, agent_text))
    resource["subject"] = ctx.patient_reference
    resource.update(_reasons(ctx, primary_dx))
    if len(treatment.get("agents", [])) > 1:
        resource["groupIdentifier"] = ctx.identifier("RequestGroup", treatment["id"])
    notes = _notes(treatment, plan.schedule)
    if notes:
        resource["note"] = notes
    instruction: dict[str, Any] = {}
    if plan.schedule and "text" in plan.schedule:
        instruction["text"] = plan.schedule["text"]
    timing = _timing(ctx, plan.schedule, treatment)
    if timing:
        instruction["timing"] = timing
    route = _route(plan.route)
    if route:
        instruction["route"] = route
    quantity = _dosage_quantity(plan.dose)
    if quantity:
        instruction["doseAndRate"] = [{"doseQuantity": quantity}]
    if instruction:
        resource["dosageInstruction"] = [instruction]
    return resource


def _meets_mcode(ctx: MappingContext, resource: dict[str, Any], drug: str) -> bool:
    """Whether a resource meets mCODE STU4 CancerRelatedMedicationAdministration (an R4 IG).

    It needs an RxNorm-coded medication, a subject that is a cancer patient (the Patient
    carries a masked name for US Core), an effective time, a reason pointing at a cancer
    Condition (not L-HES), and a coded statusReason only together with status ``stopped``.
    """
    if ctx.version != "R4" or ctx.cancer_condition is None:
        return False
    has_rxnorm = terminology.lookup("drugs", drug).coding_in(RXNORM) is not None
    timed = "effectiveDateTime" in resource or "start" in resource.get("effectivePeriod", {})
    coded_reasons = any("coding" in r for r in resource.get("statusReason", []))
    return (
        has_rxnorm
        and timed
        and not (coded_reasons and resource["status"] != "stopped")
        and resource.get("reasonReference") == [ctx.reference("Condition", ctx.cancer_condition)]
    )


def _administration_shell(
    ctx: MappingContext,
    key: str,
    status: str,
    plan: AgentPlan,
    agent_text: str | None,
    primary_dx: str | None,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "identifier": [ctx.identifier("MedicationAdministration", key)],
        "status": status,
    }
    resource.update(_medication(ctx, plan.drug, agent_text))
    resource["subject"] = ctx.patient_reference
    return resource


def _finish_administration(
    ctx: MappingContext,
    resource: dict[str, Any],
    plan: AgentPlan,
    dose: dict[str, Any] | None,
    primary_dx: str | None,
    schedule_text: str | None,
) -> dict[str, Any]:
    resource.update(_reasons(ctx, primary_dx))
    resource["request"] = ctx.reference("MedicationRequest", plan.request_key)
    dosage: dict[str, Any] = {}
    if schedule_text:
        dosage["text"] = schedule_text
    route = _route(plan.route)
    if route:
        dosage["route"] = route
    quantity = _dosage_quantity(dose)
    if quantity:
        dosage["dose"] = quantity
        # mad-1: a dosage needs a dose or a rate, so without a known dose the route and the
        # schedule text stay on the MedicationRequest only
        resource["dosage"] = dosage
    if _meets_mcode(ctx, resource, plan.drug):
        resource = {
            "resourceType": resource["resourceType"],
            "meta": {"profile": [MCODE_MEDICATION_ADMINISTRATION]},
            **{k: v for k, v in resource.items() if k != "resourceType"},
        }
    return resource


def _effective(ctx: MappingContext, value: dict[str, Any] | str) -> dict[str, Any]:
    """effective[x] (R4) or occurence[x] (R5, spelled so by the specification)."""
    prefix = "occurence" if ctx.version == "R5" else "effective"
    if isinstance(value, str):
        return {f"{prefix}DateTime": value}
    return {f"{prefix}Period": value}


def medication_administrations(
    ctx: MappingContext,
    treatment: dict[str, Any],
    plan: AgentPlan,
    agent_text: str | None,
    primary_dx: str | None,
) -> list[dict[str, Any]]:
    """The administrations of one agent: per dose, or one over the known period."""
    schedule_text = (plan.schedule or {}).get("text")
    if plan.doses is not None:
        resources = []
        for dose in plan.doses:
            key = plan.administration_keys[dose.number - 1]
            resource = _administration_shell(ctx, key, "completed", plan, agent_text, primary_dx)
            resource = {
                "resourceType": resource.pop("resourceType"),
                "extension": [extensions.dose_position(ctx, dose.number, dose.cycle, dose.day)],
                **resource,
            }
            resource.update(_effective(ctx, str(PartialDate.from_date(dose.when))))
            resources.append(
                _finish_administration(
                    ctx, resource, plan, dose.quantity, primary_dx, schedule_text
                )
            )
        return resources
    status = _COURSE_ADMIN_STATUS.get(treatment.get("status", "unknown"), "unknown")
    resource = _administration_shell(ctx, plan.request_key, status, plan, agent_text, primary_dx)
    resource = {
        "resourceType": resource.pop("resourceType"),
        "extension": [extensions.treatment_course(ctx, treatment)],
        **resource,
    }
    stop = _stop_reason(treatment)
    if stop:
        resource["statusReason"] = stop
    known = period(treatment.get("start"), treatment.get("end"), ctx.extension_url("period-end"))
    resource.update(_effective(ctx, known or data_absent("unknown")))
    return [_finish_administration(ctx, resource, plan, plan.dose, primary_dx, schedule_text)]
