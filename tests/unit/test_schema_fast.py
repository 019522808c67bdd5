"""The fast schema verdict (jsonschema-rs) equals the reference's (jsonschema) on the examples,
on synthetic records and on mutations of both, including the corners where the two libraries
read a schema differently; and the date window holds in both."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.record.schema import (
    _keywords,
    _walk_schema,
    fast_error_count,
    fast_validator,
    reference_errors,
    schema_valid,
)
from adapter.record.validate import validate_record
from adapter.synthetic import generate_cases
from tests.conftest import CASE_FILES, load_case

_SYNTHETIC = list(generate_cases(60, seed=21))
_RECORDS = [load_case(p.stem) for p in CASE_FILES] + _SYNTHETIC


def _reference_valid(record: Any) -> bool:
    return next(iter(reference_errors(record)), None) is None


def _fast_valid(record: Any) -> bool | None:
    """The fast verdict, or None when jsonschema-rs cannot take the value at all."""
    validator = fast_validator()
    assert validator is not None, "the case-record schema must be checkable by the fast path"
    try:
        return bool(validator.is_valid(record))
    except Exception:
        return None


def _assert_same_verdict(record: Any) -> None:
    reference = _reference_valid(record)
    fast = _fast_valid(record)
    assert fast is None or fast == reference, json.dumps(record, default=repr)[:400]
    assert schema_valid(record) == reference
    if not reference and isinstance(record, dict):
        count = fast_error_count(record)
        assert count is None or count == len(validate_record(record)), record


def test_examples_and_synthetic_records_are_valid_in_both() -> None:
    for record in _RECORDS:
        assert _fast_valid(record) is True
        assert _reference_valid(record)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_paths(value, (*prefix, index)))
    return found


def _mutate(record: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    if not path:
        return value if action == "replace" else record
    parent = record
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = value
    elif action == "add" and isinstance(parent, dict):
        parent[f"{last}_x"] = value
    elif action == "append" and isinstance(parent[last], list):
        parent[last].append(value)
    return record


# Values chosen for the corners: where Python's and Rust's regular expressions differ (a final
# newline before ``$``, what ``\s`` matches), numbers at the edges of types, dates at the edges
# of the calendar and of the window, strings Rust cannot hold (lone surrogates).
_CORNERS = st.sampled_from(
    [
        "t1\n",
        "caruso2022-02\n",
        "10.1000/x\x1f",
        "10.1000/x\u00a0y",
        "2019-07\n",
        "1899",
        "1900",
        "2100-12-31",
        "2101",
        "9999-12-20",
        "2019-02-29",
        "2020-02-29",
        "\u0662\u0660\u0661\u0669",
        "2019-07-08T10:00:00Z",
        "2101-01-01T00:00:00Z",
        "1899-12-31T23:59:59+01:00",
        "\ud800",
        "",
        "T4",
        "N0",
        0,
        -1,
        1,
        5,
        6,
        131,
        True,
        False,
        None,
        2**63,
        2**64 + 1,
        -(2**70),
        1e300,
        -0.0,
        0.5,
        [],
        {},
        ["t1", "t1"],
    ]
)
_SCALARS = st.one_of(
    _CORNERS,
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=5,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(min_value=0),
    picks=st.lists(st.integers(min_value=0), min_size=1, max_size=3),
    action=st.sampled_from(["replace", "replace", "delete", "add", "append"]),
    value=_VALUES,
)
def test_mutated_records_get_the_same_verdict(
    index: int, picks: list[int], action: str, value: Any
) -> None:
    record = copy.deepcopy(_RECORDS[index % len(_RECORDS)])
    for pick in picks:
        paths = _paths(record)
        record = _mutate(record, paths[pick % len(paths)], action, copy.deepcopy(value))
    _assert_same_verdict(record)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("record_id",), "caruso2022-02\n"),
        (("treatments", 0, "start"), "2019-07\n"),
        (("treatments", 0, "start"), "9999-12-20"),
        (("treatments", 0, "start"), "1899-12"),
        (("treatments", 0, "start"), "2100-12-31"),
        (("recorded_at",), "2101-01-01T00:00:00Z"),
        (("source", "case_number"), 2**64 + 1),
        (("source", "case_number"), True),
        (("source", "case_number"), 1e300),
        (("patient", "sex"), "\ud800"),
    ],
)
def test_corner_values_get_the_same_verdict(path: tuple[Any, ...], value: Any) -> None:
    record = copy.deepcopy(load_case("caruso2022-02"))
    _assert_same_verdict(_mutate(record, path, "replace", value))


def test_the_date_window_is_in_both_validators() -> None:
    record = copy.deepcopy(load_case("caruso2022-02"))
    record["treatments"][1]["start"] = "9999-12-20"
    assert _fast_valid(record) is False
    [error] = list(reference_errors(record))
    assert error.validator == "date-window"


def test_schema_walk_renames_keywords_not_properties() -> None:
    """A property named "pattern" must stay a property when patterns are rewritten."""
    schema = {
        "type": "object",
        "properties": {"pattern": {"type": "string", "pattern": "^a$"}},
        "$defs": {"x": {"anyOf": [{"pattern": "b"}]}},
    }
    renamed = _walk_schema(
        schema, lambda n: {("P" if k == "pattern" else k): v for k, v in n.items()}
    )
    assert renamed["properties"] == {"pattern": {"type": "string", "P": "^a$"}}
    assert renamed["$defs"]["x"]["anyOf"] == [{"P": "b"}]
    assert {"type", "properties", "pattern", "$defs", "anyOf"} <= _keywords(schema)


@pytest.mark.parametrize(
    ("path", "value"),
    [(("record_id",), "caruso2022-02\n"), (("treatments", 0, "start"), "2019-07\n")],
)
def test_dollar_means_the_end_of_the_string(path: tuple[Any, ...], value: str) -> None:
    """Python's ``$`` also matches before a final newline; JSON Schema's (ECMA-262) does not,
    and an identifier with a newline must not reach FHIR ids."""
    record = _mutate(copy.deepcopy(load_case("caruso2022-02")), path, "replace", value)
    errors = validate_record(record)
    assert any(e.rule == "pattern" for e in errors), errors
    assert _fast_valid(record) is False


def test_compile_pattern_reads_dollar_only_outside_classes_and_escapes() -> None:
    from adapter.record.schema import compile_pattern

    assert compile_pattern("^a$").pattern == r"^a\Z"
    assert compile_pattern(r"^[$]\$x$").pattern == r"^[$]\$x\Z"
    assert compile_pattern(r"^[]$]$").pattern == r"^[]$]\Z"
    assert compile_pattern(r"^[^]$]$").pattern == r"^[^]$]\Z"
