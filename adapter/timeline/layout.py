"""Where things go before anything is drawn: rows, lanes, the x range, free room for labels.

Pure arithmetic on the model, no drawing library, so that the drawing modules only ask "where"
and never decide it. Heights are in row units (a busy row is 1, a thin one 0.6); widths are in
days, converted to axis units by :meth:`Geometry.x`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from adapter.timeline.model import MILESTONES_ROW, OTHER_EVENTS_ROW, Lane, Timeline

_EPOCH = date(1970, 1, 1).toordinal()
"""Day number of matplotlib's date epoch (``date.epoch`` in the style's rc settings)."""


def lay_out_rows(
    timeline: Timeline,
) -> tuple[dict[str, float], list[tuple[Lane, float, float]], float]:
    """Centre of every row and the extent of every lane, top down. A course row with nothing
    placed is thin; a lane with nothing placed in any of its rows is one thin row."""
    busy = {m.row for m in timeline.marks if m.when is not None}
    busy |= {MILESTONES_ROW, OTHER_EVENTS_ROW}
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


def extent(timeline: Timeline) -> tuple[float, float] | None:
    """First and last day anything is placed on, widened to two months on a calendar axis and
    to the anchor's start and a minimum span on a relative one; None when nothing is placed."""
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


@dataclass
class Geometry:
    """The x range in days, day-to-axis conversion, and which stretches of each row are taken,
    so that labels are put where they do not cover a bar, a marker or another label."""

    calendar: bool
    unit_days: float
    xmin: float
    xmax: float
    days_per_inch: float
    tail: float
    """Length of the fade drawn where a course's start or end is not stated."""
    taken: dict[float, list[tuple[float, float]]] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, timeline: Timeline, span: tuple[float, float] | None, axis_width_in: float
    ) -> Geometry:
        """The x range that shows ``span`` (the :func:`extent`) with room for the fades of
        courses whose start or end is not stated, and a margin."""
        lo, hi = (0.0, 1.0) if span is None else span
        width = hi - lo
        tail = 0.07 * width
        right_needed = hi
        left_needed = lo
        for course in timeline.courses.values():
            if course.start and course.end is None and not course.point:
                known = max(course.start.hi, course.reached or course.start.hi)
                right_needed = max(right_needed, known + tail)
            if course.end and course.start is None:
                left_needed = min(left_needed, course.end.lo - tail)
        pad = 0.03 * (right_needed - left_needed)
        xmin, xmax = left_needed - pad, right_needed + pad + 0.04 * width
        return cls(
            timeline.calendar,
            timeline.unit_days,
            xmin,
            xmax,
            (xmax - xmin) / axis_width_in,
            tail,
        )

    def x(self, day: float) -> float:
        """A day in axis units: matplotlib dates on a calendar axis, the unit on a relative one."""
        if self.calendar:
            return day - _EPOCH
        return day / self.unit_days

    def width(self, text: str, size: float) -> float:
        """Estimated width of a label in days."""
        longest = max((len(line) for line in text.split("\n")), default=0)
        return longest * size * 0.56 / 72 * self.days_per_inch

    def occupy(self, y: float, lo: float, hi: float) -> None:
        """Marks days ``lo`` to ``hi`` of row ``y`` as taken."""
        self.taken.setdefault(round(y, 3), []).append((lo, hi))

    def free(self, y: float, lo: float, hi: float) -> bool:
        """Whether days ``lo`` to ``hi`` of row ``y`` are still free."""
        return all(hi <= a or lo >= b for a, b in self.taken.get(round(y, 3), []))

    def label_slot(
        self, day: float, slots: list[float], text: str, size: float
    ) -> tuple[float, float, str]:
        """Where a label beside a marker goes: the first slot with room, right then left, else
        the first that fits the axis. Takes the room and returns the day of the label's anchor,
        its y and its horizontal alignment."""
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
        return (lo if align == "left" else hi), y, align
