"""The legend: only what the picture shows, grouped (courses, response, adverse events, milestones).

An entry appears only when something drawn needs it (the grade scale is the exception: shown
whole once any adverse event is placed, so a reader can rank the one shade they see). Legend
markers keep the ids of the plot's markers (``legend-grade-2``) so the SVG can be checked.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from adapter.timeline.model import Timeline
from adapter.timeline.style import COURSE_COLOURS, GRADE_COLOURS, RESPONSE_COLOURS

_COURSE_KINDS = {
    "drug": "drug course",
    "light": "photopheresis / phototherapy",
    "radiation": "radiotherapy",
    "transplant": "transplant / surgery",
}
_RESPONSE_NAMES = {
    "CR": "CR  complete response",
    "PR": "PR  partial response",
    "SD": "SD  stable disease",
    "PD": "PD  progressive disease",
    "relapse": "relapse",
}


def draw_legend(
    fig: Figure, timeline: Timeline, doses_drawn: bool, left: float, top: float
) -> None:
    """The legend at ``left``, ``top`` (figure fraction), in groups with bold headers."""
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
        for group, name in _COURSE_KINDS.items():
            if any(c.group == group for c in drawn):
                add(Patch(facecolor=COURSE_COLOURS[group]), name)
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
        if doses_drawn:
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
        for category, colour in RESPONSE_COLOURS.items():
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
        for grade, colour in GRADE_COLOURS.items():
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
