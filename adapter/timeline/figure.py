"""Composes the picture: page size, lanes and their labels, the time axis, then courses, events,
title, the list of what could not be placed, and the legend.

The page grows with the lanes and with the footnote lines, never shrinks the plot to fit; the
time axis is a date axis on the calendar and a plain one in days, weeks or months otherwise.
"""

from __future__ import annotations

import textwrap

from matplotlib import dates as mdates
from matplotlib.figure import Figure
from matplotlib.ticker import MultipleLocator

from adapter.timeline.bars import draw_course
from adapter.timeline.canvas import write_note
from adapter.timeline.layout import Geometry, extent, lay_out_rows
from adapter.timeline.legend import draw_legend
from adapter.timeline.markers import draw_marks
from adapter.timeline.model import Timeline


def _footnote_lines(items: list[str]) -> list[str]:
    """The unplaced events as at most eight lines of text under the plot."""
    if not items:
        return []
    text = "Not placed on the time axis: " + "; ".join(items) + "."
    lines = textwrap.wrap(text, 175)
    if len(lines) > 8:
        lines = [*lines[:7], textwrap.shorten(" ".join(lines[7:]), 170, placeholder=" …")]
    return lines


def draw_figure(timeline: Timeline) -> Figure:
    """The whole picture: lanes, axis, courses, events, title, unplaced events, legend."""
    rows, lane_spans, total = lay_out_rows(timeline)
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
    span = extent(timeline)
    geo = Geometry.fit(timeline, span, axis_width_in)
    xmin, xmax = geo.xmin, geo.xmax
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

    if span is None:
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

    doses_drawn = False
    for lane, _top, _bottom in lane_spans:
        several = len({rows[r] for r in lane.rows}) > 1
        if len(lane.rows) > 1 and not several:
            write_note(ax, rows[lane.rows[0]], "timing not stated in the source")
            continue
        drawn: set[float] = set()
        for row in lane.rows:
            drawable = timeline.courses.get(row)
            if drawable is not None and rows[row] not in drawn:
                ticked = draw_course(ax, geo, drawable, rows[row], several, timeline.horizon)
                doses_drawn = doses_drawn or ticked
            drawn.add(rows[row])
    draw_marks(ax, geo, timeline.marks, rows)

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
    draw_legend(
        fig, timeline, doses_drawn, 1 - (right_in - 0.25) / width_in, 1 - top_in / height_in
    )
    return fig
