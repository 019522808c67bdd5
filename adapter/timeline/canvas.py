"""The two kinds of text written inside the plot: a label beside a marker or bar, a row note.

Shared by the course bars, the event markers and the figure, so every label takes its room
through :meth:`~adapter.timeline.layout.Geometry.label_slot` and looks the same.
"""

from __future__ import annotations

from matplotlib.axes import Axes

from adapter.timeline.layout import Geometry


def write_label(
    ax: Axes, geo: Geometry, day: float, slots: list[float], text: str, size: float
) -> None:
    """Writes a label beside a marker at the first slot with room, right then left."""
    anchor, y, align = geo.label_slot(day, slots, text, size)
    ax.text(
        geo.x(anchor),
        y,
        text,
        ha=align,
        va="center",
        fontsize=size,
        color="#222222",
        zorder=6,
    )


def write_note(ax: Axes, y: float, text: str) -> None:
    """A grey italic note at the left of a row: what the row would show, and why it does not."""
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
