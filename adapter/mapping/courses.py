"""Plans every drug course once: which resources it becomes and the keys they get.

Adverse events, responses and provenance all need to point at the administrations of a course;
computing the plan once, before any resource is built, gives every mapper the same keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from adapter.mapping.schedule import Dose, expand, regimen
from adapter.record.dates import PartialDate, Precision


@dataclass(frozen=True)
class AgentPlan:
    """One agent of one course: its MedicationRequest key and its administrations."""

    treatment_id: str
    drug: str
    request_key: str
    doses: tuple[Dose, ...] | None
    """Expanded doses, or None when the course is kept as one administration record."""
    dose: dict[str, Any] | None
    route: str | None
    schedule: dict[str, Any] | None
    position: int = 1
    """1-based place of the agent in its course, so combinations keep their order."""

    @cached_property
    def administration_keys(self) -> tuple[str, ...]:
        """Keys of the MedicationAdministrations of this agent, in dose order."""
        if self.doses is None:
            return (self.request_key,)
        return tuple(f"{self.request_key}.d{dose.number}" for dose in self.doses)


def _day(value: str | None) -> bool:
    return value is not None and PartialDate.parse(value).precision is Precision.DAY


def _effective_agent(agent: dict[str, Any], treatment: dict[str, Any]) -> dict[str, Any]:
    """The agent with schedule, dose and route filled from its course or its named regimen."""
    merged = dict(agent)
    schedule = agent.get("schedule") or treatment.get("schedule")
    if schedule:
        merged["schedule"] = schedule
    named = regimen(schedule["regimen"]) if schedule and "regimen" in schedule else None
    if named and named["drug"] == agent["drug"]:
        for field in ("dose", "route", "initial_doses"):
            if field not in merged and field in named:
                merged[field] = named[field]
    return merged


def _expand_with_interruptions(
    treatment: dict[str, Any], agent: dict[str, Any]
) -> list[Dose] | None:
    """Doses across pauses: each pause must say after which dose it began and, to the day, when
    the course restarted; otherwise the dates after it are unknown and nothing is expanded."""
    pauses = treatment.get("interruptions", [])
    counts = treatment.get("counts")
    schedule = agent.get("schedule")
    if not pauses:
        return expand(
            treatment.get("start"),
            treatment.get("end"),
            schedule,
            counts,
            agent.get("dose"),
            agent.get("initial_doses"),
        )
    if not all("after_dose" in p and _day(p.get("end")) for p in pauses):
        return None
    exact_doses = counts is not None and "doses" in counts and not counts.get("approximate")
    if not exact_doses and not _day(treatment.get("end")):
        return None
    doses: list[Dose] = []
    segment_start = treatment.get("start")
    remaining = dict(counts or {})
    remaining.pop("cycles", None)  # cycle counts are ambiguous across a restart
    for pause in [*pauses, None]:
        limit = pause["after_dose"] - len(doses) if pause else None
        segment_counts = dict(remaining)
        if limit is not None:
            total = remaining.get("doses")
            segment_counts["doses"] = min(limit, total - len(doses)) if total else limit
        elif "doses" in remaining:
            segment_counts["doses"] = remaining["doses"] - len(doses)
            if segment_counts["doses"] <= 0:
                break
        segment = expand(
            segment_start,
            treatment.get("end"),
            schedule,
            segment_counts,
            agent.get("dose"),
            agent.get("initial_doses") if not doses else None,
        )
        if segment is None:
            return None
        offset = len(doses)
        doses.extend(Dose(d.when, d.number + offset, d.cycle, d.day, d.quantity) for d in segment)
        if pause:
            segment_start = pause["end"]
            schedule = pause.get("restart_schedule") or schedule
    return doses


def plan_treatment(treatment: dict[str, Any]) -> list[AgentPlan]:
    """Plans for the agents of one drug course (empty for non-drug treatments)."""
    plans = []
    for position, raw_agent in enumerate(treatment.get("agents", []), start=1):
        agent = _effective_agent(raw_agent, treatment)
        doses = _expand_with_interruptions(treatment, agent)
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
            )
        )
    return plans


def plan_courses(record: dict[str, Any]) -> dict[str, list[AgentPlan]]:
    """Plans of every drug course of a record, by treatment id."""
    return {t["id"]: plan_treatment(t) for t in record.get("treatments", []) if t["kind"] == "drug"}


def resolve_relative(
    relative: dict[str, Any],
    treatments: dict[str, dict[str, Any]],
    plans: dict[str, list[AgentPlan]],
) -> str | None:
    """A day-precise date for a relative time, only when its anchor is known to the day.

    ``days`` and ``weeks`` count from the treatment's start; ``after_dose`` is the date of that
    dose when the course was expanded. Months are never converted: month lengths would make
    up a day.
    """
    treatment = treatments.get(relative["treatment"])
    if treatment is None:
        return None
    start = treatment.get("start")
    if "days" in relative and _day(start) and start:
        return str(PartialDate.parse(start).plus_days(relative["days"]))
    if "weeks" in relative and _day(start) and start:
        return str(PartialDate.parse(start).plus_days(7 * relative["weeks"]))
    if "after_dose" in relative:
        for plan in plans.get(treatment["id"], []):
            if plan.doses and len(plan.doses) >= relative["after_dose"]:
                when = plan.doses[relative["after_dose"] - 1].when
                return str(PartialDate.from_date(when))
    return None
