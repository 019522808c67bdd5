"""Plans every drug course once: which resources it becomes and the keys they get.

Adverse events, responses and provenance all need to point at the administrations of a course;
computing the plan once, before any resource is built, gives every mapper the same keys.

The plan also keeps apart what the record states from what the adapter fills in: a dose or a
route taken from a named regimen, a dose given as a fraction of another, a dose date from the
schedule. Each filled value carries a :class:`~adapter.mapping.computed.Computed` note, which
the mappers turn into the ``computed`` extension.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from adapter.mapping.computed import Computed
from adapter.mapping.datatypes import number
from adapter.mapping.schedule import (
    Anchor,
    Dose,
    DoseStep,
    Restart,
    expand_schedule,
    regimen,
)
from adapter.record.dates import PartialDate, Precision


@dataclass(frozen=True)
class AgentPlan:
    """One agent of one course: its MedicationRequest key and its administrations."""

    treatment_id: str
    drug: str
    request_key: str
    doses: tuple[Dose, ...] | None
    """Expanded doses, or None when the course is kept as one administration record per step."""
    dose: dict[str, Any] | None
    route: str | None
    schedule: dict[str, Any] | None
    position: int = 1
    """1-based place of the agent in its course, so combinations keep their order."""
    steps: tuple[DoseStep, ...] = ()
    """Dose levels of the course in order (a lead-in dose, the course dose, later changes)."""
    route_computed: Computed | None = None
    """Set when the route comes from the named regimen rather than from the source."""
    dose_computed: Computed | None = None
    """Set when the course dose comes from the named regimen rather than from the source."""
    max_dose: dict[str, Any] | None = None
    """The highest dose reached, when the source gives only that (incremental dosing)."""
    problem: str | None = None
    """Why a bounded schedule was not expanded: the stated dates and counts contradict it."""

    @cached_property
    def administration_keys(self) -> tuple[str, ...]:
        """Keys of the MedicationAdministrations of this agent, in dose (or step) order."""
        if self.doses is not None:
            return tuple(f"{self.request_key}.d{dose.number}" for dose in self.doses)
        if len(self.steps) > 1:
            return tuple(f"{self.request_key}.s{n}" for n in range(1, len(self.steps) + 1))
        return (self.request_key,)


def _day(value: str | None) -> bool:
    return value is not None and PartialDate.parse(value).precision is Precision.DAY


def course_status(treatment: dict[str, Any]) -> str:
    """The record's status of a course; a stop reason alone says the course was stopped."""
    if "status" in treatment:
        return str(treatment["status"])
    if "stop_reason" in treatment or "stop_reason_text" in treatment:
        return "stopped"
    return "unknown"


def _words(quantity: dict[str, Any]) -> str:
    return f"{number(quantity['value'])} {quantity['unit']}"


def _effective_agent(
    agent: dict[str, Any], treatment: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Computed]]:
    """The agent with schedule, dose and route filled from its course or its named regimen.

    Only a regimen the record names (the source names the schedule or protocol) fills
    anything, and each filled field is returned with how it was computed.
    """
    merged = dict(agent)
    computed: dict[str, Computed] = {}
    schedule = agent.get("schedule") or treatment.get("schedule")
    if schedule:
        merged["schedule"] = schedule
    key = schedule.get("regimen") if schedule else None
    named = regimen(key) if key else None
    if named and named["drug"] == agent["drug"]:
        for field in ("dose", "route", "initial_doses"):
            if field not in merged and field in named:
                merged[field] = named[field]
                computed[field] = Computed(
                    "regimen", f"{field.replace('_', ' ')} of the named regimen {key}"
                )
    return merged, computed


def dose_steps(
    agent: dict[str, Any], computed: dict[str, Computed], counts: dict[str, Any] | None
) -> tuple[DoseStep, ...]:
    """The dose levels of an agent's course: lead-in doses, the course dose, later changes."""
    steps: list[DoseStep] = [
        DoseStep("initial", n, n, q, computed.get("initial_doses"))
        for n, q in enumerate(agent.get("initial_doses", []), start=1)
    ]
    steps.append(
        DoseStep("maintenance", len(steps) + 1, None, agent.get("dose"), computed.get("dose"))
    )
    for change in sorted(agent.get("dose_changes", []), key=lambda c: c["from_dose"]):
        previous = steps[-1].quantity
        quantity = change.get("dose")
        how = None
        if quantity is None and previous is not None and "fraction" in change:
            value = float(previous["value"]) * float(change["fraction"])
            quantity = {"value": round(value, 6), "unit": previous["unit"]}
            how = Computed(
                "dose-fraction",
                f"{number(change['fraction'])} of the previous dose {_words(previous)}, "
                "as the source gives the new dose only as a fraction",
            )
        steps.append(
            DoseStep(
                "change",
                change["from_dose"],
                None,
                quantity,
                how,
                change.get("fraction"),
                change.get("text"),
            )
        )
    exact = counts and not counts.get("approximate") and counts.get("doses")
    bounded = []
    for index, step in enumerate(steps):
        last = steps[index + 1].first - 1 if index + 1 < len(steps) else (exact or None)
        if step.kind == "initial":
            last = step.first
        bounded.append(
            DoseStep(
                step.kind,
                step.first,
                last,
                step.quantity,
                step.computed,
                step.fraction,
                step.text,
            )
        )
    return tuple(bounded)


def _restarts(treatment: dict[str, Any]) -> list[Restart] | None:
    """Restarts after each pause, or None when a pause leaves the later dates unknown.

    Each pause must say after which dose it began and, to the day, when the course restarted.
    """
    restarts = []
    for pause in treatment.get("interruptions", []):
        if "after_dose" not in pause or not _day(pause.get("end")):
            return None
        restarts.append(
            Restart(
                pause["after_dose"],
                PartialDate.parse(pause["end"]).to_date(),
                pause.get("restart_schedule"),
            )
        )
    return restarts


def _anchors(treatment: dict[str, Any]) -> list[Anchor]:
    return [
        Anchor(PartialDate.parse(a["date"]).to_date(), a.get("cycle"), a.get("dose"))
        for a in treatment.get("anchors", [])
    ]


def plan_treatment(treatment: dict[str, Any]) -> list[AgentPlan]:
    """Plans for the agents of one drug course (empty for non-drug treatments)."""
    plans = []
    counts = treatment.get("counts")
    restarts = _restarts(treatment)
    for position, raw_agent in enumerate(treatment.get("agents", []), start=1):
        agent, computed = _effective_agent(raw_agent, treatment)
        steps = dose_steps(agent, computed, counts)
        doses = None
        problem = None
        if restarts is not None:
            exact_doses = counts is not None and "doses" in counts and not counts.get("approximate")
            if not restarts or exact_doses or _day(treatment.get("end")):
                expansion = expand_schedule(
                    treatment.get("start"),
                    treatment.get("end"),
                    agent.get("schedule"),
                    counts,
                    steps,
                    anchors=_anchors(treatment),
                    restarts=restarts,
                    end_before=treatment.get("end_before"),
                )
                doses, problem = expansion.doses, expansion.problem
        maintenance = next(s for s in steps if s.kind == "maintenance")
        plans.append(
            AgentPlan(
                treatment_id=treatment["id"],
                drug=agent["drug"],
                request_key=f"{treatment['id']}.{agent['drug']}",
                doses=tuple(doses) if doses else None,
                dose=agent.get("dose"),
                route=agent.get("route"),
                schedule=agent.get("schedule"),
                position=position,
                steps=steps,
                route_computed=computed.get("route"),
                dose_computed=maintenance.computed,
                max_dose=agent.get("max_dose"),
                problem=problem,
            )
        )
    return plans


def plan_courses(record: dict[str, Any]) -> dict[str, list[AgentPlan]]:
    """Plans of every drug course of a record, by treatment id."""
    return {t["id"]: plan_treatment(t) for t in record.get("treatments", []) if t["kind"] == "drug"}


def _relative_words(relative: dict[str, Any]) -> str:
    if "days" in relative:
        return f"{relative['days']} days after the start of {relative['treatment']}"
    if "weeks" in relative:
        return f"{relative['weeks']} weeks after the start of {relative['treatment']}"
    return f"the date of dose {relative['after_dose']} of {relative['treatment']}"


def resolve_relative(
    relative: dict[str, Any],
    treatments: dict[str, dict[str, Any]],
    plans: dict[str, list[AgentPlan]],
) -> tuple[str, Computed] | None:
    """A day-precise date for a relative time, only when its anchor is known to the day.

    ``days`` and ``weeks`` count from the treatment's start; ``after_dose`` is the date of that
    dose when the course was expanded. Months are never converted: month lengths would make
    up a day. The date comes with how it was computed, for the ``computed`` marker.
    """
    treatment = treatments.get(relative["treatment"])
    if treatment is None:
        return None
    start = treatment.get("start")
    when: str | None = None
    basis = ""
    if "days" in relative and _day(start) and start:
        when = str(PartialDate.parse(start).plus_days(relative["days"]))
        basis = f"{_relative_words(relative)} (stated start {start})"
    elif "weeks" in relative and _day(start) and start:
        when = str(PartialDate.parse(start).plus_days(7 * relative["weeks"]))
        basis = f"{_relative_words(relative)} (stated start {start})"
    elif "after_dose" in relative:
        for plan in plans.get(treatment["id"], []):
            if plan.doses and len(plan.doses) >= relative["after_dose"]:
                dose = plan.doses[relative["after_dose"] - 1]
                when = dose.when.isoformat()
                how = "computed from the schedule" if dose.date_computed else "stated"
                basis = f"{_relative_words(relative)} ({when}, {how})"
                break
    if when is None:
        return None
    return when, Computed("relative-time", basis)
