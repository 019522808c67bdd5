"""What a timeline shows, already placed: courses, marks, lanes, in days on one axis.

The model is the boundary between reading a record (:mod:`adapter.timeline.build`) and drawing
(:mod:`adapter.timeline.figure`): everything that decides *where* and *how certain* is settled
here, so the drawing only turns days into coordinates and the tests can check placement
without a picture. A day is a date ordinal on a calendar axis, or days from the anchor course's
start on a relative axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MILESTONES_ROW = "_milestones"
"""Row of the top lane: diagnosis, first symptoms, stagings, death, last follow-up."""
OTHER_EVENTS_ROW = "_other"
"""Row of adverse events that name no course the record has."""


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
    """Colour family: ``drug``, ``light``, ``radiation`` or ``transplant``."""
    start: When | None
    end: When | None
    ongoing: bool
    point: bool
    """A transplant or surgery with no stated end: one star, not a bar."""
    doses: list[float]
    summary: str
    reached: float | None = None
    """Latest time the course is known to have still been given (an event 'after dose N')."""


@dataclass
class Mark:
    """One event marker: a response, adverse event, staging or milestone."""

    kind: str
    row: str
    """A course id, :data:`MILESTONES_ROW` or :data:`OTHER_EVENTS_ROW`."""
    when: When | None
    label: str
    category: str | None = None
    grade: int | None = None
    until: When | None = None
    note: str = ""
    """For an unplaced mark: ``"why it is not placed|the course's lane"``, for the footnotes."""
    rank: int = 0
    """Order in the record; earlier marks get the free label slots first."""


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
    """Days per axis unit on a relative axis (1, 7 or a mean month); 1 on a calendar axis."""
    title: str
    subtitle: str
    lanes: list[Lane]
    courses: dict[str, Course]
    marks: list[Mark]
    horizon: float | None
    """Last follow-up or death, else the latest placed day: where an ongoing course runs to."""
    footnotes: list[str] = field(default_factory=list)
