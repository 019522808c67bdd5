"""Expands a course's schedule into dose dates, when, and only when, the facts allow it.

A course is expanded dose by dose only when its start is known to the day and the number of
doses is bounded (a cycle or dose count, or an end known to the day). Anything less would
invent administration dates, so such a course stays one record over its known period.

Stated dates win. The schedule only fills the days between them: a date the source gives for a
cycle or a dose (an anchor) or for a restart after a pause re-anchors every later dose on it,
and no dose may fall after a stated end. When the stated counts cannot fit the schedule between
the stated dates, the course is not expanded at all (and the reason is reported), because any
set of dates would contradict the source somewhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from adapter.mapping.computed import Computed
from adapter.mappings import frequency_days, regimens
from adapter.record.dates import PartialDate, Precision

MAX_DOSES = 5000
"""A record can't ask for more; guards against runaway input."""


@dataclass(frozen=True)
class Phase:
    """Administration days within cycles of one length; ``cycles=None`` repeats to the end."""

    days: tuple[int, ...]
    cycle_length_days: int
    cycles: int | None = None


@dataclass(frozen=True)
class Dose:
    """One planned administration: its date, its 1-based number, cycle and day of cycle."""

    when: date
    number: int
    cycle: int
    day: int
    quantity: dict[str, Any] | None
    date_computed: Computed | None = None
    """How the date was computed; None when it is a date the source states."""
    dose_computed: Computed | None = None
    """How the quantity was computed (regimen default, stated fraction); None when stated."""


@dataclass(frozen=True)
class DoseStep:
    """One dose level of a course: the administrations from ``first`` to ``last`` get it."""

    kind: str
    """``initial`` (a lead-in dose), ``maintenance`` (the course's dose) or ``change``."""
    first: int
    last: int | None
    quantity: dict[str, Any] | None
    computed: Computed | None = None
    fraction: float | None = None
    text: str | None = None

    def covers(self, number: int) -> bool:
        """Whether administration ``number`` is given at this step's dose."""
        return self.first <= number and (self.last is None or number <= self.last)


@dataclass(frozen=True)
class Anchor:
    """A date the source states for the first day of a cycle or for one dose."""

    when: date
    cycle: int | None = None
    dose: int | None = None


@dataclass(frozen=True)
class Restart:
    """The first dose after a pause: it follows dose ``after_dose`` and is given on ``when``."""

    after_dose: int
    when: date
    schedule: dict[str, Any] | None = None


@dataclass(frozen=True)
class Expansion:
    """The doses of a course, or None with the reason when stated facts contradict each other."""

    doses: list[Dose] | None
    problem: str | None = None


def regimen(key: str) -> dict[str, Any]:
    """A named regimen of mappings/regimens.json."""
    return dict(regimens()[key])


def phases_of(schedule: dict[str, Any] | None) -> tuple[Phase, ...] | None:
    """The cycle phases a schedule describes, or None when it does not describe dose days.

    A frequency becomes a repeating cycle of its period: 3 times a week is days 1, 3, 5 of 7-day
    cycles (the convention in mappings/regimens.json), every two weeks is day 1 of 14. What the
    record states (phases, then a frequency) wins over what a named regimen would give.
    """
    if not schedule:
        return None
    if "phases" in schedule:
        return tuple(
            Phase(tuple(p["days"]), p["cycle_length_days"], p.get("cycles"))
            for p in schedule["phases"]
        )
    frequency = schedule.get("frequency")
    if frequency:
        unit_days = {"d": 1, "wk": 7}.get(frequency["period_unit"])
        key = f"{frequency['times']}/{frequency['period']}/{frequency['period_unit']}"
        days = frequency_days().get(key)
        if unit_days is None or days is None:
            return None  # monthly or unusual frequencies have no fixed day pattern
        return (Phase(tuple(days), unit_days * frequency["period"]),)
    if "regimen" in schedule:
        return phases_of(
            {k: v for k, v in regimen(schedule["regimen"]).items() if k in {"phases", "frequency"}}
        )
    return None


def describe_schedule(schedule: dict[str, Any] | None) -> str:
    """The schedule in words, for the basis of a computed date."""
    if not schedule:
        return "the schedule"
    if "phases" in schedule:
        return "the stated cycle days"
    frequency = schedule.get("frequency")
    if frequency:
        key = f"{frequency['times']}/{frequency['period']}/{frequency['period_unit']}"
        days = frequency_days().get(key, [])
        convention = f" (days {', '.join(map(str, days))} of each cycle)" if len(days) > 1 else ""
        return f"the stated frequency {key}{convention}"
    if "regimen" in schedule:
        return f"the regimen {schedule['regimen']}"
    return "the schedule"


def _is_day(value: str | None) -> bool:
    return value is not None and PartialDate.parse(value).precision is Precision.DAY


def _positions(phases: Sequence[Phase], cycle_base: int = 0) -> Iterator[tuple[int, int, int, int]]:
    """``(cycle, day, offset, cycle offset)`` of each dose the phases describe, in order.

    Offsets count days from day 1 of the first cycle, as the schedule plans them.
    """
    cycle = cycle_base
    cycle_offset = 0
    for phase in phases:
        repeats = 0
        while phase.cycles is None or repeats < phase.cycles:
            cycle += 1
            repeats += 1
            for day in phase.days:
                yield cycle, day, cycle_offset + day - 1, cycle_offset
            cycle_offset += phase.cycle_length_days


def _simple_steps(
    dose: dict[str, Any] | None, initial_doses: list[dict[str, Any]] | None
) -> tuple[DoseStep, ...]:
    leading = list(initial_doses or [])
    steps = [DoseStep("initial", i, i, q) for i, q in enumerate(leading, start=1)]
    steps.append(DoseStep("maintenance", len(leading) + 1, None, dose))
    return tuple(steps)


def _step_for(steps: Sequence[DoseStep], number: int) -> DoseStep | None:
    return next((s for s in steps if s.covers(number)), None)


def expand_schedule(
    start: str | None,
    end: str | None,
    schedule: dict[str, Any] | None,
    counts: dict[str, Any] | None,
    steps: Sequence[DoseStep] = (),
    *,
    anchors: Sequence[Anchor] = (),
    restarts: Sequence[Restart] = (),
    end_before: str | None = None,
) -> Expansion:
    """Dose dates of a course, re-anchored on every stated date, or why there are none.

    Bounds, in order of trust: a dose count, a cycle count (not across a restart, where cycles
    are ambiguous), an end known to the day. An approximate count ("about 6 cycles") bounds
    nothing. A stated end (at any precision) and ``end_before`` are hard limits: a count that
    would put a dose past them means the schedule was not followed as written, so nothing is
    expanded.
    """
    phases = phases_of(schedule)
    if phases is None or start is None or not _is_day(start):
        return Expansion(None)
    counts = counts or {}
    exact = not counts.get("approximate")
    max_doses = counts.get("doses") if exact else None
    max_cycles = counts.get("cycles") if exact and not restarts else None
    last_day = PartialDate.parse(end).to_date() if end and _is_day(end) else None
    if max_doses is None and max_cycles is None and last_day is None:
        return Expansion(None)
    limits: list[tuple[date, str]] = []
    if end:
        limits.append((PartialDate.parse(end).latest(), f"the stated end {end}"))
    if end_before:
        before = PartialDate.parse(end_before).earliest() - timedelta(days=1)
        limits.append((before, f"the stated bound: ended before {end_before}"))
    limit = min(limits) if limits else None
    counted = max_doses is not None or max_cycles is not None
    bound_words = f"{max_doses} doses" if max_doses is not None else f"{max_cycles} cycles"
    name = describe_schedule(schedule)
    steps = tuple(steps) or _simple_steps(None, None)
    by_cycle = {a.cycle: a for a in anchors if a.cycle is not None}
    by_dose = {a.dose: a for a in anchors if a.dose is not None}
    by_restart = {r.after_dose: r for r in restarts}

    positions = _positions(phases)
    ref_date = PartialDate.parse(start).to_date()
    ref_offset = 0
    ref_words = f"the stated start {start}"
    anchored_cycles: set[int] = set()
    doses: list[Dose] = []
    last_cycle = 0
    while len(doses) < MAX_DOSES:
        number = len(doses) + 1
        if max_doses is not None and number > max_doses:
            break
        restart = by_restart.get(number - 1)
        if restart and restart.schedule:
            restart_phases = phases_of(restart.schedule)
            if restart_phases is None:
                return Expansion(None)
            positions = _positions(restart_phases, cycle_base=last_cycle)
            name = describe_schedule(restart.schedule)
        position = next(positions, None)
        if position is None:
            break
        cycle, day, offset, cycle_offset = position
        if max_cycles is not None and cycle > max_cycles:
            break
        if restart:
            ref_date, ref_offset = restart.when, offset
            ref_words = f"the stated restart {restart.when.isoformat()}"
        if cycle in by_cycle and cycle not in anchored_cycles:
            anchored_cycles.add(cycle)
            ref_date, ref_offset = by_cycle[cycle].when, cycle_offset
            ref_words = f"the stated start of cycle {cycle} ({ref_date.isoformat()})"
        if number in by_dose:
            ref_date, ref_offset = by_dose[number].when, offset
            ref_words = f"the stated date of dose {number} ({ref_date.isoformat()})"
        when = ref_date + timedelta(days=offset - ref_offset)
        if doses and when <= doses[-1].when:
            return Expansion(
                None,
                f"{ref_words} is not after dose {number - 1} "
                f"({doses[-1].when.isoformat()}) on {name}",
            )
        if last_day is not None and when > last_day and not counted:
            break
        if limit is not None and when > limit[0]:
            return Expansion(
                None,
                f"{bound_words if counted else 'the doses'} of {name} do not fit before "
                f"{limit[1]}: dose {number} would fall on {when.isoformat()}",
            )
        date_computed = (
            None
            if offset == ref_offset
            else Computed("schedule", f"day {day} of cycle {cycle} of {name}, from {ref_words}")
        )
        step = _step_for(steps, number)
        doses.append(
            Dose(
                when,
                number,
                cycle,
                day,
                step.quantity if step else None,
                date_computed,
                step.computed if step else None,
            )
        )
        last_cycle = cycle
    return Expansion(doses)


def expand(
    start: str | None,
    end: str | None,
    schedule: dict[str, Any] | None,
    counts: dict[str, Any] | None,
    dose: dict[str, Any] | None = None,
    initial_doses: list[dict[str, Any]] | None = None,
) -> list[Dose] | None:
    """Dose dates of a course without anchors or pauses, or None when nothing can be expanded."""
    return expand_schedule(start, end, schedule, counts, _simple_steps(dose, initial_doses)).doses
