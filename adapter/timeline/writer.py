"""Writes a placed timeline to an SVG or PNG file, the same bytes for the same record.

Drawing and saving happen under :data:`~adapter.timeline.style.RC_PARAMS` (a fixed SVG hash
salt, text as paths, one font); the SVG carries no date and the PNG no software version, which
would otherwise differ between runs and machines.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

from adapter.timeline.figure import draw_figure
from adapter.timeline.model import Timeline
from adapter.timeline.style import RC_PARAMS


def write_timeline(timeline: Timeline, output: Path, fmt: str) -> None:
    """Draws ``timeline`` and saves it to ``output`` as ``fmt`` (``svg`` or ``png``, 150 dpi)."""
    with matplotlib.rc_context(RC_PARAMS):  # type: ignore[arg-type]
        fig = draw_figure(timeline)
        if fmt == "svg":
            fig.savefig(output, format="svg", metadata={"Date": None})
        else:
            fig.savefig(output, format="png", dpi=150, metadata={"Software": None})
