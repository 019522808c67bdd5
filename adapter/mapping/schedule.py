"""Expands a course's schedule into dose dates, when, and only when, the facts allow it.

A course is expanded dose by dose only when its start is known to the day and the number of
doses is bounded (a cycle or dose count, or an end known to the day). Anything less would
invent administration dates, so such a course stays one record over its known period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from adapter.mappings import frequency_days, regimens
from adapter.record.dates import PartialDate, Precision


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


def regimen(key: str) -> dict[str, Any]:
    """A named regimen of mappings/regimens.json."""
    return dict(regimens()[key])


def phases_of(schedule: dict[str, Any] | None) -> tuple[Phase, ...] | None:
    """The cycle phases a schedule describes, or None when it does not describe dose days.

    A frequency becomes a repeating cycle of its period: 3 times a week is days 1, 3, 5 of 7-day
    cycles (the convention in mappings/regimens.json), every two weeks is day 1 of 14.
    """
    if not schedule:
        return None
    if "regimen" in schedule:
        return phases_of(
            {k: v for k, v in regimen(schedule["regimen"]).items() if k in {"phases", "frequency"}}
        )
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
    return None


def _is_day(value: str | None) -> bool:
    return value is not None and PartialDate.parse(value).precision is Precision.DAY


def expand(
    start: str | None,
    end: str | None,
    schedule: dict[str, Any] | None,
    counts: dict[str, Any] | None,
    dose: dict[str, Any] | None = None,
    initial_doses: list[dict[str, Any]] | None = None,
) -> list[Dose] | None:
    """Dose dates of a course, or None when expansion would have to invent something.

    Bounds, in order of trust: a dose count, a cycle count, an end known to the day. An
    approximate count ("about 6 cycles") does not bound anything.
    """
    phases = phases_of(schedule)
    if phases is None or not _is_day(start) or start is None:
        return None
    counts = counts or {}
    exact = not counts.get("approximate")
    max_doses = counts.get("doses") if exact else None
    max_cycles = counts.get("cycles") if exact else None
    last_day = PartialDate.parse(end).to_date() if end and _is_day(end) else None
    if max_doses is None and max_cycles is None and last_day is None:
        return None
    first_day = PartialDate.parse(start).to_date()
    leading = list(initial_doses or [])
    doses: list[Dose] = []
    cycle_start = first_day
    cycle_number = 0
    for phase in phases:
        repeats = 0
        while phase.cycles is None or repeats < phase.cycles:
            cycle_number += 1
            repeats += 1
            if max_cycles is not None and cycle_number > max_cycles:
                return doses
            for day in phase.days:
                when = cycle_start + timedelta(days=day - 1)
                if last_day is not None and when > last_day:
                    return doses
                quantity = leading.pop(0) if leading else dose
                doses.append(Dose(when, len(doses) + 1, cycle_number, day, quantity))
                if max_doses is not None and len(doses) >= max_doses:
                    return doses
            cycle_start += timedelta(days=phase.cycle_length_days)
            if len(doses) > 5000:  # a record can't ask for more; guards against runaway input
                return doses
    return doses
