"""Drug courses → one MedicationRequest per agent (the course) and its MedicationAdministrations.

The request carries what was planned (schedule, line, counts, pauses); the administrations
carry what was given: one per dose when the course can be expanded (see schedule.py), else one
over the known period. Combinations share a groupIdentifier, so CHOP stays one course.
"""

from __future__ import annotations

from typing import Any

from adapter.mapping import extensions
from adapter.mapping.computed import Computed, mark, set_primitive
from adapter.mapping.context import MappingContext
from adapter.mapping.courses import AgentPlan, course_status
from adapter.mapping.datatypes import (
    annotation,
    concept,
    data_absent,
    period,
    text_concept,
    ucum_quantity,
)
from adapter.mapping.schedule import Dose, DoseStep

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
_DURATION_UNITS = {"days": "day", "weeks": "week", "months": "month"}
"""Course lengths in counts, finest first, and their keys in terminology/units.json."""
_ENDED = frozenset({"completed", "stopped"})
"""Only the length of a course that ended bounds its timing; an open course's is a snapshot."""


def _medication(ctx: MappingContext, drug: str, text: str | None) -> dict[str, Any]:
    """medication[x]: CodeableConcept in R4, CodeableReference in R5."""
    value = concept("drugs", drug, text)
    if ctx.version == "R5":
        return {"medication": {"concept": value}}
    return {"medicationCodeableConcept": value}


def _dosage_quantity(
    ctx: MappingContext, dose: dict[str, Any] | None, computed: Computed | None
) -> dict[str, Any] | None:
    """The dose as a Quantity, marked when the adapter computed it."""
    if not dose:
        return None
    return mark(ctx, ucum_quantity(dose["value"], dose["unit"]), computed)


def _route(ctx: MappingContext, plan: AgentPlan) -> dict[str, Any] | None:
    """The route, marked when it comes from the named regimen rather than the source."""
    if not plan.route:
        return None
    return mark(ctx, concept("routes", plan.route), plan.route_computed)


def _timing(
    ctx: MappingContext,
    schedule: dict[str, Any] | None,
    treatment: dict[str, Any],
    step: DoseStep | None = None,
) -> dict[str, Any] | None:
    """Timing.repeat for what maps cleanly (bounds, a count, a plain frequency); phases stay in
    text. The course's known period is the outer bound of every dose step."""
    repeat: dict[str, Any] = {}
    bounds = period(treatment.get("start"), treatment.get("end"), ctx.extension_url("period-end"))
    counts = treatment.get("counts", {})
    length = next((f for f in _DURATION_UNITS if f in counts), None)
    if bounds:
        repeat["boundsPeriod"] = bounds
    elif length and not counts.get("approximate") and course_status(treatment) in _ENDED:
        # no dates, but the stated length of a course that ended ("Treatment duration 4 wk")
        repeat["boundsDuration"] = ucum_quantity(counts[length], _DURATION_UNITS[length])
    if step is not None and step.last is not None:
        repeat["count"] = step.last - step.first + 1
    frequency = (schedule or {}).get("frequency")
    if frequency and not (step is not None and step.kind == "initial"):
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


def _dosage_instructions(
    ctx: MappingContext, treatment: dict[str, Any], plan: AgentPlan
) -> list[dict[str, Any]]:
    """One Dosage per dose step (sequence 1, 2, ...), or one Dosage when the dose never changes."""
    stepped = len(plan.steps) > 1
    instructions = []
    for index, step in enumerate(plan.steps if stepped else plan.steps[:1] or [None]):
        instruction: dict[str, Any] = {}
        if stepped and step is not None:
            instruction["extension"] = [extensions.dose_step(ctx, step)]
            instruction["sequence"] = index + 1
        text = (plan.schedule or {}).get("text") if index == 0 else (step.text if step else None)
        if text:
            instruction["text"] = text
        timing = _timing(ctx, plan.schedule, treatment, step if stepped else None)
        if timing:
            instruction["timing"] = timing
        route = _route(ctx, plan)
        if route:
            instruction["route"] = route
        if step is not None and step.quantity:
            quantity = _dosage_quantity(ctx, step.quantity, step.computed)
            instruction["doseAndRate"] = [{"doseQuantity": quantity}]
        elif not stepped and plan.max_dose:
            high = ucum_quantity(plan.max_dose["value"], plan.max_dose["unit"])
            instruction["doseAndRate"] = [{"doseRange": {"high": high}}]
        if instruction:
            instructions.append(instruction)
    return instructions


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
    course_extensions += [extensions.schedule_anchor(ctx, a) for a in treatment.get("anchors", [])]
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
    resource["status"] = _REQUEST_STATUS[course_status(treatment)]
    stop = _stop_reason(treatment)
    if stop:
        resource["statusReason"] = stop[0]
    resource["intent"] = "order"
    resource.update(_medication(ctx, plan.drug, agent_text))
    resource["subject"] = ctx.patient_reference
    if ctx.version == "R4":
        # No source names the prescriber; US Core (us-core-21, which mCODE's request profile
        # inherits) wants an order's requester present, so its absence is said, not invented.
        resource["requester"] = data_absent("unknown")
    resource.update(_reasons(ctx, primary_dx))
    if len(treatment.get("agents", [])) > 1:
        resource["groupIdentifier"] = ctx.identifier("RequestGroup", treatment["id"])
    notes = _notes(treatment, plan.schedule)
    if notes:
        resource["note"] = notes
    instructions = _dosage_instructions(ctx, treatment, plan)
    if instructions:
        resource["dosageInstruction"] = instructions
    return resource


def _administration_shell(
    ctx: MappingContext,
    key: str,
    status: str,
    plan: AgentPlan,
    agent_text: str | None,
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
    dose_computed: Computed | None,
    primary_dx: str | None,
    schedule_text: str | None,
) -> dict[str, Any]:
    resource.update(_reasons(ctx, primary_dx))
    resource["request"] = ctx.reference("MedicationRequest", plan.request_key)
    dosage: dict[str, Any] = {}
    if schedule_text:
        dosage["text"] = schedule_text
    route = _route(ctx, plan)
    if route:
        dosage["route"] = route
    quantity = _dosage_quantity(ctx, dose, dose_computed)
    if quantity:
        dosage["dose"] = quantity
        # mad-1: a dosage needs a dose or a rate, so without a known dose the route and the
        # schedule text stay on the MedicationRequest only
        resource["dosage"] = dosage
    return resource


def _effective_name(ctx: MappingContext, kind: str) -> str:
    """effective[x] (R4) or occurence[x] (R5, spelled so by the specification)."""
    prefix = "occurence" if ctx.version == "R5" else "effective"
    return f"{prefix}{kind}"


def _effective(ctx: MappingContext, value: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(value, str):
        return {_effective_name(ctx, "DateTime"): value}
    return {_effective_name(ctx, "Period"): value}


def _expanded_administrations(
    ctx: MappingContext,
    plan: AgentPlan,
    doses: tuple[Dose, ...],
    agent_text: str | None,
    primary_dx: str | None,
) -> list[dict[str, Any]]:
    """One administration per expanded dose; a date the schedule gave is marked computed."""
    schedule_text = (plan.schedule or {}).get("text")
    resources = []
    for dose in doses:
        key = plan.administration_keys[dose.number - 1]
        resource = _administration_shell(ctx, key, "completed", plan, agent_text)
        resource = {
            "resourceType": resource.pop("resourceType"),
            "extension": [extensions.dose_position(ctx, dose.number, dose.cycle, dose.day)],
            **resource,
        }
        set_primitive(
            ctx,
            resource,
            _effective_name(ctx, "DateTime"),
            dose.when.isoformat(),
            dose.date_computed,
        )
        resources.append(
            _finish_administration(
                ctx,
                resource,
                plan,
                dose.quantity,
                dose.dose_computed,
                primary_dx,
                schedule_text,
            )
        )
    return resources


def _step_effective(
    ctx: MappingContext, treatment: dict[str, Any], index: int, count: int, step: DoseStep | None
) -> dict[str, Any]:
    """When a dose step was given, as far as the stated dates say: the course start belongs to
    the first step and the course end to the last; the dates between steps are not stated."""
    start = treatment.get("start") if index == 0 else None
    end = treatment.get("end") if index == count - 1 else None
    single = step is not None and step.last == step.first
    if start and single and index == 0:
        return _effective(ctx, start)
    known = period(start, end, ctx.extension_url("period-end"))
    return _effective(ctx, known or data_absent("unknown"))


def medication_administrations(
    ctx: MappingContext,
    treatment: dict[str, Any],
    plan: AgentPlan,
    agent_text: str | None,
    primary_dx: str | None,
) -> list[dict[str, Any]]:
    """The administrations of one agent: per dose, else one over the known period per step."""
    if plan.doses is not None:
        return _expanded_administrations(ctx, plan, plan.doses, agent_text, primary_dx)
    schedule_text = (plan.schedule or {}).get("text")
    status = _COURSE_ADMIN_STATUS[course_status(treatment)]
    steps: list[DoseStep | None] = list(plan.steps) if len(plan.steps) > 1 else [None]
    resources = []
    for index, step in enumerate(steps):
        last = index == len(steps) - 1
        key = plan.administration_keys[index]
        resource = _administration_shell(
            ctx, key, status if last else "completed", plan, agent_text
        )
        own = [extensions.treatment_course(ctx, treatment)]
        if step is not None:
            own.append(extensions.dose_step(ctx, step))
        resource = {"resourceType": resource.pop("resourceType"), "extension": own, **resource}
        stop = _stop_reason(treatment)
        if stop and last:
            resource["statusReason"] = stop
        resource.update(_step_effective(ctx, treatment, index, len(steps), step))
        dose, computed = (
            (step.quantity, step.computed) if step is not None else (plan.dose, plan.dose_computed)
        )
        resources.append(
            _finish_administration(ctx, resource, plan, dose, computed, primary_dx, schedule_text)
        )
    return resources
