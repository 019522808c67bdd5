"""The look of a timeline: colours shared by the plot and its legend, and matplotlib settings.

One place for the palette, so that a course bar, a response marker or a grade shade and its
legend entry cannot drift apart.
"""

from __future__ import annotations

from typing import Any

# Okabe-Ito / Tol colours: distinguishable with the common colour-vision deficiencies.
COURSE_COLOURS = {
    "drug": "#0072B2",
    "light": "#88CCEE",
    "radiation": "#CC79A7",
    "transplant": "#555555",
}
HATCH_COLOURS = {
    "drug": "#0072B2",
    "light": "#2C7FB8",
    "radiation": "#A8528A",
    "transplant": "#333333",
}
RESPONSE_COLOURS = {
    "CR": "#009E73",
    "PR": "#F0E442",
    "SD": "#BBBBBB",
    "PD": "#D55E00",
    "relapse": "#882255",
}
GRADE_COLOURS = {1: "#FEE391", 2: "#FEC44F", 3: "#EC7014", 4: "#993404", 5: "#000000"}

RC_PARAMS: dict[str, Any] = {
    "svg.hashsalt": "fhir-oncology-adapter-timeline",
    "svg.fonttype": "path",
    "date.epoch": "1970-01-01T00:00:00",
    "font.family": "DejaVu Sans",
    "hatch.linewidth": 0.7,
    "axes.unicode_minus": False,
}
"""In force while a timeline is drawn and written: a fixed SVG hash salt and text as paths make
the same record give the same bytes on every machine; the date epoch matches the day numbers of
:mod:`adapter.timeline.layout`; label widths there are estimated for DejaVu Sans."""
