"""Builds the placed model of a record: lanes, course bars, event marks, and what stays unplaced.

Pure: a record in, a :class:`~adapter.timeline.model.Timeline` out, with no drawing library
involved, so placement is tested on the model. The axis is the calendar unless no event has a
calendar date; then it is relative to the course that lets the most events be placed.
"""

from __future__ import annotations

import textwrap
from typing import Any

from adapter.timeline.clock import MONTH_DAYS, Clock
from adapter.timeline.model import (
    MILESTONES_ROW,
    OTHER_EVENTS_ROW,
    Course,
    Lane,
    Mark,
    Timeline,
    When,
)
from adapter.timeline.wording import (
    counts_summary,
    course_label,
    display,
    distinct_labels,
    primary_diagnosis,
    relative_text,
    response_label,
    stage_label,
    strip_parens,
    subtitle,
    title,
)

__all__ = ["build_timeline"]

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
_POINT_KINDS = {"stem_cell_transplant", "surgery"}
_FOLLOW_UP = {
    "complete_remission": "CR",
    "partial_remission": "PR",
    "stable": "SD",
    "progression": "PD",
    "relapse": "relapse",
}


def _reason(relative: Any, labels: dict[str, str], clock: Clock) -> str:
    """Why an event with this relative time (or none) could not be placed."""
    if not isinstance(relative, dict):
        return "no date"
    tid = str(relative.get("treatment"))
    course = labels.get(tid, "a course")
    if not any(k in relative for k in ("days", "weeks", "months", "after_dose", "after_cycle")):
        return f"time given in words only, relative to {course}"
    if clock.start(tid) is None:
        return f"{relative_text(relative)} of {course}, whose start is not placed"
    return f"{relative_text(relative)} of {course}: the schedule does not fix that day"


def _marks(
    record: dict[str, Any], clock: Clock, labels: dict[str, str], line_of: dict[str, str]
) -> list[Mark]:
    """Every event of the record as a mark, placed or not (an unplaced one says why)."""
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
                        response_label(category, [compartment], footnote=True),
                        category,
                        note=f"{how}|{line_of[treatment['id']]}",
                        rank=rank,
                    )
                )
                continue
            key = (category, when.lo, when.hi)
            if key in merged:
                compartments[key].append(compartment)
                merged[key].label = response_label(category, compartments[key])
                continue
            compartments[key] = [compartment]
            merged[key] = Mark(
                "response",
                treatment["id"],
                when,
                response_label(category, [compartment]),
                category,
                rank=rank,
            )
            marks.append(merged[key])
    for event in record.get("adverse_events", []):
        rank += 1
        suspects = [s.get("treatment") for s in event.get("suspects", [])]
        anchor = (event.get("onset_after") or {}).get("treatment")
        row = next((s for s in [*suspects, anchor] if s in clock.treatments), OTHER_EVENTS_ROW)
        when = clock.date(event.get("onset")) or clock.relative(event.get("onset_after"))
        until = clock.date(event.get("end")) or clock.relative(event.get("end_after"))
        term = strip_parens(display("adverse-events", str(event.get("term", ""))))
        grade = event.get("grade")
        label = f"G{grade} {term}" if grade else term
        how = _reason(event.get("onset_after"), labels, clock)
        where = line_of.get(row, "")
        marks.append(
            Mark("ae", row, when, label, grade=grade, until=until, note=f"{how}|{where}", rank=rank)
        )
    shown = {(m.row, m.when) for m in marks if m.kind == "response" and m.when is not None}
    marks = [m for m in marks if m.kind != "assessment" or (m.row, m.when) not in shown]
    primary = primary_diagnosis(record)
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
            marks.append(Mark("diagnosis", MILESTONES_ROW, diagnosis_when, text))
        onset = clock.date(primary.get("onset"))
        if onset is not None and (diagnosis_when is None or onset.lo < diagnosis_when.lo):
            marks.append(Mark("onset", MILESTONES_ROW, onset, f"first symptoms {onset.text}"))
    for diagnosis in record.get("diagnoses", []):
        diagnosed = clock.date(diagnosis.get("diagnosed"))
        for staging in diagnosis.get("stagings", []):
            when = clock.date(staging.get("date"))
            if when is None and staging.get("context") == "diagnosis":
                when = diagnosed or (diagnosis_when if diagnosis is primary else None)
            marks.append(
                Mark("staging", MILESTONES_ROW, when, stage_label(staging), note="no date|")
            )
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
        marks.append(Mark("death", MILESTONES_ROW, when, label, note=note))
    elif follow_up:
        when = clock.date(follow_up.get("date")) or clock.relative(follow_up.get("after"))
        status = _FOLLOW_UP.get(str(follow_up.get("status")), "")
        text = f"last follow-up {when.text}" if when else "last follow-up"
        if status:
            text += f": {status}"
        reason = _reason(follow_up.get("after"), labels, clock) + "|"
        marks.append(
            Mark("followup", MILESTONES_ROW, when, text, category=status or None, note=reason)
        )
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


def _reached(record: dict[str, Any], clock: Clock, tid: str) -> float | None:
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
    """The model on one axis: the calendar (``anchor`` None) or days from a course's start."""
    clock = Clock(record, anchor)
    trial = ((record.get("source") or {}).get("trial") or {}).get("name")
    base = {tid: course_label(t, trial) for tid, t in clock.treatments.items()}
    labels = distinct_labels(base, {tid: t.get("line") for tid, t in clock.treatments.items()})
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
            summary=counts_summary(treatment),
            reached=_reached(record, clock, tid),
        )
    marks = _marks(record, clock, labels, line_of)
    top = [m for m in marks if m.when is not None and m.row == MILESTONES_ROW]
    if top:
        staged = any(m.kind == "staging" for m in top)
        lanes.insert(0, Lane("Staging &\nmilestones" if staged else "Milestones", [MILESTONES_ROW]))
    if any(m.when is not None and m.row == OTHER_EVENTS_ROW for m in marks):
        lanes.append(Lane("Other events", [OTHER_EVENTS_ROW]))
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
        title=title(record),
        subtitle=subtitle(record),
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
    """Days, weeks or months on a relative axis, by the span placed; days up to 400 of them
    when the record counts anything in days."""
    values = [v for m in marks if m.when for v in (m.when.lo, m.when.hi)]
    values += [v for c in courses.values() for w in (c.start, c.end) if w for v in (w.lo, w.hi)]
    span = (max(values) - min(values)) if values else 0.0
    in_days = '"days"' in repr(record).replace("'", '"')
    if (in_days and span <= 400) or span <= 42:
        return f"Days from start of {anchor_label}", 1.0
    if span <= 7 * 130:
        return f"Weeks from start of {anchor_label}", 7.0
    return f"Months from start of {anchor_label}", MONTH_DAYS


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
        primary = primary_diagnosis(record)
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
