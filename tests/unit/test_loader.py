"""The record loader: the fast parser returns exactly what the reference parser returns (or
steps aside), the nesting guard is linear and exact, and non-finite numbers are refused with
their path."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.mapping import ConversionOptions
from adapter.pipeline import convert_bytes
from adapter.record.errors import RecordInputError
from adapter.record.loader import (
    MAX_DEPTH,
    _fast_parse,
    _nesting_depth_exceeds,
    _reference_parse,
    parse_json_object,
)
from adapter.synthetic import generate_cases
from tests.conftest import CASE_FILES


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types all the way down (``1 == 1.0`` is not enough here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _reference_or_error(text: str) -> Any:
    try:
        return _reference_parse(text)
    except RecordInputError as exc:
        return exc.errors


def _check_fast_matches_reference(text: str) -> bool:
    """The fast parser either steps aside or returns exactly the reference's value."""
    fast = _fast_parse(text)
    if fast is None:
        return False
    reference = _reference_or_error(text)
    assert isinstance(reference, dict), (text, reference)
    assert _same(fast, reference), text
    return True


def test_fast_parser_takes_the_examples_and_matches_the_reference() -> None:
    for path in CASE_FILES:
        assert _check_fast_matches_reference(path.read_text(encoding="utf-8")), path.name


def test_fast_parser_takes_synthetic_records_with_integral_floats() -> None:
    """``json.dumps`` writes 2.0 for a float dose; the reference makes it 2, so must orjson's
    path, and such records must not all fall back to the slow parser."""
    texts = [json.dumps(r) for r in generate_cases(200, seed=5)]
    assert any(".0," in t or ".0}" in t for t in texts)
    taken = sum(_check_fast_matches_reference(t) for t in texts)
    assert taken == len(texts)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"a": 1, "a": 2}', "duplicate key"),
        ('{"a": {"b": 1, "c": 2, "b": 3}}', "nested duplicate key"),
        ('{"k\\u0022": 1, "k\\"": 2}', "duplicate spelled two ways"),
        ('{"a": 123456789012345678901234}', "integer beyond 64 bits"),
        ('{"a": -9223372036854775809}', "integer below int64"),
        ('{"a": NaN}', "NaN"),
        ('{"a": 1e400}', "overflow"),
        ('[{"a": 1}]', "not an object"),
        ('{"a": "\\ud800"}', "lone surrogate"),
        ('{"a": ' * 40 + "[" * 30 + "]" * 30 + "}" * 40, "deeper than the limit"),
    ],
)
def test_fast_parser_steps_aside_where_it_could_differ(text: str, why: str) -> None:
    assert _fast_parse(text) is None, why


def test_fast_parser_takes_nesting_up_to_the_limit() -> None:
    assert _check_fast_matches_reference('{"a": ' * 40 + "[" * 24 + "]" * 24 + "}" * 40)


def test_fast_parser_counts_keys_not_colons_in_strings() -> None:
    """Colons in strings, escaped quotes before a colon and a key ending in a backslash are
    not keys: the fast path stays taken and gives the reference's value."""
    text = '{"time": "10:30", "note": "a \\":\\" b", "k:": {"x": "x::"}, "f\\\\": 1}'
    assert _check_fast_matches_reference(text)


def test_a_string_opening_with_a_colon_is_left_to_the_reference() -> None:
    """Its opening quote reads like a key's end, so the key count is too high: the reference
    parses (the value is the same; only slower)."""
    text = '{"x": "::", "y": " :"}'
    assert _fast_parse(text) is None
    assert parse_json_object(text.encode()) == {"x": "::", "y": " :"}


_json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
        st.sampled_from(['\\"', ":", '":', "\\", "[{", "]}", "\u2028"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["a", "b", "c", "d:", 'e"', "f\\"]), inner, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(
    value=st.dictionaries(st.sampled_from(["a", "b", "c"]), _json_values, max_size=4),
    indent=st.sampled_from([None, 0, 2]),
    ascii_only=st.booleans(),
    duplicate=st.booleans(),
)
def test_fast_parser_equals_reference_on_generated_json(
    value: dict[str, Any], indent: int | None, ascii_only: bool, duplicate: bool
) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    if duplicate and value:
        key = next(iter(value))
        text = text[:-1].rstrip() + f', "{key}": 1}}'
    fast = _fast_parse(text)
    if fast is not None:
        assert _same(fast, _reference_or_error(text))


# --- nesting guard ------------------------------------------------------------------------


def _depth_by_characters(text: str) -> int:
    """The rule, one character at a time: strings (or the rest of an unterminated one, up to a
    backslash-newline) are skipped; ``[{`` count +1 and ``]}`` count -1 elsewhere."""
    depth = deepest = 0
    index = 0
    while index < len(text):
        char = text[index]
        if char == '"':
            index += 1
            while index < len(text) and text[index] != '"':
                if text[index] == "\\":
                    if index + 1 < len(text) and text[index + 1] != "\n":
                        index += 2
                        continue
                    break
                index += 1
            index += 1
            continue
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
        index += 1
    return deepest


@settings(max_examples=500, deadline=None)
@given(
    text=st.text(alphabet='[]{}"\\ a\n', max_size=60),
    limit=st.integers(0, 6),
    max_runs=st.integers(0, 4),
)
def test_nesting_guard_equals_the_character_rule(text: str, limit: int, max_runs: int) -> None:
    """Including when rounds of pair-stripping run first (``max_runs`` small forces them);
    undecided only for malformed text no deeper than twice the limit (safe to parse)."""
    depth = _depth_by_characters(text)
    verdict = _nesting_depth_exceeds(text, limit, max_runs)
    if verdict is None:
        assert limit < depth <= 2 * limit or depth <= limit
        assert depth <= 2 * limit
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
    else:
        assert verdict is (depth > limit)


@settings(max_examples=300, deadline=None)
@given(value=st.recursive(st.just(1), lambda x: st.lists(x, max_size=3), max_leaves=30))
def test_nesting_guard_never_passes_too_deep_well_formed_json(value: Any) -> None:
    """Well-formed JSON within the limit always passes; deeper is refused or left to the
    parsed-value check (None), never passed."""
    text = json.dumps(value)
    depth = _depth_by_characters(text)
    for limit in range(0, 8):
        for max_runs in (0, 1, 100):
            verdict = _nesting_depth_exceeds(text, limit, max_runs)
            assert verdict is False if depth <= limit else verdict in (True, None)


def test_malformed_spine_near_the_limit_is_parsed_safely() -> None:
    """Deep enough, with enough runs, to leave the guard undecided: malformed, the parser
    says where; well-formed, the parsed value is measured."""
    text = "[" * 60 + "[[[[[[[[[[]]]]]]]]]]" * 60_000 + "]" * 60
    with pytest.raises(RecordInputError) as caught:
        parse_json_object(text.encode())
    assert caught.value.errors[0].rule == "json"
    well_formed = "[" * 60 + ",".join(["[[[[[[[[[[]]]]]]]]]]"] * 60_000) + "]" * 60
    with pytest.raises(RecordInputError) as caught:
        parse_json_object(well_formed.encode())
    assert caught.value.errors[0].rule == "depth"


def test_deep_nesting_is_refused_before_parsing() -> None:
    with pytest.raises(RecordInputError) as caught:
        parse_json_object(b"[" * 100_000 + b"]" * 100_000)
    assert caught.value.errors[0].rule == "depth"
    nested = "{" + '"a": {' * (MAX_DEPTH - 1) + "}" * MAX_DEPTH
    assert parse_json_object(nested.encode())  # exactly at the limit is fine


@pytest.mark.parametrize(
    "body",
    [
        '{"a":"' + '\\"' * 20_000,  # the #11 reproduction: unterminated, 20,000 escaped quotes
        '{"a":"' + '\\"' * 20_000 + '"}',  # the same string, terminated
        '{"a":"' + '\\"[' * 20_000,
    ],
)
def test_hostile_quote_strings_get_a_verdict(body: str) -> None:
    """The regular expression that cuts strings out is possessive: these took seconds with
    the former one (bench/bench_record_guards.py measures the time against the size)."""
    try:
        value = parse_json_object(body.encode())
    except RecordInputError as exc:
        assert exc.errors[0].rule == "json"
    else:
        assert value == {"a": '"' * 20_000}


# --- non-finite numbers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "source"),
    [
        ('{"a": NaN}', "$.a", "NaN"),
        ('{"a": [1, Infinity]}', "$.a[1]", "Infinity"),
        ('{"a": {"b c": -Infinity}}', "$.a['b c']", "-Infinity"),
        ('{"x": 1e400}', "$.x", "1e400"),
        ('{"x": -2.5E+999}', "$.x", "-2.5E+999"),
    ],
)
def test_non_finite_numbers_are_refused_with_their_path(text: str, path: str, source: str) -> None:
    with pytest.raises(RecordInputError) as caught:
        parse_json_object(text.encode())
    [error] = caught.value.errors
    assert (error.path, error.rule) == (path, "finite-number")
    assert error.message.startswith(f"{source} is not a finite number")


def test_many_non_finite_numbers_are_counted_past_the_first_hundred() -> None:
    text = '{"a": [' + ", ".join(["NaN"] * 250) + "]}"
    with pytest.raises(RecordInputError) as caught:
        parse_json_object(text.encode())
    errors = caught.value.errors
    assert [e.path for e in errors[:3]] == ["$.a[0]", "$.a[1]", "$.a[2]"]
    assert len(errors) == 101
    assert errors[-1].message == "150 more non-finite numbers"


def test_non_finite_observation_value_never_reaches_the_output() -> None:
    """#11: ``"value": NaN`` used to become ``valueQuantity.value: null``."""
    record = json.loads((CASE_FILES[0]).read_text(encoding="utf-8"))
    record["observations"] = [{"kind": "lymphocytes", "value": 0.5, "date": "2019-07"}]
    text = json.dumps(record).replace('"value": 0.5', '"value": NaN')
    outcome = convert_bytes("request", text.encode(), ConversionOptions())
    assert outcome.bundle is None
    assert [(e.path, e.rule) for e in outcome.errors] == [
        ("$.observations[0].value", "finite-number")
    ]


def test_big_integers_keep_their_exact_value() -> None:
    value = parse_json_object(b'{"a": 123456789012345678901234567890}')
    assert value["a"] == 123456789012345678901234567890


def test_parsers_agree_on_every_prefix_of_an_example() -> None:
    """Truncated bodies (a client that hangs up) fail the same way whichever parser runs."""
    text = CASE_FILES[0].read_text(encoding="utf-8")
    for end in itertools.chain(range(0, 200), range(200, len(text), 97)):
        prefix = text[:end]
        if _fast_parse(prefix) is None:
            continue
        assert _same(_fast_parse(prefix), _reference_or_error(prefix))
