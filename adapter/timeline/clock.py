"""Places a record's dates and relative times on one axis, as intervals no narrower than the source.

A date known to the month or year becomes the whole month or year; a time relative to a course
('day +150', 'after dose 3') is placed from that course's start and keeps its uncertainty; a
start or end the source does not give is estimated only from what it does give (the other end
and the stated length, or the adapter's own dose plan), and then marked as estimated. The same
rules serve a calendar axis (days are date ordinals) and a relative one (days from the start
of an anchor course), so a record with no calendar date at all still gets a picture.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from adapter.mapping.courses import AgentPlan, plan_courses, plan_treatment
from adapter.mapping.schedule import phases_of
from adapter.record.dates import PartialDate, Precision
from adapter.timeline.model import When
from adapter.timeline.wording import relative_text

MONTH_DAYS = 365.25 / 12
"""A month in days, for lengths and offsets the source states in months."""
_FAKE_START = date(2001, 1, 1)
"""Start given to a course on a relative axis to expand its schedule: only offsets are kept."""


def _partial(text: Any) -> PartialDate | None:
    if not isinstance(text, str):
        return None
    try:
        return PartialDate.parse(text)
    except ValueError:
        return None


def _schedule(treatment: dict[str, Any]) -> dict[str, Any] | None:
    """The first schedule of the course that describes dose days."""
    candidates = [a.get("schedule") for a in treatment.get("agents", [])]
    candidates.append(treatment.get("schedule"))
    for schedule in candidates:
        if not schedule:
            continue
        try:
            if phases_of(schedule):
                return dict(schedule)
        except KeyError:  # an unknown regimen: records are validated, but stay drawable
            continue
    return None


def _slack(treatment: dict[str, Any], duration: float) -> float:
    """How far a length from counts may be off: half a month for a length in months (itself
    rounded), a tenth for an approximate count ('about 6 cycles'), nothing otherwise."""
    counts = treatment.get("counts") or {}
    slack = 0.0
    if "months" in counts and not ("days" in counts or "weeks" in counts):
        slack = MONTH_DAYS / 2
    if counts.get("approximate"):
        slack = max(slack, 0.1 * duration)
    return slack


def _plan(treatment: dict[str, Any]) -> list[AgentPlan]:
    """The adapter's plan of one course, or none when the course cannot be planned."""
    try:
        return plan_treatment(treatment)
    except (KeyError, TypeError, ValueError):
        return []


class Clock:
    """Places dates and relative times on one axis: calendar (anchor None) or relative."""

    def __init__(self, record: dict[str, Any], anchor: str | None) -> None:
        self.anchor = anchor
        self.treatments = {t["id"]: t for t in record.get("treatments", []) if "id" in t}
        self.plans: dict[str, list[AgentPlan]] = {}
        if anchor is None:
            usable = [t for t in record.get("treatments", []) if "id" in t and "kind" in t]
            try:
                self.plans = plan_courses({"treatments": usable})
            except (KeyError, TypeError, ValueError):  # unvalidated input: draw without doses
                self.plans = {}
        self._starts: dict[str, When | None] = {}
        self._busy: set[str] = set()

    @property
    def calendar(self) -> bool:
        return self.anchor is None

    def date(self, text: Any) -> When | None:
        """A calendar date as the interval of days it may denote (calendar axis only)."""
        partial = _partial(text) if self.calendar else None
        if partial is None:
            return None
        lo = partial.earliest().toordinal()
        if partial.precision is Precision.DAY:
            return When(lo, lo, str(partial))
        return When(lo, partial.latest().toordinal() + 1, str(partial))

    def relative(self, relative: Any) -> When | None:
        """A time relative to a course, when that course's start is placed."""
        if not isinstance(relative, dict) or relative.get("treatment") not in self.treatments:
            return None
        tid = relative["treatment"]
        start = self.start(tid)
        if start is None:
            return None
        text = relative_text(relative)
        if "days" in relative:
            lo = hi = float(relative["days"])
        elif "weeks" in relative:
            lo = hi = 7.0 * relative["weeks"]
        elif "months" in relative:  # "24 months" is itself rounded to the month
            centre = relative["months"] * MONTH_DAYS
            lo, hi = max(0.0, centre - MONTH_DAYS / 2), centre + MONTH_DAYS / 2
        elif "after_dose" in relative:
            days = self.dose_days(tid)
            number = relative["after_dose"]
            if len(days) >= number:
                return self._stated(When(days[number - 1], days[number - 1], text))
            offsets = self.dose_offsets(self.treatments[tid], number)
            if offsets is None:
                return None
            lo = hi = offsets[-1]
        elif "after_cycle" in relative:
            offset = self.cycle_end(self.treatments[tid], relative["after_cycle"])
            if offset is None:
                return None
            lo = hi = offset
        else:
            return None
        return self._stated(When(start.lo + lo, start.hi + hi, text, start.estimated))

    def _stated(self, when: When) -> When:
        """On a calendar axis a relative time is labelled by the date it gives (≈ if not exact)."""
        if not self.calendar:
            return when
        middle = date.fromordinal(int(when.mid))
        text = middle.isoformat() if when.exact else f"≈{middle:%Y-%m}"
        return When(when.lo, when.hi, text, when.estimated)

    def start(self, tid: str) -> When | None:
        """When a course started: stated, relative to another course, or back from its end."""
        if tid in self._starts:
            return self._starts[tid]
        if tid in self._busy or tid not in self.treatments:
            return None
        self._busy.add(tid)
        treatment = self.treatments[tid]
        when: When | None
        if not self.calendar and tid == self.anchor:
            when = When(0.0, 0.0, "start")
        else:
            when = self.date(treatment.get("start"))
        if when is None and treatment.get("start_after"):
            when = self.relative(treatment["start_after"])
        if when is None:
            end = self.date(treatment.get("end"))
            duration = self.duration(treatment)
            if end is not None and duration is not None:
                slack = _slack(treatment, duration)
                lo, hi = end.lo - duration - slack, end.hi - duration + slack
                when = When(lo, hi, "estimated", True)
        self._busy.discard(tid)
        self._starts[tid] = when
        return when

    def end(self, tid: str) -> When | None:
        """When a course ended, no later than a stated ``end_before`` (exclusive)."""
        when = self._end(tid)
        before = self.date(self.treatments[tid].get("end_before"))
        if when is None or before is None or when.hi < before.lo:
            return when
        hi = before.lo - 1
        return When(min(when.lo, hi), hi, when.text, when.estimated)

    def _end(self, tid: str) -> When | None:
        treatment = self.treatments[tid]
        given = self.date(treatment.get("end"))
        if given is not None:
            return given
        start = self.start(tid)
        if start is None:
            return None
        duration = self.duration(treatment)
        counts = treatment.get("counts") or {}
        stated_length = any(k in counts for k in ("days", "weeks", "months"))
        doses = self.dose_days(tid)
        if doses and not stated_length:
            return When(doses[-1], doses[-1], "last dose")
        if duration is None:
            return None
        slack = _slack(treatment, duration)
        return When(start.lo + duration - slack, start.hi + duration + slack, "estimated", True)

    def duration(self, treatment: dict[str, Any]) -> float | None:
        """Course length from its counts, when they state one."""
        counts = treatment.get("counts") or {}
        if "days" in counts:
            return float(counts["days"])
        if "weeks" in counts:
            return 7.0 * float(counts["weeks"])
        if "months" in counts:
            return float(counts["months"]) * MONTH_DAYS
        if "cycles" in counts:
            cycles = self.cycle_end(treatment, counts["cycles"])
            if cycles is not None:
                return cycles
        if "doses" in counts:
            offsets = self.dose_offsets(treatment, counts["doses"])
            if offsets:
                return offsets[-1] + 1
        return None

    @staticmethod
    def cycle_end(treatment: dict[str, Any], number: int) -> float | None:
        """Days from the course start to the end of its ``number``-th cycle."""
        phases = phases_of(_schedule(treatment))
        if not phases:
            return None
        total, count = 0.0, 0
        for phase in phases:
            repeats = 0
            while phase.cycles is None or repeats < phase.cycles:
                if count >= number:
                    return total
                total += phase.cycle_length_days
                count += 1
                repeats += 1
        return total if count >= number else None

    @staticmethod
    def dose_offsets(treatment: dict[str, Any], number: int) -> list[float] | None:
        """Nominal days from the start of the first ``number`` doses of the course's schedule,
        only up to its first pause (after a pause the dates depend on the restart)."""
        pauses = treatment.get("interruptions") or []
        if pauses and number > pauses[0].get("after_dose", 0):
            return None
        fake = {
            **treatment,
            "start": _FAKE_START.isoformat(),
            "counts": {"doses": number},
            "interruptions": [],
        }
        fake.pop("end", None)
        for plan in _plan(fake):
            if plan.doses and len(plan.doses) >= number:
                return [float((d.when - _FAKE_START).days) for d in plan.doses[:number]]
        return None

    def dose_days(self, tid: str) -> list[float]:
        """Days of the expanded doses of a course (the adapter's plan), sorted."""
        days: set[float] = set()
        if self.calendar:
            for plan in self.plans.get(tid, []):
                days.update(float(d.when.toordinal()) for d in plan.doses or ())
            return sorted(days)
        treatment = self.treatments[tid]
        start = self.start(tid)
        if start is None or not start.exact or treatment.get("interruptions"):
            return []
        fake = {**treatment, "start": _FAKE_START.isoformat()}
        fake.pop("end", None)
        counts = treatment.get("counts") or {}
        length = counts.get("days") or 7 * counts.get("weeks", 0)
        if length and not counts.get("approximate"):  # a stated length bounds the schedule
            fake["end"] = date.fromordinal(_FAKE_START.toordinal() + length - 1).isoformat()
        for plan in _plan(fake):
            days.update(start.lo + (d.when - _FAKE_START).days for d in plan.doses or ())
        return sorted(days)
