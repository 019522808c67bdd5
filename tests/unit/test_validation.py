"""Record validation: the examples pass, every broken example fails with its exact message,
and no mutation of a valid record can make the validator crash."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.cli import main
from adapter.pipeline import validated_record
from adapter.record.validate import validate_record
from tests.conftest import CASE_FILES, INVALID, load_case

INVALID_FILES = sorted(INVALID.glob("*.json"))


def test_there_are_22_examples_and_at_least_10_invalid_ones() -> None:
    assert len(CASE_FILES) == 22
    assert len(INVALID_FILES) >= 10


def test_every_example_case_is_valid(case_name: str) -> None:
    assert validate_record(load_case(case_name)) == []


def test_record_id_is_the_file_name(case_name: str) -> None:
    assert load_case(case_name)["record_id"] == case_name


@pytest.mark.parametrize("path", INVALID_FILES, ids=[p.stem for p in INVALID_FILES])
def test_invalid_example_fails_with_its_expected_message(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    relative = path.relative_to(Path(__file__).resolve().parents[2]).as_posix()
    expected = path.with_suffix(".expected").read_text(encoding="utf-8")
    assert main(["validate", relative]) == 1
    captured = capsys.readouterr()
    assert captured.err == expected
    for line in captured.err.splitlines():
        assert line.startswith(f"{relative}: $")


def test_cli_validate_examples_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--quiet", *map(str, CASE_FILES)]) == 0
    assert capsys.readouterr().err == ""


def test_missing_file_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "no/such/file.json"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("no/such/file.json: $: cannot read file")
    assert "Traceback" not in err


# --- hypothesis: mutations of real records never crash the validator --------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["2019-02-30", "2019-13", "T9", "", "1e309"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_paths(value, (*prefix, index)))
    return found


def _mutate(record: dict[str, Any], path: tuple[Any, ...], action: str, value: Any) -> Any:
    if not path:
        return value if action == "replace" else record
    parent: Any = record
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = value
    elif isinstance(parent, dict):
        parent[f"{last}_x"] = value
    return record


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=st.sampled_from([p.stem for p in CASE_FILES]),
    pick=st.integers(min_value=0),
    action=st.sampled_from(["replace", "delete", "add"]),
    value=_VALUES,
)
def test_mutated_records_give_clean_errors_never_a_crash(
    case: str, pick: int, action: str, value: Any
) -> None:
    record = copy.deepcopy(load_case(case))
    paths = _paths(record)
    mutated = _mutate(record, paths[pick % len(paths)], action, value)
    data = json.dumps(mutated, allow_nan=True).encode()
    result, errors = validated_record(data)
    assert (result is None) == bool(errors)
    for error in errors:
        assert error.path.startswith("$")
        assert error.message and "Traceback" not in error.message


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    result, errors = validated_record(data)
    assert result is None or errors == []


def test_the_disease_status_code_is_not_a_record_observation_kind() -> None:
    """observations.json holds LOINC 97509-4 to code the adapter's own disease status
    Observations; a record may not state a measurement of that kind."""
    record = load_case("caruso2022-02")
    record.setdefault("observations", []).append(
        {"kind": "cancer_disease_status", "date": "2020-01", "text": "improved"}
    )
    errors = validate_record(record)
    assert any("observations" in str(e) and "cancer_disease_status" in str(e) for e in errors)
    record["observations"][-1]["kind"] = "ldh"
    assert not any("cancer_disease_status" in str(e) for e in validate_record(record))
