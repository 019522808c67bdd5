"""Record-layer rules added for hostile and careless input (#11): the window of years, offsets
that stay in the calendar, a cap on the number of errors, and the promise behind them: a record
the validator accepts never makes a mapper fail."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.mapping import ConversionOptions, convert_record
from adapter.pipeline import convert_bytes
from adapter.record.dates import EARLIEST_YEAR, LATEST_YEAR
from adapter.record.errors import RecordErrors
from adapter.record.validate import MAX_OFFSET, validate_record
from adapter.synthetic import generate_cases
from tests.conftest import CASE_FILES, load_case


def test_the_9999_12_20_record_is_refused_not_a_crash() -> None:
    """#11: caruso2022-02 with ``treatments[1].start = "9999-12-20"`` and no end was schema-valid
    and raised OverflowError in the mappers (a 500 on the gateway)."""
    record = copy.deepcopy(load_case("caruso2022-02"))
    record["treatments"][1]["start"] = "9999-12-20"
    record["treatments"][1].pop("end", None)
    outcome = convert_bytes("request", json.dumps(record).encode(), ConversionOptions())
    assert outcome.bundle is None
    assert [(e.path, e.rule) for e in outcome.errors] == [("$.treatments[1].start", "date-window")]
    assert outcome.errors[0].message == (
        f"'9999-12-20' is outside the accepted years {EARLIEST_YEAR} to {LATEST_YEAR}"
    )


@pytest.mark.parametrize(
    ("value", "valid"),
    [("1899-12-31", False), ("1900", True), ("2100-12", True), ("2101", False)],
)
def test_window_edges(value: str, valid: bool) -> None:
    record = copy.deepcopy(load_case("caruso2022-02"))
    record["treatments"][0]["start"] = value
    record["treatments"][0].pop("end", None)
    rules = {e.rule for e in validate_record(record)}
    assert ("date-window" not in rules) is valid


def test_recorded_at_is_held_to_the_window_too() -> None:
    record = copy.deepcopy(load_case("caruso2022-02"))
    record["recorded_at"] = "0001-01-01T00:00:00Z"
    assert [(e.path, e.rule) for e in validate_record(record)] == [("$.recorded_at", "date-window")]


@pytest.mark.parametrize(("unit", "limit"), sorted(MAX_OFFSET.items()))
def test_offsets_beyond_a_century_are_refused(unit: str, limit: int) -> None:
    record = copy.deepcopy(load_case("caruso2022-02"))
    treatment = record["treatments"][0]["id"]
    record["adverse_events"][0]["onset_after"] = {"treatment": treatment, unit: limit}
    assert validate_record(record) == []
    record["adverse_events"][0]["onset_after"][unit] = limit + 1
    [error] = validate_record(record)
    assert (error.path, error.rule) == (f"$.adverse_events[0].onset_after.{unit}", "date-window")


def _record_with_bad_observations(count: int) -> dict[str, Any]:
    record = copy.deepcopy(load_case("caruso2022-02"))
    record["observations"] = [
        {"kind": "lymphocytes", "value": 1, "date": "2019-07", "bogus": index}
        for index in range(count)
    ]
    return record


def test_max_errors_keeps_the_first_in_path_order_and_counts_the_rest() -> None:
    record = _record_with_bad_observations(12)
    everything = validate_record(record)
    assert len(everything) == 12 and everything.omitted == 0
    capped = validate_record(record, max_errors=5)
    assert isinstance(capped, RecordErrors)
    assert list(capped) == list(everything[:5])
    assert (capped.omitted, capped.total) == (7, 12)
    assert validate_record(record, max_errors=100) == everything


def test_far_more_errors_than_the_cap_are_counted_not_rendered() -> None:
    """40,000 bad observations (#11): the count comes from the fast validator, and only the
    kept errors are rendered by the reference."""
    record = _record_with_bad_observations(2000)
    everything = validate_record(record)
    capped = validate_record(record, max_errors=10)
    assert len(capped) == 10 and capped.total == len(everything) == 2000
    assert list(capped) == sorted(capped)
    assert set(capped) <= set(everything)
    assert validate_record(record, max_errors=0).omitted == 2000


def test_a_valid_record_has_no_errors_and_nothing_omitted() -> None:
    result = validate_record(load_case("caruso2022-02"), max_errors=5)
    assert result == [] and result.omitted == 0


# --- nothing the validator accepts makes a mapper fail --------------------------------------

_BASES = [load_case(p.stem) for p in CASE_FILES] + list(generate_cases(40, seed=3))


def _leaves(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaves(v, (*prefix, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _leaves(v, (*prefix, i))]
    return [prefix]


def _extreme_like(value: Any, draw: st.DrawFn) -> Any:
    """A value of the same kind, pushed to an edge: huge or negative counts, dates at the ends
    of the window and of the calendar, other precisions."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return draw(st.sampled_from([0, 1, -1, 7, 366, 5000, 36_525, 10**6, 10**12, -(10**9)]))
    if isinstance(value, float):
        return draw(st.sampled_from([1e-300, 1e300, 0.1, 5e15]))
    if isinstance(value, str) and value[:4].isdigit() and len(value) in (4, 7, 10):
        ends = ["1900-01-01", "2100-12-31", "2100", "2100-12", "9999-12-20", "9999-12-31"]
        return draw(st.sampled_from(ends))
    return value


_DATE_KEYS = {"start", "end", "date", "onset", "birth_date"}


@st.composite
def _edge_records(draw: st.DrawFn) -> dict[str, Any]:
    """A base record with one to three leaves pushed to an edge; dates are picked half the
    time (a start moved late with its end dropped is how #11 found the overflow)."""
    record = copy.deepcopy(draw(st.sampled_from(_BASES)))
    leaves = _leaves(record)
    dates = [p for p in leaves if p and p[-1] in _DATE_KEYS]
    for _ in range(draw(st.integers(1, 3))):
        pool = dates if dates and draw(st.booleans()) else leaves
        path = draw(st.sampled_from(pool))
        parent = record
        for part in path[:-1]:
            parent = parent[part]
        if path[-1] not in parent:
            continue  # dropped by an earlier step
        parent[path[-1]] = _extreme_like(parent[path[-1]], draw)
        if path[-1] == "start" and draw(st.booleans()):
            parent.pop("end", None)
    return record


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=_edge_records(), version=st.sampled_from(["R4", "R5"]))
def test_a_record_the_validator_accepts_always_converts(
    record: dict[str, Any], version: Any
) -> None:
    if validate_record(record):
        return
    bundle = convert_record(record, ConversionOptions(fhir_version=version)).bundle
    assert bundle["entry"]


def _with_relative_time_everywhere(relative: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """caruso2022-02 with ``relative`` at every place the schema allows a relative time."""
    record = copy.deepcopy(load_case("caruso2022-02"))
    record["patient"]["deceased"] = {"after": dict(relative)}
    treatment = record["treatments"][0]
    treatment.pop("start", None)
    treatment["start_after"] = dict(relative)
    treatment.setdefault("responses", []).append(
        {"compartment": "overall", "text": "improved", "after": dict(relative)}
    )
    event = record["adverse_events"][0]
    event.pop("onset", None)
    event["onset_after"] = dict(relative)
    event.pop("end", None)
    event["end_after"] = dict(relative)
    record["observations"] = [{"kind": "lymphocytes", "value": 1, "after": dict(relative)}]
    record["follow_up"] = {"status": "stable", "after": dict(relative)}
    responses = len(treatment["responses"]) - 1
    return record, [
        "$.patient.deceased.after",
        "$.treatments[0].start_after",
        f"$.treatments[0].responses[{responses}].after",
        "$.adverse_events[0].onset_after",
        "$.adverse_events[0].end_after",
        "$.observations[0].after",
        "$.follow_up.after",
    ]


def test_every_relative_time_the_schema_allows_is_checked() -> None:
    """The rules on relative times visit the places the schema allows one (read from the
    schema, not from a walk of the whole record): a reference to no treatment is refused at
    each of them, and a record with valid ones passes."""
    record, places = _with_relative_time_everywhere({"treatment": "t1", "days": 3})
    assert validate_record(record) == [], validate_record(record)
    record, places = _with_relative_time_everywhere({"treatment": "nope", "days": 3})
    found = [(e.path, e.rule) for e in validate_record(record)]
    assert sorted(found) == sorted((f"{place}.treatment", "reference") for place in places)
