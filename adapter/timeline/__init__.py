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
under the plot.

The package reads in layers, each importing only those above it:

* :mod:`~adapter.timeline.model`: what is drawn (courses, marks, lanes), placed in days;
* :mod:`~adapter.timeline.wording`: the names and labels taken from the record;
* :mod:`~adapter.timeline.clock`: dates and relative times as intervals on one axis;
* :mod:`~adapter.timeline.build`: record → model (:func:`build_timeline`); pure;
* :mod:`~adapter.timeline.style`, :mod:`~adapter.timeline.layout`: palette and settings; rows,
  x range and free label room, still without a drawing library;
* :mod:`~adapter.timeline.canvas`, :mod:`~adapter.timeline.bars`,
  :mod:`~adapter.timeline.markers`, :mod:`~adapter.timeline.legend`,
  :mod:`~adapter.timeline.figure`: the matplotlib drawing;
* :mod:`~adapter.timeline.writer`: the SVG or PNG file.

matplotlib is imported only when a picture is drawn, so importing this package is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapter.timeline.build import build_timeline

__all__ = ["build_timeline", "render_timeline"]

_FORMATS = {".svg": "svg", ".png": "png"}


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
    from adapter.timeline.writer import write_timeline  # imports matplotlib

    write_timeline(timeline, output, fmt)
