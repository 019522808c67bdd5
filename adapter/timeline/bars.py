"""Draws one treatment course: a bar as certain as its dates, dose ticks, and its tag.

A stated day is a hard edge; a month or year known start or end, or one estimated from the
course's length, is a hatched span over the days it may fall on; a start or end the source
does not give fades out; a course still running ends in an arrow; a transplant or surgery with
no end is a star. Every piece carries an SVG id (``course-t1``, ``uncertain-start-t1``...) so
the output can be checked and styled.
"""

from __future__ import annotations

from typing import Any

from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.patches import Rectangle

from adapter.timeline.canvas import write_label, write_note
from adapter.timeline.layout import Geometry
from adapter.timeline.model import Course, When
from adapter.timeline.style import COURSE_COLOURS, HATCH_COLOURS


def _rect(ax: Axes, geo: Geometry, lo: float, hi: float, y: float, h: float, **kw: Any) -> Any:
    x0 = geo.x(lo)
    patch = Rectangle((x0, y - h / 2), geo.x(hi) - x0, h, **kw)
    ax.add_patch(patch)
    return patch


def _fade(
    ax: Axes, geo: Geometry, lo: float, hi: float, y: float, colour: str, gid: str, rising: bool
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
    return tuple(share * c + (1 - share) for c in to_rgb(colour))  # type: ignore[return-value]


def _hatch(ax: Axes, geo: Geometry, when: When, y: float, group: str, gid: str) -> None:
    patch = _rect(
        ax,
        geo,
        when.lo,
        when.hi,
        y,
        0.3,
        facecolor=_tint(COURSE_COLOURS[group]),
        edgecolor=HATCH_COLOURS[group],
        hatch="/////",
        linewidth=0.8,
        zorder=3,
    )
    patch.set_gid(gid)


def draw_course(
    ax: Axes, geo: Geometry, course: Course, y: float, several: bool, horizon: float | None
) -> bool:
    """Draws a course on row ``y`` (named in its tag when its lane has ``several`` rows); an
    ongoing course runs to ``horizon``. Returns whether dose ticks were drawn, for the legend."""
    colour = COURSE_COLOURS[course.group]
    start, end, tail = course.start, course.end, geo.tail
    right_edge: float | None = None
    doses_drawn = False
    if start is None and end is None:
        note = "timing not stated in the source"
        if course.summary:
            note += f" ({course.summary})"
        if several:
            note = f"{course.label}: {note}"
        write_note(ax, y, note)
        return doses_drawn
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
                solid_hi = max(horizon or start.hi, start.hi + tail)
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
        doses_drawn = True
    edges = [w for w in (start, end) if w]
    left = min(w.lo for w in edges) if edges else 0.0
    right = right_edge if right_edge is not None else max(w.hi for w in edges)
    geo.occupy(y, left, right)
    tag = course.label if several else ""
    if course.doses:
        count = f"{len(course.doses)} doses"
        tag = f"{tag} · {count}" if tag else count
    elif course.summary and end is None:
        tag = f"{tag} · {course.summary}" if tag else course.summary
    if tag:
        write_label(ax, geo, right, [y], tag, 6.5)
    return doses_drawn
