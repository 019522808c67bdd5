"""Draws the events: responses above a course, adverse events below it, milestones on top.

A marker sits at the middle of the days its time may denote; when that is more than a day, a
whisker (or, for diagnosis, death and follow-up, a band across all lanes) shows the span, so
an uncertain date never looks like a known one. Labels are written after all markers, in
record order, so that they avoid every marker and not only the earlier ones.
"""

from __future__ import annotations

from matplotlib.axes import Axes

from adapter.timeline.canvas import write_label
from adapter.timeline.layout import Geometry
from adapter.timeline.model import Mark
from adapter.timeline.style import GRADE_COLOURS, RESPONSE_COLOURS


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def draw_marks(ax: Axes, geo: Geometry, marks: list[Mark], rows: dict[str, float]) -> None:
    """Draws every placed mark on its row (``rows``: the centre of each row), then the labels."""
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
            colour = RESPONSE_COLOURS.get(mark.category or "", "white")
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
            face = GRADE_COLOURS.get(mark.grade or 0, "white")
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
        write_label(ax, geo, day, slots, _clip(mark.label, 38), 7 if mark.kind != "ae" else 6.5)


def _draw_milestone(ax: Axes, geo: Geometry, mark: Mark, index: int, y: float) -> None:
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
