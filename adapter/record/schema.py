"""The case-record JSON Schema, compiled twice: a fast verdict and the reference errors.

Almost every record a user converts is valid, and for a valid record the only question is
"valid?". So a compiled validator (jsonschema-rs, Rust, draft 2020-12) answers that, in tens of
microseconds; the ``jsonschema`` package, which words the path-named errors users read (and
``examples/invalid/*.expected`` pin), runs only on a record the fast validator refused. Where
the two could disagree, the fast one is made to behave like the reference:

* ``pattern`` is checked by Python's ``re`` in both (``search``, through a custom keyword in
  jsonschema-rs), because Rust's regex dialect differs at the edges (what ``\\s`` matches);
  and in both ``$`` means the end of the string, as in the ECMA-262 dialect JSON Schema
  specifies, not "or before a final newline" as in Python: ``"t1\\n"`` is not a local id;
* formats are checked by the same Python functions in both, and formats the reference does not
  check (it checks only ``partial-date`` and ``date-time``) are not checked by the fast one;
* if the fast validator cannot take a record (a number beyond 64 bits, a lone surrogate) or
  cannot be built for the schema (a keyword it would read differently, such as
  ``patternProperties``), the reference decides alone.

Both read ``mappings/case-record.schema.json`` as it is, so a schema change needs no change
here. tests/unit/test_schema_fast.py checks that both give the same verdict on the examples,
on synthetic records and on thousands of mutations of them.

Dates are also held to a window of years (:data:`adapter.record.dates.EARLIEST_YEAR` to
:data:`~adapter.record.dates.LATEST_YEAR`), a rule of its own (``date-window``) on every value
with format ``partial-date`` or ``date-time``, so that no valid record can push date arithmetic
in the mappers past the calendar.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import jsonschema_rs

from adapter.mappings import case_record_schema
from adapter.record.dates import EARLIEST_YEAR, LATEST_YEAR, in_date_window, is_partial_date

if TYPE_CHECKING:  # jsonschema is imported only when a record is invalid (a second at start)
    from jsonschema.exceptions import ValidationError


def is_date_time(value: object) -> bool:
    """Calendar validity of an RFC 3339 date-time (the schema's pattern checks the shape)."""
    if not isinstance(value, str):
        return True
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


FORMAT_CHECKS: Mapping[str, Callable[[object], bool]] = {
    "partial-date": is_partial_date,
    "date-time": is_date_time,
}
"""The formats the validator asserts; any other ``format`` in the schema is an annotation."""

WINDOWED_FORMATS = frozenset({"partial-date", "date-time"})
"""Formats whose values must also lie in the window of years."""

DATE_WINDOW_RULE = "date-window"

# Keywords whose value is a subschema, a list of them, or a map of them (JSON Schema 2020-12 and
# the older spellings jsonschema-rs also reads): the only places a schema walk may descend, so
# that a property *named* "pattern" is never mistaken for the keyword.
_SUBSCHEMA = frozenset(
    {
        "additionalProperties",
        "items",
        "additionalItems",
        "contains",
        "not",
        "if",
        "then",
        "else",
        "propertyNames",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
_SUBSCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
_SUBSCHEMA_MAP = frozenset({"properties", "$defs", "definitions", "dependentSchemas"})
# Keywords the fast validator would read with Rust semantics and that are not rewritten here;
# a schema using one of them is validated by the reference alone.
_NOT_FAST = frozenset({"patternProperties"})
_PYTHON_PATTERN = "x-python-pattern"


def _walk_schema(node: Any, visit: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """A copy of ``node`` with ``visit`` applied to every (sub)schema object, bottom up."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _SUBSCHEMA_MAP and isinstance(value, dict):
            out[key] = {name: _walk_schema(sub, visit) for name, sub in value.items()}
        elif key in _SUBSCHEMA_LIST and isinstance(value, list):
            out[key] = [_walk_schema(sub, visit) for sub in value]
        elif key in _SUBSCHEMA:
            out[key] = _walk_schema(value, visit)
        else:
            out[key] = value
    return visit(out)


def _keywords(schema: Any) -> set[str]:
    """Every keyword used anywhere in the schema."""
    found: set[str] = set()

    def collect(node: dict[str, Any]) -> dict[str, Any]:
        found.update(node)
        return node

    _walk_schema(schema, collect)
    return found


def _formats(schema: Any) -> set[str]:
    """Every ``format`` value used in the schema."""
    found: set[str] = set()

    def collect(node: dict[str, Any]) -> dict[str, Any]:
        if isinstance(node.get("format"), str):
            found.add(node["format"])
        return node

    _walk_schema(schema, collect)
    return found


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A schema ``pattern`` as a Python regex whose ``$`` matches only at the very end.

    Python's ``$`` also matches before a final newline, so ``^[a-z]+$`` accepted ``"abc\\n"``;
    every ``$`` outside a character class and not escaped becomes ``\\Z``.
    """
    out: list[str] = []
    index, in_class = 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index : index + 2])
            index += 2
            continue
        if in_class:
            if char == "]" and not (out and out[-1] in ("[", "[^")):
                in_class = False
        elif char == "[":
            in_class = True
            if pattern.startswith("[^", index):
                out.append("[^")
                index += 2
                continue
        elif char == "$":
            char = r"\Z"
        out.append(char)
        index += 1
    return re.compile("".join(out))


# -- the reference: jsonschema, whose errors users read ----------------------------------------


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """``pattern`` with :func:`compile_pattern`'s reading of ``$``."""
    from jsonschema.exceptions import ValidationError

    if isinstance(instance, str) and compile_pattern(pattern).search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _format_then_window(
    validator: Any, fmt: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """The standard ``format`` keyword, then the window of years for dates that passed it."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

    standard = Draft202012Validator.VALIDATORS["format"]
    errors = list(standard(validator, fmt, instance, schema) or ())
    yield from errors
    if not errors and fmt in WINDOWED_FORMATS and not in_date_window(instance):
        yield ValidationError(
            f"{instance!r} is outside the accepted years {EARLIEST_YEAR} to {LATEST_YEAR}",
            validator=DATE_WINDOW_RULE,
            validator_value=[EARLIEST_YEAR, LATEST_YEAR],
        )


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """The schema with every local ``$ref`` replaced by its definition (the schema has no
    recursive definitions); resolving references at validation time was half its cost."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return {
                **_inline_refs(defs[ref[len("#/$defs/") :]], defs),
                **{k: _inline_refs(v, defs) for k, v in node.items() if k != "$ref"},
            }
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


@lru_cache(maxsize=1)
def reference_validator() -> Any:
    """The ``jsonschema`` validator whose errors are rendered for users."""
    from jsonschema import Draft202012Validator, FormatChecker, validators

    reference_class = validators.extend(
        Draft202012Validator, {"format": _format_then_window, "pattern": _pattern}
    )
    checker = FormatChecker(formats=())
    for name, check in FORMAT_CHECKS.items():
        checker.checks(name)(check)
    schema = case_record_schema()
    Draft202012Validator.check_schema(schema)
    return reference_class(_inline_refs(schema, schema.get("$defs", {})), format_checker=checker)


def reference_errors(record: Any) -> Iterator[ValidationError]:
    """Every schema error of a record, from the reference validator."""
    return reference_validator().iter_errors(record)  # type: ignore[no-any-return]


# -- the fast verdict: jsonschema-rs, made to read the schema as the reference does --------------


class _PythonPattern:
    """``pattern`` as the reference checks it: :func:`compile_pattern`, ``search``, strings."""

    def __init__(self, parent_schema: Any, value: str, schema_path: Any) -> None:
        self.search = compile_pattern(value).search

    def validate(self, instance: Any) -> None:
        if isinstance(instance, str) and self.search(instance) is None:
            raise ValueError("does not match the pattern")


def _python_patterns(node: dict[str, Any]) -> dict[str, Any]:
    if isinstance(node.get("pattern"), str):
        node = {(_PYTHON_PATTERN if k == "pattern" else k): v for k, v in node.items()}
    return node


def _always(_value: object) -> bool:
    return True


def _windowed(check: Callable[[object], bool]) -> Callable[[object], bool]:
    def check_and_window(value: object) -> bool:
        return check(value) and in_date_window(value)

    return check_and_window


@lru_cache(maxsize=1)
def fast_validator() -> Any | None:
    """The jsonschema-rs validator, or None when the schema uses a keyword it would misread."""
    schema = case_record_schema()
    if _keywords(schema) & _NOT_FAST:
        return None
    formats: dict[str, Callable[[object], bool]] = {}
    for name in _formats(schema):
        check = FORMAT_CHECKS.get(name, _always)
        formats[name] = _windowed(check) if name in WINDOWED_FORMATS else check
    return jsonschema_rs.Draft202012Validator(
        _walk_schema(schema, _python_patterns),
        formats=formats,
        validate_formats=True,
        ignore_unknown_formats=True,
        keywords={_PYTHON_PATTERN: _PythonPattern},
    )


def schema_valid(record: Any) -> bool:
    """The verdict alone: does the record satisfy the schema (and the date window)?"""
    fast = fast_validator()
    if fast is not None:
        try:
            return bool(fast.is_valid(record))
        except Exception:  # a value jsonschema-rs cannot take: the reference decides
            pass
    return next(iter(reference_errors(record)), None) is None


def fast_error_count(record: Any) -> int | None:
    """How many errors the reference would report (as rendered for users), counted in Rust.

    One per failing keyword and location, except that the rendering gives one error per
    unknown property and per missing property; None when the fast validator is not available
    for this schema or this record. Lets a capped caller skip rendering errors it will not
    show (tests/unit/test_schema_fast.py checks the count against the reference).
    """
    fast = fast_validator()
    if fast is None:
        return None
    try:
        count = 0
        for error in fast.iter_errors(record):
            kind = error.kind
            if kind.name == "additionalProperties":
                count += len(kind.as_dict()["unexpected"])
            else:
                count += 1
        return count
    except Exception:  # a value jsonschema-rs cannot take
        return None


ANY_ITEM = "*"
"""In a location, stands for every item of an array."""


def _locations_of(
    node: Any, definition: str, defs: dict[str, Any], here: tuple[str, ...], seen: frozenset[str]
) -> Iterator[tuple[str, ...]]:
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref[len("#/$defs/") :]
        if name == definition:
            yield here
            return
        if name not in seen:
            yield from _locations_of(defs.get(name), definition, defs, here, seen | {name})
    for key in ("allOf", "anyOf", "oneOf"):
        for branch in node.get(key, []) if isinstance(node.get(key), list) else []:
            yield from _locations_of(branch, definition, defs, here, seen)
    properties = node.get("properties")
    if isinstance(properties, dict):
        for name, sub in properties.items():
            yield from _locations_of(sub, definition, defs, (*here, name), seen)
    if isinstance(node.get("items"), dict):
        yield from _locations_of(node["items"], definition, defs, (*here, ANY_ITEM), seen)


@lru_cache(maxsize=8)
def locations_of_definition(definition: str) -> tuple[tuple[str, ...], ...]:
    """Where in a record a ``$defs`` entry can occur, as key paths (``*``: any array item).

    Read from the schema itself, so that a rule about, say, every relative time visits exactly
    the places the schema allows one, not every node of the record (a walk of the whole record
    was a fifth of the semantic checks' cost), and a schema change needs no change in the rule.
    """
    schema = case_record_schema()
    defs = schema.get("$defs", {})
    return tuple(dict.fromkeys(_locations_of(schema, definition, defs, (), frozenset())))


def values_at(record: Any, location: tuple[str, ...]) -> Iterator[tuple[list[str | int], Any]]:
    """The values found at one location of :func:`locations_of_definition`, with their paths."""
    found: list[tuple[list[str | int], Any]] = [([], record)]
    for step in location:
        below: list[tuple[list[str | int], Any]] = []
        for path, node in found:
            if step == ANY_ITEM:
                if isinstance(node, list):
                    below.extend(([*path, index], item) for index, item in enumerate(node))
            elif isinstance(node, dict) and step in node:
                below.append(([*path, step], node[step]))
        found = below
    yield from found
