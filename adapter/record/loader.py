"""Turns bytes into a JSON object, or into located errors; never into a traceback.

Case records arrive from files, stdin and HTTP bodies written by other programs, so every way
bytes can fail to be a JSON object (empty, not UTF-8, malformed, duplicate keys that would
silently drop data, nesting deep enough to exhaust the parser) gets a one-line explanation.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

from adapter.record.errors import RecordError, RecordInputError

MAX_DEPTH = 64
"""Deeper than any real case record (which nests about 6 levels); protects the parser."""


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate property {key!r}")
        result[key] = value
    return result


def _number(text: str) -> int | float:
    """JSON numbers with a fraction or exponent: integral ones become ints.

    JSON Schema counts 70.0 as an integer, so a record may say ``"years": 70.0``; turning it
    into 70 here keeps every later step (FHIR integers, date arithmetic) from seeing a float.
    """
    value = float(text)
    if value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _nesting_depth(text: str) -> int:
    """Bracket depth outside strings, measured before parsing so the parser never recurses deep.

    Strings are cut out and brackets picked with regular expressions, so the only Python-level
    loop runs over brackets, not over every character of the record.
    """
    brackets = _BRACKET.findall(_STRING.sub("", text))
    return max(itertools.accumulate(_STEP[b] for b in brackets), default=0)


def _fail(message: str, rule: str = "json") -> RecordInputError:
    return RecordInputError([RecordError("$", rule, message)])


def parse_json_object(data: bytes) -> dict[str, Any]:
    """Decode UTF-8 JSON that must be an object; raise RecordInputError with one clear error."""
    if not data.strip():
        raise _fail("empty input: expected a JSON object", "empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(
            f"not UTF-8: invalid byte 0x{data[exc.start]:02x} at offset {exc.start}", "encoding"
        ) from None
    if _nesting_depth(text) > MAX_DEPTH:
        raise _fail(f"JSON nested deeper than {MAX_DEPTH} levels", "depth")
    try:
        value = json.loads(text, object_pairs_hook=_reject_duplicates, parse_float=_number)
    except json.JSONDecodeError as exc:
        raise _fail(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:  # duplicate keys, out-of-range numbers
        raise _fail(f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _fail(f"expected a JSON object, got {type(value).__name__}", "type")
    return value


def load_record_bytes(data: bytes) -> dict[str, Any]:
    """Parse a case record from bytes (structure only; see validate_record for the rules)."""
    return parse_json_object(data)


def load_record_file(path: Path) -> dict[str, Any]:
    """Read and parse a case record file; unreadable files become a located error too."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _fail(f"cannot read file: {exc.strerror or exc}", "io") from None
    return parse_json_object(data)
