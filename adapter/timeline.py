"""Draws one case record as a swimmer-style timeline (SVG or PNG) a clinician reads at a glance.

One horizontal lane per line of therapy (unnumbered courses get a lane each), a bar per course,
response and adverse-event markers on the course they belong to, stagings, diagnosis, death and
the last follow-up on a top lane. Nothing is drawn more precisely than the source states it:

* a date known to the month or year covers its whole month or year, hatched;
* an end estimated from a duration (12 months, 6 cycles of a known schedule) is hatched too;
* a course still running at the report ends in an arrow; an end the source does not give fades;
* a time given only relative to a course ("day +150", "after the 2nd infusion") is placed only
  when that course's start is placed, and keeps the start's uncertainty.

When none of the record's events has a calendar date, the axis becomes "days/weeks/months from
the start of" the course that lets most events be placed. Whatever cannot be placed is listed
under the plot. matplotlib is imported only when a picture is drawn, so importing this module
is cheap.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapter import terminology
from adapter.mapping.courses import AgentPlan, plan_courses, plan_treatment
from adapter.mapping.schedule import phases_of
from adapter.record.dates import PartialDate, Precision

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["build_timeline", "render_timeline"]

_FORMATS = {".svg": "svg", ".png": "png"}
_FAKE_START = date(2001, 1, 1)
"""Start given to a course on a relative axis to expand its schedule: only offsets are kept."""
_MONTH_DAYS = 365.25 / 12
_EPOCH = date(1970, 1, 1).toordinal()
_TOP = "_milestones"
_OTHER = "_other"

# Okabe-Ito / Tol colours: distinguishable with the common colour-vision deficiencies.
_COURSE_COLOURS = {
    "drug": "#0072B2",
    "light": "#88CCEE",
    "radiation": "#CC79A7",
    "transplant": "#555555",
}
_HATCH_COLOURS = {
    "drug": "#0072B2",
    "light": "#2C7FB8",
    "radiation": "#A8528A",
    "transplant": "#333333",
}
_COURSE_KIND_LEGEND = {
    "drug": "drug course",
    "light": "photopheresis / phototherapy",
    "radiation": "radiotherapy",
    "transplant": "transplant / surgery",
}
_KIND_GROUP = {
    "drug": "drug",
    "photopheresis": "light",
    "puva": "light",
    "nbuvb": "light",
    "uva": "light",
    "phototherapy": "light",
    "tseb": "radiation",
    "radiotherapy": "radiation",
    "total_body_irradiation": "radiation",
    "stem_cell_transplant": "transplant",
    "surgery": "transplant",
}
_PROCEDURE_LABELS = {
    "photopheresis": "ECP",
    "puva": "PUVA",
    "nbuvb": "nbUVB",
    "uva": "UVA",
    "phototherapy": "phototherapy",
    "tseb": "TSEB",
    "radiotherapy": "radiotherapy",
    "total_body_irradiation": "TBI",
    "stem_cell_transplant": "stem cell transplant",
    "surgery": "surgery",
}
_POINT_KINDS = {"stem_cell_transplant", "surgery"}
_RESPONSE_COLOURS = {
    "CR": "#009E73",
    "PR": "#F0E442",
    "SD": "#BBBBBB",
    "PD": "#D55E00",
    "relapse": "#882255",
}
_RESPONSE_NAMES = {
    "CR": "CR  complete response",
    "PR": "PR  partial response",
    "SD": "SD  stable disease",
    "PD": "PD  progressive disease",
    "relapse": "relapse",
}
_GRADE_COLOURS = {1: "#FEE391", 2: "#FEC44F", 3: "#EC7014", 4: "#993404", 5: "#000000"}
_FOLLOW_UP = {
    "complete_remission": "CR",
    "partial_remission": "PR",
    "stable": "SD",
    "progression": "PD",
    "relapse": "relapse",
}
_COMPARTMENT_ORDER = ("overall", "skin", "blood", "nodes", "viscera")

_RC: dict[str, Any] = {
    "svg.hashsalt": "fhir-oncology-adapter-timeline",
    "svg.fonttype": "path",
    "date.epoch": "1970-01-01T00:00:00",
    "font.family": "DejaVu Sans",
    "hatch.linewidth": 0.7,
    "axes.unicode_minus": False,
}


# ---------------------------------------------------------------------------------------------
# Model: what is placed where, in days (calendar: date ordinals; relative: days from the anchor)


@dataclass(frozen=True)
class When:
    """A time as an interval of days: ``lo == hi`` when known to the day."""

    lo: float
    hi: float
    text: str
    estimated: bool = False

    @property
    def mid(self) -> float:
        return (self.lo + self.hi) / 2

    @property
    def exact(self) -> bool:
        return self.hi - self.lo < 0.5


@dataclass
class Course:
    """One treatment course as drawn."""

    tid: str
    label: str
    group: str
    start: When | None
    end: When | None
    ongoing: bool
    point: bool
    doses: list[float]
    summary: str
    reached: float | None = None
    """Latest time the course is known to have still been given (an event 'after dose N')."""


@dataclass
class Mark:
    """One event marker: a response, adverse event, staging or milestone."""

    kind: str
    row: str
    when: When | None
    label: str
    category: str | None = None
    grade: int | None = None
    until: When | None = None
    note: str = ""
    rank: int = 0


@dataclass
class Lane:
    """A lane of the plot: one line of therapy (or one unnumbered course), or a special lane."""

    label: str
    rows: list[str]


@dataclass
class Timeline:
    """Everything to draw, already placed."""

    calendar: bool
    axis_label: str
    unit_days: float
    title: str
    subtitle: str
    lanes: list[Lane]
    courses: dict[str, Course]
    marks: list[Mark]
    horizon: float | None
    footnotes: list[str] = field(default_factory=list)


def _strip_parens(text: str) -> str:
    return re.sub(r"\s*\([^)]*\)", "", text).strip() or text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _display(table: str, key: str) -> str:
    concept = terminology.table(table).get(key)
    return concept.display if concept else key.replace("_", " ")


def _partial(text: Any) -> PartialDate | None:
    if not isinstance(text, str):
        return None
    try:
        return PartialDate.parse(text)
    except ValueError:
        return None


def _drug_label(key: str) -> str:
    """A drug's display without remarks: 'corticosteroid, systemic (agent not stated)' reads
    'systemic corticosteroid'."""
    text = _strip_parens(_display("drugs", key))
    head, comma, tail = text.partition(", ")
    return f"{tail} {head}" if comma and "," not in tail else text


def _course_label(treatment: dict[str, Any], trial: str | None) -> str:
    kind = treatment.get("kind", "drug")
    if kind == "drug":
        agents = [_drug_label(a["drug"]) for a in treatment.get("agents", [])]
        name = treatment.get("name")
        if name and (len(name) <= 14 or not agents):
            label = str(name)
        else:
            label = " + ".join(dict.fromkeys(agents)) or str(name or "drug")
    elif kind == "stem_cell_transplant":
        kind_of = (treatment.get("transplant") or {}).get("type")
        label = {"allogeneic": "allo-HSCT", "autologous": "auto-HSCT"}.get(kind_of or "", "HSCT")
    elif kind == "radiotherapy" and (treatment.get("radiation") or {}).get("total_dose"):
        dose = treatment["radiation"]["total_dose"]
        label = f"radiotherapy {dose['value']:g} {dose['unit']}"
    else:
        label = _PROCEDURE_LABELS.get(kind, kind.replace("_", " "))
    if treatment.get("in_trial") and trial:
        label += f" ({trial})"
    return label


def _distinct(labels: dict[str, str], lines: dict[str, Any]) -> dict[str, str]:
    """Labels that would name two lanes or rows alike (a drug given again outside numbered
    lines, or twice in one line) get the course's ordinal: 'mogamulizumab (2nd course)'."""
    totals: dict[tuple[Any, str], int] = {}
    for tid, label in labels.items():
        totals[(lines[tid], label)] = totals.get((lines[tid], label), 0) + 1
    seen: dict[tuple[Any, str], int] = {}
    result = {}
    for tid, label in labels.items():
        key = (lines[tid], label)
        if totals[key] > 1:
            seen[key] = seen.get(key, 0) + 1
            n = seen[key]
            suffix = {1: "st", 2: "nd", 3: "rd"}.get(n if n < 20 else n % 10, "th")
            label = f"{label} ({n}{suffix} course)"
        result[tid] = label
    return result


def _counts_summary(treatment: dict[str, Any]) -> str:
    counts = treatment.get("counts") or {}
    about = "about " if counts.get("approximate") else ""
    parts = []
    for key, word in (
        ("cycles", "cycle"),
        ("doses", "dose"),
        ("sessions", "session"),
        ("days", "day"),
        ("weeks", "week"),
        ("months", "month"),
    ):
        if key in counts:
            n = counts[key]
            parts.append(f"{about}{n} {word}{'s' if n != 1 else ''}")
    return ", ".join(parts)


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


def _reason(relative: Any, labels: dict[str, str], clock: _Clock) -> str:
    """Why an event with this relative time (or none) could not be placed."""
    if not isinstance(relative, dict):
        return "no date"
    tid = str(relative.get("treatment"))
    course = labels.get(tid, "a course")
    if not any(k in relative for k in ("days", "weeks", "months", "after_dose", "after_cycle")):
        return f"time given in words only, relative to {course}"
    if clock.start(tid) is None:
        return f"{_rel_text(relative)} of {course}, whose start is not placed"
    return f"{_rel_text(relative)} of {course}: the schedule does not fix that day"


def _rel_text(relative: dict[str, Any]) -> str:
    if "days" in relative:
        return f"day {relative['days']:+d}"
    if "weeks" in relative:
        return f"week {relative['weeks']}"
    if "months" in relative:
        return f"month {relative['months']}"
    if "after_dose" in relative:
        return f"after dose {relative['after_dose']}"
    if "after_cycle" in relative:
        return f"after cycle {relative['after_cycle']}"
    return str(relative.get("text") or "relative time")


def _slack(treatment: dict[str, Any], duration: float) -> float:
    """How far a length from counts may be off: half a month for a length in months (itself
    rounded), a tenth for an approximate count ('about 6 cycles'), nothing otherwise."""
    counts = treatment.get("counts") or {}
    slack = 0.0
    if "months" in counts and not ("days" in counts or "weeks" in counts):
        slack = _MONTH_DAYS / 2
    if counts.get("approximate"):
        slack = max(slack, 0.1 * duration)
    return slack


def _plan(treatment: dict[str, Any]) -> list[AgentPlan]:
    """The adapter's plan of one course, or none when the course cannot be planned."""
    try:
        return plan_treatment(treatment)
    except (KeyError, TypeError, ValueError):
        return []


class _Clock:
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
        text = _rel_text(relative)
        if "days" in relative:
            lo = hi = float(relative["days"])
        elif "weeks" in relative:
            lo = hi = 7.0 * relative["weeks"]
        elif "months" in relative:  # "24 months" is itself rounded to the month
            centre = relative["months"] * _MONTH_DAYS
            lo, hi = max(0.0, centre - _MONTH_DAYS / 2), centre + _MONTH_DAYS / 2
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
            return float(counts["months"]) * _MONTH_DAYS
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


def _short_citation(source: dict[str, Any]) -> str:
    citation = str(source.get("citation", "")).strip()
    year_match = re.search(r"(?<![\d.])(19|20)\d{2}(?![\d.])", citation)
    year = year_match.group(0) if year_match else ""
    authors = re.match(r"\s*([^.,;:\[]+?\bet al)\b\.?", citation)
    if authors:
        short = f"{authors.group(1)}."
    else:
        short = re.split(r"[.\[]", citation, maxsplit=1)[0].strip()
        if len(short) > 60:
            short = textwrap.shorten(short, 60, placeholder="…")
    return f"{short} {year}".strip()


def _subtitle(record: dict[str, Any]) -> str:
    source = record.get("source") or {}
    parts = [_short_citation(source)]
    if source.get("case_number"):
        parts.append(f"case {source['case_number']}")
    trial = source.get("trial") or {}
    if trial.get("name"):
        arm = f", {trial['arm']} arm" if trial.get("arm") else ""
        parts.append(f"{trial['name']} trial{arm}")
    if source.get("case_label") and not re.fullmatch(
        r"(patient|case)\s*#?\s*\d+", str(source["case_label"]), re.IGNORECASE
    ):
        parts.append(str(source["case_label"]))
    return textwrap.shorten(" · ".join(p for p in parts if p), 150, placeholder="…")


def _primary(record: dict[str, Any]) -> dict[str, Any] | None:
    diagnoses = record.get("diagnoses") or []
    return next((d for d in diagnoses if d.get("role") == "primary"), None) or (
        diagnoses[0] if diagnoses else None
    )


def _title(record: dict[str, Any]) -> str:
    primary = _primary(record)
    if primary is None:
        return str(record.get("record_id", "case"))
    display = _display("conditions", str(primary.get("condition", "")))
    display = re.sub(r"\s*\([^)]{9,}\)", "", display)
    if primary.get("variant"):
        display += f", {primary['variant']}"
    return f"{record.get('record_id', 'case')} — {display}"


def _response_label(category: str, compartments: list[str], footnote: bool = False) -> str:
    ordered = sorted(
        dict.fromkeys(compartments),
        key=lambda c: _COMPARTMENT_ORDER.index(c) if c in _COMPARTMENT_ORDER else 9,
    )
    if ordered == ["overall"] and not footnote:
        return category
    return f"{category} {'+'.join(ordered)}"


def _stage_label(staging: dict[str, Any]) -> str:
    tnmb = " ".join(staging[k] for k in ("t", "n", "m", "b") if staging.get(k))
    group = staging.get("group")
    if group and tnmb:
        return f"{group} ({tnmb})"
    return str(group or tnmb or "stage")


def _marks(
    record: dict[str, Any], clock: _Clock, labels: dict[str, str], line_of: dict[str, str]
) -> list[Mark]:
    marks: list[Mark] = []
    rank = 0
    # responses, merged when the same category is assessed at the same time in several places
    for treatment in record.get("treatments", []):
        if treatment.get("id") not in line_of:
            continue
        merged: dict[tuple[str, float, float], Mark] = {}
        compartments: dict[tuple[str, float, float], list[str]] = {}
        for response in treatment.get("responses", []):
            when = clock.date(response.get("date")) or clock.relative(response.get("after"))
            category = response.get("category")
            compartment = str(response.get("compartment", "overall"))
            rank += 1
            if category is None:
                marks.append(Mark("assessment", treatment["id"], when, "", rank=rank))
                continue
            if when is None:
                how = _reason(response.get("after"), labels, clock)
                marks.append(
                    Mark(
                        "response",
                        treatment["id"],
                        None,
                        _response_label(category, [compartment], footnote=True),
                        category,
                        note=f"{how}|{line_of[treatment['id']]}",
                        rank=rank,
                    )
                )
                continue
            key = (category, when.lo, when.hi)
            if key in merged:
                compartments[key].append(compartment)
                merged[key].label = _response_label(category, compartments[key])
                continue
            compartments[key] = [compartment]
            merged[key] = Mark(
                "response",
                treatment["id"],
                when,
                _response_label(category, [compartment]),
                category,
                rank=rank,
            )
            marks.append(merged[key])
    for event in record.get("adverse_events", []):
        rank += 1
        suspects = [s.get("treatment") for s in event.get("suspects", [])]
        anchor = (event.get("onset_after") or {}).get("treatment")
        row = next((s for s in [*suspects, anchor] if s in clock.treatments), _OTHER)
        when = clock.date(event.get("onset")) or clock.relative(event.get("onset_after"))
        until = clock.date(event.get("end")) or clock.relative(event.get("end_after"))
        term = _strip_parens(_display("adverse-events", str(event.get("term", ""))))
        grade = event.get("grade")
        label = f"G{grade} {term}" if grade else term
        how = _reason(event.get("onset_after"), labels, clock)
        where = line_of.get(row, "")
        marks.append(
            Mark("ae", row, when, label, grade=grade, until=until, note=f"{how}|{where}", rank=rank)
        )
    shown = {(m.row, m.when) for m in marks if m.kind == "response" and m.when is not None}
    marks = [m for m in marks if m.kind != "assessment" or (m.row, m.when) not in shown]
    primary = _primary(record)
    diagnosis_when: When | None = None
    if primary is not None:
        diagnosis_when = clock.date(primary.get("diagnosed"))
        if diagnosis_when is None:
            for age in (record.get("patient") or {}).get("ages", []):
                if age.get("refers_to") == "diagnosis" and clock.date(age.get("date")):
                    diagnosis_when = clock.date(age.get("date"))
                    break
        if diagnosis_when is not None:
            text = f"diagnosis {diagnosis_when.text}"
            marks.append(Mark("diagnosis", _TOP, diagnosis_when, text))
        onset = clock.date(primary.get("onset"))
        if onset is not None and (diagnosis_when is None or onset.lo < diagnosis_when.lo):
            marks.append(Mark("onset", _TOP, onset, f"first symptoms {onset.text}"))
    for diagnosis in record.get("diagnoses", []):
        diagnosed = clock.date(diagnosis.get("diagnosed"))
        for staging in diagnosis.get("stagings", []):
            when = clock.date(staging.get("date"))
            if when is None and staging.get("context") == "diagnosis":
                when = diagnosed or (diagnosis_when if diagnosis is primary else None)
            marks.append(Mark("staging", _TOP, when, _stage_label(staging), note="no date|"))
    patient = record.get("patient") or {}
    follow_up = record.get("follow_up") or {}
    deceased = patient.get("deceased")
    if deceased is not None or follow_up.get("status") == "dead":
        deceased = deceased or {}
        when = clock.date(deceased.get("date")) or clock.relative(deceased.get("after"))
        if when is None and follow_up.get("status") == "dead":
            when = clock.date(follow_up.get("date")) or clock.relative(follow_up.get("after"))
        cause = deceased.get("cause")
        label = "† death" + (f" {when.text}" if when else "")
        note = _reason(deceased.get("after") or follow_up.get("after"), labels, clock) + "|"
        if cause:
            label += f": {textwrap.shorten(str(cause), 40, placeholder='…')}"
        marks.append(Mark("death", _TOP, when, label, note=note))
    elif follow_up:
        when = clock.date(follow_up.get("date")) or clock.relative(follow_up.get("after"))
        status = _FOLLOW_UP.get(str(follow_up.get("status")), "")
        text = f"last follow-up {when.text}" if when else "last follow-up"
        if status:
            text += f": {status}"
        reason = _reason(follow_up.get("after"), labels, clock) + "|"
        marks.append(Mark("followup", _TOP, when, text, category=status or None, note=reason))
    return marks


def _lanes(
    record: dict[str, Any], labels: dict[str, str], base: dict[str, str]
) -> tuple[list[Lane], dict[str, str]]:
    """Lanes in story order (a line's lane where its first course appears) and, per course,
    the name of its lane for notes."""
    lanes: dict[str, Lane] = {}
    line_of: dict[str, str] = {}
    for treatment in record.get("treatments", []):
        if "id" not in treatment:
            continue
        line = treatment.get("line")
        key = f"line{line}" if line else f"course:{treatment['id']}"
        lane = lanes.setdefault(key, Lane("", []))
        lane.rows.append(treatment["id"])
    for key, lane in lanes.items():
        prefix = f"L{key[4:]} " if key.startswith("line") else ""
        names = list(dict.fromkeys((base if prefix else labels)[r] for r in lane.rows))
        lane.label = prefix + " + ".join(names)
        for row in lane.rows:
            line_of[row] = (prefix + labels[row]) if prefix else labels[row]
    return list(lanes.values()), line_of


def _reached(record: dict[str, Any], clock: _Clock, tid: str) -> float | None:
    """Latest placed 'after dose N' / 'after cycle N' of a course: it ran at least that long."""
    times: list[Any] = [
        r.get("after") for t in record.get("treatments", []) for r in t.get("responses", [])
    ]
    times += [e.get("onset_after") for e in record.get("adverse_events", [])]
    times += [p.get("start_after") for p in record.get("treatments", [])]
    reached = [
        when.lo
        for rel in times
        if isinstance(rel, dict)
        and rel.get("treatment") == tid
        and ("after_dose" in rel or "after_cycle" in rel)
        and (when := clock.relative(rel)) is not None
    ]
    return max(reached, default=None)


def _build(record: dict[str, Any], anchor: str | None) -> Timeline:
    clock = _Clock(record, anchor)
    trial = ((record.get("source") or {}).get("trial") or {}).get("name")
    base = {tid: _course_label(t, trial) for tid, t in clock.treatments.items()}
    labels = _distinct(base, {tid: t.get("line") for tid, t in clock.treatments.items()})
    lanes, line_of = _lanes(record, labels, base)
    courses: dict[str, Course] = {}
    for tid, treatment in clock.treatments.items():
        kind = str(treatment.get("kind", "drug"))
        start, end = clock.start(tid), clock.end(tid)
        point = kind in _POINT_KINDS and treatment.get("end") is None
        courses[tid] = Course(
            tid=tid,
            label=labels[tid],
            group=_KIND_GROUP.get(kind, "drug"),
            start=start,
            end=None if point else end,
            ongoing=treatment.get("status") == "ongoing",
            point=point,
            doses=clock.dose_days(tid),
            summary=_counts_summary(treatment),
            reached=_reached(record, clock, tid),
        )
    marks = _marks(record, clock, labels, line_of)
    top = [m for m in marks if m.when is not None and m.row == _TOP]
    if top:
        staged = any(m.kind == "staging" for m in top)
        lanes.insert(0, Lane("Staging &\nmilestones" if staged else "Milestones", [_TOP]))
    if any(m.when is not None and m.row == _OTHER for m in marks):
        lanes.append(Lane("Other events", [_OTHER]))
    follow_up = next((m.when for m in marks if m.kind in {"followup", "death"} and m.when), None)
    placed = [v for m in marks if m.when for v in (m.when.hi, m.until.hi if m.until else m.when.hi)]
    placed += [w.hi for c in courses.values() for w in (c.start, c.end) if w]
    horizon = follow_up.hi if follow_up else (max(placed) if placed else None)
    if anchor is None:
        axis_label, unit = "", 1.0
    else:
        axis_label, unit = _relative_unit(record, marks, courses, labels[anchor])
    timeline = Timeline(
        calendar=anchor is None,
        axis_label=axis_label,
        unit_days=unit,
        title=_title(record),
        subtitle=_subtitle(record),
        lanes=lanes,
        courses=courses,
        marks=marks,
        horizon=horizon,
    )
    timeline.footnotes = _footnotes(timeline, record)
    return timeline


def _relative_unit(
    record: dict[str, Any], marks: list[Mark], courses: dict[str, Course], anchor_label: str
) -> tuple[str, float]:
    values = [v for m in marks if m.when for v in (m.when.lo, m.when.hi)]
    values += [v for c in courses.values() for w in (c.start, c.end) if w for v in (w.lo, w.hi)]
    span = (max(values) - min(values)) if values else 0.0
    in_days = '"days"' in repr(record).replace("'", '"')
    if (in_days and span <= 400) or span <= 42:
        return f"Days from start of {anchor_label}", 1.0
    if span <= 7 * 130:
        return f"Weeks from start of {anchor_label}", 7.0
    return f"Months from start of {anchor_label}", _MONTH_DAYS


def _footnotes(timeline: Timeline, record: dict[str, Any]) -> list[str]:
    """Unplaced events, grouped: the same events of several courses, and several events of
    one course, are listed once with their reason."""
    by_course: dict[tuple[str, str], list[str]] = {}
    for mark in timeline.marks:
        if mark.when is not None or mark.kind in {"assessment", "diagnosis", "onset"}:
            continue
        if mark.kind == "followup" and mark.category is None:
            continue
        reason, _, course = mark.note.partition("|")
        label = mark.label
        if mark.kind == "staging":
            label = f"stage {label}"
        elif mark.kind == "ae":
            label = f"AE {label}"
        by_course.setdefault((reason, course), []).append(label)
    by_events: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (reason, course), events in by_course.items():
        by_events.setdefault((reason, tuple(events)), []).append(course)
    items = []
    for (reason, names), courses in by_events.items():
        where = ", ".join(c for c in courses if c)
        items.append(f"{', '.join(names)}{' — ' + where if where else ''} ({reason})")
    if not timeline.calendar:
        primary = _primary(record)
        if primary and primary.get("diagnosed"):
            items.append(f"diagnosis {primary['diagnosed']} (calendar date; the axis is relative)")
    return items


def _placed_count(timeline: Timeline) -> int:
    courses = sum(1 for c in timeline.courses.values() if c.start or c.end)
    return courses + sum(1 for m in timeline.marks if m.when is not None)


def build_timeline(record: dict[str, Any]) -> Timeline:
    """The placed model of a record: calendar axis unless no event has a calendar date, then the
    relative axis anchored on the course that lets most events be placed."""
    calendar = _build(record, None)
    if _placed_count(calendar) > 0:
        return calendar
    best, best_count = calendar, 0
    for treatment in record.get("treatments", []):
        if "id" not in treatment:
            continue
        candidate = _build(record, treatment["id"])
        count = _placed_count(candidate)
        if count > best_count:
            best, best_count = candidate, count
    return best


# ---------------------------------------------------------------------------------------------
# Drawing


@dataclass
class _Geometry:
    """Axis conversion and label bookkeeping."""

    timeline: Timeline
    xmin: float
    xmax: float
    days_per_inch: float
    tail: float
    taken: dict[float, list[tuple[float, float]]] = field(default_factory=dict)
    ticks_drawn: bool = False

    def x(self, day: float) -> float:
        if self.timeline.calendar:
            return day - _EPOCH
        return day / self.timeline.unit_days

    def width(self, text: str, size: float) -> float:
        longest = max((len(line) for line in text.split("\n")), default=0)
        return longest * size * 0.56 / 72 * self.days_per_inch

    def occupy(self, y: float, lo: float, hi: float) -> None:
        self.taken.setdefault(round(y, 3), []).append((lo, hi))

    def free(self, y: float, lo: float, hi: float) -> bool:
        return all(hi <= a or lo >= b for a, b in self.taken.get(round(y, 3), []))

    def place(self, ax: Axes, day: float, slots: list[float], text: str, size: float) -> None:
        """Writes a label beside a marker at the first slot with room, right then left."""
        width = self.width(text, size)
        pad = 0.09 * self.days_per_inch
        options: list[tuple[float, float, float, str]] = []
        for y in slots:
            options.append((y, day + pad, day + pad + width, "left"))
            options.append((y, day - pad - width, day - pad, "right"))
        fitting = [o for o in options if o[1] >= self.xmin and o[2] <= self.xmax]
        chosen = next((o for o in fitting if self.free(o[0], o[1], o[2])), None)
        if chosen is None:
            chosen = fitting[0] if fitting else options[0]
        y, lo, hi, align = chosen
        gap = 0.1 * self.days_per_inch  # keeps neighbouring labels from reading as one
        self.occupy(y, lo - gap, hi + gap)
        ax.text(
            self.x(lo if align == "left" else hi),
            y,
            text,
            ha=align,
            va="center",
            fontsize=size,
            color="#222222",
            zorder=6,
        )


def _extent(timeline: Timeline) -> tuple[float, float] | None:
    values: list[float] = []
    for course in timeline.courses.values():
        for when in (course.start, course.end):
            if when:
                values += [when.lo, when.hi]
        values += course.doses
    for mark in timeline.marks:
        for when in (mark.when, mark.until):
            if when:
                values += [when.lo, when.hi]
    if not values:
        return None
    lo, hi = min(values), max(values)
    if timeline.calendar and hi - lo < 60:
        centre = (hi + lo) / 2
        lo, hi = centre - 30, centre + 30
    elif not timeline.calendar:
        lo = min(lo, 0.0)
        hi = max(hi, lo + 14 * min(timeline.unit_days, 7.0))
    return lo, hi


def _rect(ax: Axes, geo: _Geometry, lo: float, hi: float, y: float, h: float, **kw: Any) -> Any:
    from matplotlib.patches import Rectangle

    x0 = geo.x(lo)
    patch = Rectangle((x0, y - h / 2), geo.x(hi) - x0, h, **kw)
    ax.add_patch(patch)
    return patch


def _fade(
    ax: Axes, geo: _Geometry, lo: float, hi: float, y: float, colour: str, gid: str, rising: bool
) -> None:
    steps = 12
    width = (hi - lo) / steps
    for i in range(steps):
        alpha = 0.85 * (1 - (i + 0.5) / steps)
        if rising:
            alpha = 0.85 * ((i + 0.5) / steps)
        patch = _rect(
            ax,
            geo,
            lo + i * width,
            lo + (i + 1) * width,
            y,
            0.3,
            facecolor=colour,
            alpha=alpha,
            linewidth=0,
            zorder=3,
        )
        if i == 0:
            patch.set_gid(gid)


def _tint(colour: str, share: float = 0.25) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return tuple(share * c + (1 - share) for c in to_rgb(colour))  # type: ignore[return-value]


def _hatch(ax: Axes, geo: _Geometry, when: When, y: float, group: str, gid: str) -> None:
    patch = _rect(
        ax,
        geo,
        when.lo,
        when.hi,
        y,
        0.3,
        facecolor=_tint(_COURSE_COLOURS[group]),
        edgecolor=_HATCH_COLOURS[group],
        hatch="/////",
        linewidth=0.8,
        zorder=3,
    )
    patch.set_gid(gid)


def _note(ax: Axes, y: float, text: str) -> None:
    ax.text(
        0.006,
        y,
        text,
        transform=ax.get_yaxis_transform(),
        ha="left",
        va="center",
        fontsize=7,
        style="italic",
        color="#666666",
        zorder=2,
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.6, "pad": 1.0},
    )


def _draw_course(ax: Axes, geo: _Geometry, course: Course, y: float, several: bool) -> None:
    colour = _COURSE_COLOURS[course.group]
    start, end, tail = course.start, course.end, geo.tail
    right_edge: float | None = None
    if start is None and end is None:
        note = "timing not stated in the source"
        if course.summary:
            note += f" ({course.summary})"
        if several:
            note = f"{course.label}: {note}"
        _note(ax, y, note)
        return
    if course.point and start is not None:
        if not start.exact:
            _hatch(ax, geo, start, y, course.group, f"uncertain-start-{course.tid}")
        ax.plot(
            [geo.x(start.mid)],
            [y],
            marker="*",
            markersize=13,
            color=colour,
            markeredgecolor="black",
            markeredgewidth=0.5,
            zorder=5,
            gid=f"event-{course.tid}",
        )
        right_edge = start.hi
    else:
        if start is not None and not start.exact:
            _hatch(ax, geo, start, y, course.group, f"uncertain-start-{course.tid}")
        if end is not None and not end.exact:
            _hatch(ax, geo, end, y, course.group, f"uncertain-end-{course.tid}")
        solid_lo = start.hi if start is not None else None
        solid_hi = end.lo if end is not None else None
        if start is None and end is not None:
            _fade(ax, geo, end.lo - tail, end.lo, y, colour, f"unknown-start-{course.tid}", True)
        if end is None and start is not None:
            if course.ongoing:
                solid_hi = max(geo.timeline.horizon or start.hi, start.hi + tail)
            else:
                known = max(start.hi, course.reached or start.hi)
                solid_hi = known if known > start.hi else None
                _fade(ax, geo, known, known + tail, y, colour, f"unknown-end-{course.tid}", False)
                right_edge = known + tail
        if solid_lo is not None and solid_hi is not None and solid_hi > solid_lo:
            _rect(
                ax, geo, solid_lo, solid_hi, y, 0.3, facecolor=colour, linewidth=0, zorder=3
            ).set_gid(f"course-{course.tid}")
        if end is not None:
            right_edge = end.hi
        elif course.ongoing:
            right_edge = solid_hi
        if course.ongoing and right_edge is not None:
            ax.plot(
                [geo.x(right_edge)],
                [y],
                marker=">",
                markersize=9,
                color=colour,
                linestyle="none",
                zorder=4,
                gid=f"ongoing-{course.tid}",
            )
            right_edge += 0.12 * geo.days_per_inch
    gaps = [b - a for a, b in zip(course.doses, course.doses[1:], strict=False)]
    if course.doses and min(gaps, default=99.0) / geo.days_per_inch >= 0.035:
        lines = ax.vlines(
            [geo.x(d) for d in course.doses],
            y - 0.2,
            y + 0.2,
            colors="#1A1A1A",
            linewidth=0.7,
            zorder=4,
        )
        lines.set_gid(f"doses-{course.tid}")
        geo.ticks_drawn = True
    edges = [w for w in (start, end) if w]
    left = min(w.lo for w in edges) if edges else 0.0
    right = right_edge if right_edge is not None else max(w.hi for w in edges)
    geo.occupy(y - 0.0, left, right)
    tag = course.label if several else ""
    if course.doses:
        count = f"{len(course.doses)} doses"
        tag = f"{tag} · {count}" if tag else count
    elif course.summary and end is None:
        tag = f"{tag} · {course.summary}" if tag else course.summary
    if tag:
        geo.place(ax, right, [y], tag, 6.5)


def _draw_marks(ax: Axes, geo: _Geometry, marks: list[Mark], rows: dict[str, float]) -> None:
    placed = sorted((m for m in marks if m.when is not None), key=lambda m: m.rank)
    labelled: list[tuple[Mark, float, list[float]]] = []
    for index, mark in enumerate(placed):
        assert mark.when is not None
        y0 = rows.get(mark.row)
        if y0 is None:
            continue
        when = mark.when
        x = geo.x(when.mid)
        if mark.kind in {"response", "assessment"}:
            y = y0 - 0.3
            colour = _RESPONSE_COLOURS.get(mark.category or "", "white")
            size = 7 if mark.kind == "response" else 5
            edge = "black" if mark.kind == "response" else "#777777"
            ax.plot(
                [x],
                [y],
                marker="D",
                markersize=size,
                markerfacecolor=colour,
                markeredgecolor=edge,
                markeredgewidth=0.6,
                linestyle="none",
                zorder=5,
                gid=f"{mark.kind}-{index}",
            )
            slots = [y, y - 0.17]
        elif mark.kind == "ae":
            y = y0 + 0.3
            face = _GRADE_COLOURS.get(mark.grade or 0, "white")
            if mark.until is not None and mark.until.mid > when.mid:
                ax.plot(
                    [x, geo.x(mark.until.mid)],
                    [y, y],
                    color="#993404",
                    linewidth=1.2,
                    alpha=0.6,
                    zorder=4,
                    gid=f"ae-duration-{index}",
                )
                geo.occupy(y, when.mid, mark.until.mid)
            ax.plot(
                [x],
                [y],
                marker="v",
                markersize=7,
                markerfacecolor=face,
                markeredgecolor="black",
                markeredgewidth=0.6,
                linestyle="none",
                zorder=5,
                gid=f"ae-grade-{mark.grade or 'none'}-{index}",
            )
            slots = [y, y + 0.17]
        else:
            y = y0
            _draw_milestone(ax, geo, mark, index, y0)
            slots = [y0, y0 - 0.22, y0 + 0.22]
        half = 0.06 * geo.days_per_inch
        geo.occupy(y, when.mid - half, when.mid + half)
        if not when.exact and mark.kind in {"response", "assessment", "ae", "staging"}:
            whisker_y = y + 0.3 if mark.kind == "staging" else y
            ax.plot(
                [geo.x(when.lo), geo.x(when.hi)],
                [whisker_y, whisker_y],
                color="#555555",
                linewidth=1.0,
                alpha=0.8,
                zorder=4,
                solid_capstyle="butt",
                gid=f"uncertain-{mark.kind}-{index}",
            )
            geo.occupy(whisker_y, when.lo, when.hi)
        if mark.label:
            labelled.append((mark, when.mid, slots))
    for mark, day, slots in labelled:
        geo.place(ax, day, slots, _clip(mark.label, 38), 7 if mark.kind != "ae" else 6.5)


def _draw_milestone(ax: Axes, geo: _Geometry, mark: Mark, index: int, y: float) -> None:
    """Staging tick on the top lane; diagnosis, death and last follow-up across all lanes (a
    line when known to the day, a band over the span it may fall in otherwise)."""
    assert mark.when is not None
    when = mark.when
    x = geo.x(when.mid)
    if mark.kind == "onset":
        ax.plot(
            [x],
            [y],
            marker="o",
            markersize=5,
            markerfacecolor="#BBBBBB",
            markeredgecolor="#444444",
            zorder=5,
            gid=f"onset-{index}",
        )
        if not when.exact:
            ax.plot(
                [geo.x(when.lo), geo.x(when.hi)],
                [y, y],
                color="#555555",
                linewidth=1.0,
                alpha=0.8,
                zorder=4,
                solid_capstyle="butt",
            )
        return
    styles = {
        "diagnosis": ("#444444", "--", 0.9, 1),
        "death": ("black", "-", 1.4, 2),
        "followup": ("#888888", ":", 0.9, 1),
    }
    if mark.kind == "staging":
        ax.vlines(
            [x], y - 0.3, y + 0.3, colors="#332288", linewidth=2.2, zorder=5, gid=f"staging-{index}"
        )
        return
    colour, style, width, z = styles[mark.kind]
    gid = f"{mark.kind}-{index}"
    if when.exact:
        ax.axvline(x, color=colour, linewidth=width, linestyle=style, zorder=z, gid=gid)
    else:
        ax.axvspan(
            geo.x(when.lo), geo.x(when.hi), color=colour, alpha=0.08, linewidth=0, zorder=z, gid=gid
        )
    if mark.kind == "diagnosis":
        ax.plot(
            [x],
            [y],
            marker="o",
            markersize=7,
            markerfacecolor="white",
            markeredgecolor="#444444",
            zorder=5,
        )
    elif mark.kind == "death":
        ax.plot([x], [y], marker="X", markersize=10, color="black", zorder=5)
    else:
        ax.plot([x], [y], marker="|", markersize=12, markeredgewidth=2, color="#555555", zorder=5)


def _legend(fig: Figure, geo: _Geometry, left: float, top: float) -> None:
    timeline = geo.timeline
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = []
    labels: list[str] = []
    headers: list[int] = []

    def header(text: str) -> None:
        headers.append(len(handles))
        handles.append(Patch(visible=False))
        labels.append(text)

    def add(handle: Any, label: str) -> None:
        handles.append(handle)
        labels.append(label)

    drawn = [c for c in timeline.courses.values() if c.start or c.end]
    if drawn:
        header("Courses")
        for group, name in _COURSE_KIND_LEGEND.items():
            if any(c.group == group for c in drawn):
                add(Patch(facecolor=_COURSE_COLOURS[group]), name)
        if any((c.start and not c.start.exact) or (c.end and not c.end.exact) for c in drawn):
            add(
                Patch(facecolor="white", edgecolor="#555555", hatch="/////"),
                "date uncertain (month/year only,\nor estimated from duration)",
            )
        if any((c.start is None or c.end is None) and not c.ongoing and not c.point for c in drawn):
            add(Patch(facecolor="#999999", alpha=0.4), "start/end not stated (fades)")
        if any(c.ongoing for c in drawn):
            add(
                Line2D([], [], marker=">", color="#555555", linestyle="none"),
                "ongoing at last report",
            )
        if geo.ticks_drawn:
            add(
                Line2D(
                    [],
                    [],
                    marker="|",
                    color="#1A1A1A",
                    markersize=9,
                    linestyle="none",
                    markeredgewidth=1.5,
                ),
                "dose (from schedule)",
            )
    placed = [m for m in timeline.marks if m.when is not None]
    categories = {m.category for m in placed if m.kind == "response"}
    if categories or any(m.kind == "assessment" for m in placed):
        header("Response")
        for category, colour in _RESPONSE_COLOURS.items():
            if category in categories:
                add(
                    Line2D(
                        [],
                        [],
                        marker="D",
                        markerfacecolor=colour,
                        markeredgecolor="black",
                        linestyle="none",
                    ),
                    _RESPONSE_NAMES[category],
                )
        if any(m.kind == "assessment" for m in placed):
            add(
                Line2D(
                    [],
                    [],
                    marker="D",
                    markersize=5,
                    markerfacecolor="white",
                    markeredgecolor="#777777",
                    linestyle="none",
                ),
                "assessment in words only",
            )
    events = [m for m in placed if m.kind == "ae"]
    if events:
        header("Adverse event (CTCAE)")
        for grade, colour in _GRADE_COLOURS.items():
            marker = Line2D(
                [],
                [],
                marker="v",
                markerfacecolor=colour,
                markeredgecolor="black",
                linestyle="none",
                gid=f"legend-grade-{grade}",
            )
            add(marker, f"grade {grade}")
        if any(m.grade is None for m in events):
            add(
                Line2D(
                    [],
                    [],
                    marker="v",
                    markerfacecolor="white",
                    markeredgecolor="black",
                    linestyle="none",
                    gid="legend-grade-none",
                ),
                "grade not stated",
            )
    kinds = {m.kind for m in placed}
    if kinds & {"staging", "diagnosis", "death", "followup", "onset"}:
        header("Milestones")
        if "onset" in kinds:
            add(
                Line2D(
                    [],
                    [],
                    marker="o",
                    markersize=5,
                    markerfacecolor="#BBBBBB",
                    markeredgecolor="#444444",
                    linestyle="none",
                ),
                "first symptoms",
            )
        if "diagnosis" in kinds:
            add(
                Line2D(
                    [], [], color="#444444", linestyle="--", marker="o", markerfacecolor="white"
                ),
                "diagnosis",
            )
        if "staging" in kinds:
            add(Line2D([], [], color="#332288", linewidth=2.2), "ISCL/EORTC stage")
        if "death" in kinds:
            add(Line2D([], [], color="black", marker="X"), "death")
        if "followup" in kinds:
            add(Line2D([], [], color="#888888", linestyle=":", marker="|"), "last follow-up")
    if any(m.when is not None and not m.when.exact for m in placed):
        add(Line2D([], [], color="#555555"), "event date uncertain\n(span it may fall in)")
    if not handles:
        return
    legend = fig.legend(
        handles,
        labels,
        loc="upper left",
        bbox_to_anchor=(left, top),
        fontsize=7.5,
        frameon=False,
        handlelength=1.8,
        borderaxespad=0.0,
        labelspacing=0.45,
    )
    legend.set_gid("legend")
    pairs = zip(legend.get_texts(), legend.legend_handles, strict=True)
    for i, (text, artist) in enumerate(pairs):
        if i in headers:
            text.set_fontweight("bold")
            text.set_position((-26, 0))
        gid = handles[i].get_gid()
        if gid and artist is not None:
            artist.set_gid(gid)
            text.set_gid(f"{gid}-label")


def _footnote_lines(items: list[str]) -> list[str]:
    if not items:
        return []
    text = "Not placed on the time axis: " + "; ".join(items) + "."
    lines = textwrap.wrap(text, 175)
    if len(lines) > 8:
        lines = [*lines[:7], textwrap.shorten(" ".join(lines[7:]), 170, placeholder=" …")]
    return lines


def _layout(timeline: Timeline) -> tuple[dict[str, float], list[tuple[Lane, float, float]], float]:
    """Centre of every row and the extent of every lane, top down. A course row with nothing
    placed is thin; a lane with nothing placed in any of its rows is one thin row."""
    busy = {m.row for m in timeline.marks if m.when is not None}
    busy |= {_TOP, _OTHER}
    placed = {c.tid for c in timeline.courses.values() if c.start or c.end}
    rows: dict[str, float] = {}
    spans: list[tuple[Lane, float, float]] = []
    y = 0.0
    for lane in timeline.lanes:
        top = y
        if not any(r in busy or r in placed for r in lane.rows):
            for row in lane.rows:
                rows[row] = y + 0.3
            y += 0.6
        else:
            for row in lane.rows:
                height = 1.0 if row in busy else 0.6
                rows[row] = y + height / 2
                y += height
        spans.append((lane, top, y))
    return rows, spans, max(y, 1.0)


def _draw(timeline: Timeline) -> Figure:
    from matplotlib import dates as mdates
    from matplotlib.figure import Figure
    from matplotlib.ticker import MultipleLocator

    rows, lane_spans, total = _layout(timeline)
    notes = _footnote_lines(timeline.footnotes)
    legend_rows = 24
    height_in = max(2.0 + 0.6 * total, 0.17 * legend_rows) + 0.16 * len(notes) + 0.5
    width_in = 12.0
    left_in, right_in, top_in = 2.0, 2.6, 0.85
    bottom_in = 0.65 + 0.16 * len(notes)
    fig = Figure(figsize=(width_in, height_in))
    fig.subplots_adjust(
        left=left_in / width_in,
        right=1 - right_in / width_in,
        top=1 - top_in / height_in,
        bottom=bottom_in / height_in,
    )
    ax = fig.add_subplot()
    axis_width_in = width_in - left_in - right_in
    extent = _extent(timeline)
    if extent is None:
        lo, hi = 0.0, 1.0
    else:
        lo, hi = extent
    span = hi - lo
    tail = 0.07 * span
    right_needed = hi
    left_needed = lo
    for course in timeline.courses.values():
        if course.start and course.end is None and not course.point:
            known = max(course.start.hi, course.reached or course.start.hi)
            right_needed = max(right_needed, known + tail)
        if course.end and course.start is None:
            left_needed = min(left_needed, course.end.lo - tail)
    pad = 0.03 * (right_needed - left_needed)
    xmin, xmax = left_needed - pad, right_needed + pad + 0.04 * span
    geo = _Geometry(timeline, xmin, xmax, (xmax - xmin) / axis_width_in, tail)
    ax.set_xlim(geo.x(xmin), geo.x(xmax))
    ax.set_ylim(total, 0)

    # lanes: alternate shading, labels on the left
    ticks, tick_labels = [], []
    for i, (lane, top, bottom) in enumerate(lane_spans):
        if i % 2 == 1:
            ax.axhspan(top, bottom, color="#F2F2F2", zorder=0, linewidth=0)
        if i:
            ax.axhline(top, color="#DDDDDD", linewidth=0.6, zorder=0)
        ticks.append((top + bottom) / 2)
        label = "\n".join("\n".join(textwrap.wrap(part, 26)) for part in lane.label.split("\n"))
        tick_labels.append(label)
    ax.set_yticks(ticks)
    ax.set_yticklabels(tick_labels, fontsize=8.5)
    ax.tick_params(axis="y", length=0)
    for spine in ("top", "right", "left"):
        ax.spines[spine].set_visible(False)

    if extent is None:
        ax.set_xticks([])
        ax.text(
            0.5,
            0.5,
            "No date or relative time in the source places these events in time.",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=9,
            color="#555555",
            style="italic",
        )
    elif timeline.calendar:
        locator = mdates.AutoDateLocator(minticks=4, maxticks=10)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        formatter = mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_formatter(formatter)
    else:
        span_units = (xmax - xmin) / timeline.unit_days
        steps = {1.0: (1, 2, 5, 7, 10, 14, 20, 28, 30, 50, 60, 100)}.get(
            timeline.unit_days, (1, 2, 3, 4, 6, 8, 12, 24, 52)
        )
        step = next((st for st in steps if span_units / st <= 10), steps[-1])
        ax.xaxis.set_major_locator(MultipleLocator(step))
        ax.set_xlabel(timeline.axis_label, fontsize=9)
        if xmin < 0 < xmax:
            ax.axvline(0, color="#BBBBBB", linewidth=0.8, zorder=0)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", color="#E4E4E4", linewidth=0.6, zorder=0)
    ax.set_axisbelow(True)

    for lane, _top, _bottom in lane_spans:
        several = len({rows[r] for r in lane.rows}) > 1
        if len(lane.rows) > 1 and not several:
            _note(ax, rows[lane.rows[0]], "timing not stated in the source")
            continue
        drawn: set[float] = set()
        for row in lane.rows:
            drawable = timeline.courses.get(row)
            if drawable is not None and rows[row] not in drawn:
                _draw_course(ax, geo, drawable, rows[row], several)
            drawn.add(rows[row])
    _draw_marks(ax, geo, timeline.marks, rows)

    fig.text(
        left_in / width_in,
        1 - 0.3 / height_in,
        timeline.title,
        fontsize=13,
        fontweight="bold",
        ha="left",
        va="center",
    )
    fig.text(
        left_in / width_in,
        1 - 0.58 / height_in,
        timeline.subtitle,
        fontsize=8.5,
        color="#444444",
        ha="left",
        va="center",
    )
    if notes:
        fig.text(
            0.02,
            0.12 / height_in,
            "\n".join(notes),
            fontsize=7.5,
            color="#333333",
            ha="left",
            va="bottom",
            linespacing=1.35,
            gid="not-placed",
        )
    _legend(fig, geo, 1 - (right_in - 0.25) / width_in, 1 - top_in / height_in)
    return fig


def render_timeline(record: dict[str, Any], output: Path) -> None:
    """Draws the case timeline of a record to ``output``: SVG or PNG, chosen by the suffix.

    The same record always gives a byte-identical SVG (fixed hash salt, no date metadata).
    """
    output = Path(output)
    fmt = _FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"cannot write a timeline to {output.name!r}: the file name must end in .svg or .png"
        )
    timeline = build_timeline(record)
    import matplotlib

    with matplotlib.rc_context(_RC):  # type: ignore[arg-type]
        fig = _draw(timeline)
        if fmt == "svg":
            fig.savefig(output, format="svg", metadata={"Date": None})
        else:
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            FigureCanvasAgg(fig)
            fig.savefig(output, format="png", dpi=150, metadata={"Software": None})
