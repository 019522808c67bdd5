"""The adapter's own extensions, for facts FHIR R4/R5 has no element for.

Each is documented in mappings/README.md (URL, sub-extensions, types). They are complex
extensions under the configurable canonical base, so that counts, lines of therapy, pauses and
relative times travel in a structured, machine-readable place instead of only in free text.
"""

from __future__ import annotations

from typing import Any

from adapter.mapping.computed import Computed
from adapter.mapping.context import MappingContext
from adapter.mapping.courses import AgentPlan, resolve_relative
from adapter.mapping.datatypes import ucum_quantity
from adapter.mapping.schedule import DoseStep

COUNT_FIELDS = ("cycles", "doses", "sessions", "weeks", "months", "days")


def _sub(url: str, value_type: str, value: Any) -> dict[str, Any]:
    return {"url": url, f"value{value_type}": value}


def treatment_course(ctx: MappingContext, treatment: dict[str, Any]) -> dict[str, Any] | None:
    """``treatment-course``: line of therapy, course name, counts, kind and trial flag."""
    subs: list[dict[str, Any]] = [
        _sub("courseId", "String", treatment["id"]),
        _sub("kind", "Code", treatment["kind"]),
    ]
    if "line" in treatment:
        subs.append(_sub("line", "PositiveInt", treatment["line"]))
    if "name" in treatment:
        subs.append(_sub("name", "String", treatment["name"]))
    counts = treatment.get("counts", {})
    subs.extend(_sub(name, "PositiveInt", counts[name]) for name in COUNT_FIELDS if name in counts)
    if counts.get("approximate"):
        subs.append(_sub("approximate", "Boolean", True))
    if treatment.get("in_trial"):
        subs.append(_sub("inTrial", "Boolean", True))
    subs.extend(_sub("with", "String", other) for other in treatment.get("with", []))
    if "stop_reason" in treatment:
        subs.append(_sub("stopReason", "Code", treatment["stop_reason"]))
    if "end_before" in treatment:
        subs.append(_sub("endBefore", "DateTime", treatment["end_before"]))
    return {"url": ctx.extension_url("treatment-course"), "extension": subs}


def relative_time(
    ctx: MappingContext,
    relative: dict[str, Any],
    name: str = "relative-time",
) -> dict[str, Any]:
    """``relative-time``: a time the source gives only relative to a treatment."""
    subs: list[dict[str, Any]] = [_sub("treatment", "String", relative["treatment"])]
    for field, kind in (
        ("days", "Integer"),
        ("weeks", "Integer"),
        ("months", "Integer"),
        ("after_dose", "PositiveInt"),
        ("after_cycle", "PositiveInt"),
    ):
        if field in relative:
            subs.append(_sub(_camel(field), kind, relative[field]))
    if "text" in relative:
        subs.append(_sub("text", "String", relative["text"]))
    return {"url": ctx.extension_url(name), "extension": subs}


def stated_or_relative(
    ctx: MappingContext,
    stated: str | None,
    relative: dict[str, Any] | None,
    treatments: dict[str, dict[str, Any]],
    plans: dict[str, list[AgentPlan]],
    name: str = "relative-time",
) -> tuple[str | None, dict[str, Any] | None, Computed | None]:
    """``(date, extension, computed)`` for a time given as a date, relative to a treatment, or both.

    The stated date wins; otherwise a date is computed only from a day-precise anchor, and
    comes with how it was computed so the caller marks it (see computed.py). The relative
    statement itself is always kept.
    """
    if relative is None:
        return stated, None, None
    computed = None
    when = stated
    if when is None:
        resolved = resolve_relative(relative, treatments, plans)
        if resolved is not None:
            when, computed = resolved
    return when, relative_time(ctx, relative, name), computed


def interruption(ctx: MappingContext, pause: dict[str, Any]) -> dict[str, Any]:
    """``interruption``: one pause of a course and its restart."""
    subs: list[dict[str, Any]] = []
    if "start" in pause:
        subs.append(_sub("start", "DateTime", pause["start"]))
    if "end" in pause:
        subs.append(_sub("restart", "DateTime", pause["end"]))
    for field, kind in (
        ("after_dose", "PositiveInt"),
        ("duration_days", "PositiveInt"),
        ("duration_months", "PositiveInt"),
        ("reason", "String"),
    ):
        if field in pause:
            subs.append(_sub(_camel(field), kind, pause[field]))
    if "adverse_event" in pause:
        subs.append(
            _sub("adverseEvent", "Reference", ctx.reference("AdverseEvent", pause["adverse_event"]))
        )
    if "restart_schedule" in pause and "text" in pause["restart_schedule"]:
        subs.append(_sub("restartSchedule", "String", pause["restart_schedule"]["text"]))
    return {"url": ctx.extension_url("interruption"), "extension": subs}


def dose_position(ctx: MappingContext, number: int, cycle: int, day: int) -> dict[str, Any]:
    """``dose-position``: which administration of the course this is (number, cycle, day)."""
    return {
        "url": ctx.extension_url("dose-position"),
        "extension": [
            _sub("number", "PositiveInt", number),
            _sub("cycle", "PositiveInt", cycle),
            _sub("day", "PositiveInt", day),
        ],
    }


def schedule_anchor(ctx: MappingContext, anchor: dict[str, Any]) -> dict[str, Any]:
    """``schedule-anchor``: a date the source states for a cycle's first day or for one dose."""
    subs: list[dict[str, Any]] = []
    for field in ("cycle", "dose"):
        if field in anchor:
            subs.append(_sub(field, "PositiveInt", anchor[field]))
    subs.append(_sub("date", "DateTime", anchor["date"]))
    if "text" in anchor:
        subs.append(_sub("text", "String", anchor["text"]))
    return {"url": ctx.extension_url("schedule-anchor"), "extension": subs}


def dose_step(ctx: MappingContext, step: DoseStep) -> dict[str, Any]:
    """``dose-step``: which administrations of the course a dose level covers, and how it
    was stated (a lead-in dose, the course dose, a change; a change given as a fraction)."""
    subs: list[dict[str, Any]] = [
        _sub("kind", "Code", step.kind),
        _sub("fromDose", "PositiveInt", step.first),
    ]
    if step.last is not None:
        subs.append(_sub("toDose", "PositiveInt", step.last))
    if step.fraction is not None:
        subs.append(_sub("fraction", "Decimal", step.fraction))
    if step.text:
        subs.append(_sub("text", "String", step.text))
    return {"url": ctx.extension_url("dose-step"), "extension": subs}


def radiation(ctx: MappingContext, details: dict[str, Any]) -> dict[str, Any]:
    """``radiation-dose``: total dose per site and number of fractions."""
    subs: list[dict[str, Any]] = []
    if "total_dose" in details:
        total = details["total_dose"]
        subs.append(_sub("totalDose", "Quantity", ucum_quantity(total["value"], total["unit"])))
    if "fractions" in details:
        subs.append(_sub("fractions", "PositiveInt", details["fractions"]))
    subs.extend(_sub("site", "String", site) for site in details.get("sites", []))
    return {"url": ctx.extension_url("radiation-dose"), "extension": subs}


def transplant(ctx: MappingContext, details: dict[str, Any]) -> dict[str, Any]:
    """``stem-cell-transplant``: donor, stem cell source, conditioning, GVHD prophylaxis."""
    subs: list[dict[str, Any]] = []
    for field in ("type", "donor", "stem_cell_source", "conditioning_intensity"):
        if field in details:
            subs.append(_sub(_camel(field), "Code", details[field]))
    for field in ("donor_text", "conditioning", "gvhd_prophylaxis"):
        if field in details:
            subs.append(_sub(_camel(field), "String", details[field]))
    if "cd34_dose" in details:
        subs.append(_sub("cd34Dose", "Decimal", details["cd34_dose"]))
    return {"url": ctx.extension_url("stem-cell-transplant"), "extension": subs}


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.capitalize() for part in rest)
