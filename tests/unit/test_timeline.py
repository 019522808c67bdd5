"""Case timeline renderer: every example draws, SVG output is reproducible, partial dates and
relative times are drawn honestly, and what cannot be placed is listed under the plot."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from adapter.record.validate import validate_record
from adapter.timeline import build_timeline, render_timeline
from tests.conftest import CASE_FILES, ROOT, load_case

CASE_NAMES = [p.stem for p in CASE_FILES]


def _record(**extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "record_id": "timeline-test",
        "schema_version": "1.0",
        "source": {"citation": "Doe et al. Test Journal 2021;1:1-2.", "case_number": 1},
        "patient": {"sex": "female"},
        "diagnoses": [
            {"id": "dx1", "condition": "sezary_syndrome", "role": "primary", "diagnosed": "2020"}
        ],
    }
    record.update(extra)
    assert validate_record(record) == []
    return record


def _svg(record: dict[str, Any], tmp_path: Path, name: str = "t.svg") -> str:
    target = tmp_path / name
    render_timeline(record, target)
    return target.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_every_example_renders_as_png_and_svg(name: str, tmp_path: Path) -> None:
    record = load_case(name)
    png, svg = tmp_path / f"{name}.png", tmp_path / f"{name}.svg"
    render_timeline(record, png)
    render_timeline(record, svg)
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert png.stat().st_size > 10_000
    text = svg.read_text(encoding="utf-8")
    assert "<svg" in text
    assert text.rstrip().endswith("</svg>")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_svg_is_byte_identical_across_renders(name: str, tmp_path: Path) -> None:
    record = load_case(name)
    render_timeline(record, tmp_path / "a.svg")
    render_timeline(record, tmp_path / "b.svg")
    first = (tmp_path / "a.svg").read_bytes()
    assert first == (tmp_path / "b.svg").read_bytes()
    assert b"<dc:date>" not in first


@pytest.mark.parametrize("suffix", [".pdf", ".jpg", ".txt", ""])
def test_an_unsupported_suffix_is_refused_before_anything_is_written(
    suffix: str, tmp_path: Path
) -> None:
    target = tmp_path / f"timeline{suffix}"
    with pytest.raises(ValueError, match=r"\.svg or \.png"):
        render_timeline(load_case("caruso2022-02"), target)
    assert not target.exists()


def test_the_suffix_is_case_insensitive(tmp_path: Path) -> None:
    render_timeline(load_case("lhes-01"), tmp_path / "case.SVG")
    assert (tmp_path / "case.SVG").read_text(encoding="utf-8").lstrip().startswith("<?xml")


def test_a_month_precision_start_is_hatched_and_a_day_precision_one_is_not(
    tmp_path: Path,
) -> None:
    record = _record(
        treatments=[
            {
                "id": "t1",
                "line": 1,
                "kind": "drug",
                "agents": [{"drug": "bexarotene"}],
                "start": "2020-06",
                "end": "2020-12-15",
            },
            {
                "id": "t2",
                "line": 2,
                "kind": "drug",
                "agents": [{"drug": "gemcitabine"}],
                "start": "2021-01-04",
                "end": "2021-02",
            },
        ]
    )
    svg = _svg(record, tmp_path)
    assert 'id="uncertain-start-t1"' in svg
    assert 'id="uncertain-end-t1"' not in svg
    assert 'id="uncertain-start-t2"' not in svg
    assert 'id="uncertain-end-t2"' in svg
    course = build_timeline(record).courses["t1"]
    assert course.start is not None
    assert (course.start.lo, course.start.hi) == (
        date(2020, 6, 1).toordinal(),
        date(2020, 7, 1).toordinal(),
    )


def test_open_and_unknown_ends_are_told_apart(tmp_path: Path) -> None:
    svg = _svg(load_case("caruso2022-04"), tmp_path)
    assert 'id="ongoing-t8"' in svg  # mogamulizumab, still given at the report
    assert 'id="unknown-end-t1"' in svg  # nbUVB from 2018-01, end not stated
    assert 'id="uncertain-end-t3"' in svg  # gemcitabine ended "December 2019"


def test_graded_adverse_events_produce_the_grade_legend(tmp_path: Path) -> None:
    record = _record(
        treatments=[
            {
                "id": "t1",
                "line": 1,
                "kind": "drug",
                "agents": [{"drug": "mogamulizumab"}],
                "start": "2021-03-01",
                "end": "2021-09-01",
            }
        ],
        adverse_events=[
            {
                "id": "ae1",
                "term": "drug_eruption_lichenoid",
                "text": "lichenoid eruption",
                "grade": 2,
                "onset": "2021-05-10",
                "suspects": [{"treatment": "t1"}],
            },
            {
                "id": "ae2",
                "term": "fever",
                "text": "fever",
                "onset": "2021-06",
                "suspects": [{"treatment": "t1"}],
            },
        ],
    )
    svg = _svg(record, tmp_path)
    for grade in range(1, 6):
        assert f'id="legend-grade-{grade}"' in svg
        assert f"<!-- grade {grade} -->" in svg
    assert 'id="legend-grade-none"' in svg  # the fever has no grade: hollow marker
    assert 'id="ae-grade-2-' in svg
    assert 'id="ae-grade-none-' in svg


def test_no_grade_legend_without_adverse_events(tmp_path: Path) -> None:
    assert "legend-grade" not in _svg(load_case("caruso2022-06"), tmp_path)


def test_expanded_doses_are_drawn_as_ticks(tmp_path: Path) -> None:
    record = load_case("caruso2022-02")
    assert len(build_timeline(record).courses["t2"].doses) == 14
    assert 'id="doses-t2"' in _svg(record, tmp_path)


def test_dose_ticks_follow_a_stated_cycle_date() -> None:
    timeline = build_timeline(load_case("caruso2022-02"))
    ticks = timeline.courses["t2"].doses
    assert ticks[4] == date(2021, 1, 21).toordinal()  # "Second cycle ... on 01/21/2021"
    assert ticks[-1] == date(2021, 5, 27).toordinal()


def test_a_course_ends_before_its_end_before_bound() -> None:
    """caruso2022-04: gemcitabine "(December 2019)" ended before the radiotherapy of 7/12/2019."""
    timeline = build_timeline(load_case("caruso2022-04"))
    gemcitabine, radiotherapy = timeline.courses["t3"], timeline.courses["t4"]
    assert gemcitabine.end is not None and radiotherapy.start is not None
    assert gemcitabine.end.hi < radiotherapy.start.lo
    assert not gemcitabine.doses  # six cycles cannot fit before it: no dose ticks


def test_a_time_relative_to_a_placed_course_keeps_its_uncertainty() -> None:
    # CR at day +150 after a transplant known only to the month (September 2021)
    timeline = build_timeline(load_case("caruso2022-02"))
    assert timeline.calendar
    cr = next(m for m in timeline.marks if m.row == "t3" and m.category == "CR")
    assert cr.when is not None
    assert cr.when.lo == date(2021, 9, 1).toordinal() + 150
    assert cr.when.hi == date(2021, 10, 1).toordinal() + 150


def test_unplaceable_events_are_listed_under_the_plot(tmp_path: Path) -> None:
    record = load_case("caruso2022-02")
    notes = " ".join(build_timeline(record).footnotes)
    assert "CR skin" in notes and "L2 mogamulizumab" in notes
    assert "Mucositis" in notes
    assert 'id="not-placed"' in _svg(record, tmp_path)


@pytest.mark.parametrize(
    ("name", "axis"),
    [
        ("alemtuzumab2014-02", "Weeks from start of alemtuzumab"),
        ("caruso2022-12", "Days from start of mogamulizumab"),
        ("lhes-01", "Weeks from start of mogamulizumab (1st course)"),
    ],
)
def test_records_without_calendar_dates_get_a_relative_axis(name: str, axis: str) -> None:
    timeline = build_timeline(load_case(name))
    assert not timeline.calendar
    assert timeline.axis_label == axis


def test_relative_axis_places_death_and_events_by_their_offsets() -> None:
    timeline = build_timeline(load_case("alemtuzumab2014-02"))
    death = next(m for m in timeline.marks if m.kind == "death")
    assert death.when is not None and 700 < death.when.mid < 760  # 24 months after the start
    course = timeline.courses["t1"]
    assert course.start is not None and course.end is not None
    assert (course.start.lo, course.end.hi) == (0.0, 56.0)  # 8 weeks
    rash = next(m for m in build_timeline(load_case("caruso2022-12")).marks if m.kind == "ae")
    assert rash.when is not None and rash.when.lo == 110
    assert rash.until is not None and rash.until.lo == 140


def test_a_record_with_nothing_to_place_still_draws(tmp_path: Path) -> None:
    record = _record(
        diagnoses=[{"id": "dx1", "condition": "mycosis_fungoides", "role": "primary"}],
        treatments=[
            {"id": "t1", "line": 1, "kind": "puva"},
            {"id": "t2", "line": 2, "kind": "drug", "agents": [{"drug": "bexarotene"}]},
        ],
    )
    svg = _svg(record, tmp_path)
    assert "<svg" in svg
    render_timeline(record, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 0


def test_importing_the_module_does_not_import_matplotlib() -> None:
    code = "import sys, adapter.timeline; sys.exit('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False)
    assert result.returncode == 0
