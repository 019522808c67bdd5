"""Turns bytes into a JSON object, or into located errors; never into a traceback.

Case records arrive from files, stdin and HTTP bodies written by other programs, so every way
bytes can fail to be a JSON object (empty, not UTF-8, malformed, duplicate keys that would
silently drop data, nesting deep enough to exhaust the parser, numbers that are not finite)
gets a one-line explanation.

Two parsers, one result. The *reference* parser (``json`` with hooks) defines what a record
parses to and words every error. The *fast* parser (orjson, about ten times quicker) is used
only when it provably equals the reference: as many members as the text has keys (orjson keeps
the last of a duplicate key silently), nesting within the limit, integral floats turned into
ints as the reference does (``70.0`` is ``70``) and none orjson may have rounded (an integer
literal beyond 64 bits). Anything else, including every input orjson refuses, goes to the
reference parser, so errors and values are the same whichever parser ran
(tests/unit/test_loader.py compares them).

Every check here is linear in the size of the input: the regular expressions (cutting strings
out for the depth guard, counting keys) never backtrack (possessive quantifiers), and the rest
is ``str`` methods and one pass over the parsed containers.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from adapter.record.errors import RecordError, RecordInputError, json_path

MAX_DEPTH = 64
"""Deeper than any real case record (which nests about 6 levels); protects the parser."""

MAX_NUMBER_ERRORS = 100
"""Non-finite numbers reported one by one up to this many, then counted."""


class _NonFinite(float):
    """A NaN or infinite number as the reference parser saw it, with its source text."""

    source: str

    def __new__(cls, value: float, source: str) -> _NonFinite:
        number = super().__new__(cls, value)
        number.source = source
        return number


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
    Numbers too large for a float (``1e400``) are kept as a marked infinity and refused after
    parsing, with their path.
    """
    value = float(text)
    if math.isinf(value):
        return _NonFinite(value, text)
    if value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _constant(text: str) -> float:
    """``NaN``, ``Infinity`` and ``-Infinity``, which Python's json accepts and JSON does not."""
    return _NonFinite(float(text.replace("Infinity", "inf")), text)


# A string, or (with no closing quote) the rest of it, up to where a string cannot go on.
# Quantifiers are possessive, so no character is scanned twice; the former expression,
# ``"(?:[^"\\]|\\.)*"``, restarted at every quote of an unterminated string: quadratic.
# An unterminated string is cut out too: the parser fails there anyway, before any bracket
# after it could make it recurse.
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"?')
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_BRACKET_RUN = re.compile(r"\[++|\]++")
_MAX_RUNS = 100_000


def _skeleton(text: str) -> str:
    """The text with its strings cut out: what remains are brackets, separators and numbers."""
    return _STRING.sub("", text)


def _max_prefix(brackets: str) -> int:
    """The deepest running depth of a string of ``[`` and ``]``, summed run by run."""
    runs = _BRACKET_RUN.findall(brackets)
    steps = (len(run) if run[0] == "[" else -len(run) for run in runs)
    return max(itertools.accumulate(steps), default=0)


def _nesting_depth_exceeds(
    text: str, limit: int = MAX_DEPTH, max_runs: int = _MAX_RUNS
) -> bool | None:
    """Whether brackets outside strings run deeper than ``limit``; linear, mostly in C.

    The depth is the largest running sum (``[`` and ``{`` +1, ``]`` and ``}`` -1), as a
    per-character loop would compute it, but a hostile body of millions of brackets must not
    cost a Python step each. So rounds of ``str.replace("[]", "")`` first strip innermost pairs
    while there are too many runs to sum, then the runs are summed. ``r`` rounds lower the
    largest running sum by at most ``r``, and by exactly ``r`` for well-formed JSON, so the
    answer is exact for JSON the parser would accept. None means "not decided": malformed
    text whose depth lies between ``limit`` and ``2 * limit``, which the parser may take safely
    (it recurses far less than its own limit) and will refuse as malformed.
    """
    brackets = _NOT_BRACKET.sub("", _skeleton(text)).replace("{", "[").replace("}", "]")
    if brackets.count("[") <= limit:
        return False
    reduced, rounds = brackets, 0
    while rounds < limit and reduced.count("[]") + reduced.count("][") > max_runs:
        reduced, rounds = reduced.replace("[]", ""), rounds + 1
    lower = _max_prefix(reduced)
    if lower > limit:
        return True
    if max(lower, 0) + rounds <= limit:
        return False
    return None


def _fail(message: str, rule: str = "json") -> RecordInputError:
    return RecordInputError([RecordError("$", rule, message)])


def _non_finite_errors(value: Any) -> list[RecordError]:
    """Where the reference parser met NaN, Infinity or a number beyond a double, by path."""
    found: list[RecordError] = []
    count = 0
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            stack.extend((v, (*path, k)) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, (*path, i)) for i, v in reversed(list(enumerate(node))))
        elif isinstance(node, _NonFinite):
            count += 1
            if len(found) < MAX_NUMBER_ERRORS:
                found.append(
                    RecordError(
                        json_path(path),
                        "finite-number",
                        f"{node.source} is not a finite number (JSON numbers must be finite)",
                    )
                )
    if count > len(found):
        found.append(
            RecordError("$", "finite-number", f"{count - len(found)} more non-finite numbers")
        )
    return found


def _reference_parse(text: str) -> dict[str, Any]:
    """The parse that defines the result and words every error (the ``json`` module)."""
    too_deep = _nesting_depth_exceeds(text)
    if too_deep:
        raise _fail(f"JSON nested deeper than {MAX_DEPTH} levels", "depth")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_float=_number,
            parse_constant=_constant,
        )
    except json.JSONDecodeError as exc:
        raise _fail(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:  # duplicate keys, out-of-range numbers
        raise _fail(f"invalid JSON: {exc}") from None
    # Undecided before parsing, and well-formed after all: measure the parsed value.
    if too_deep is None and _members_within_depth(value) is None:
        raise _fail(f"JSON nested deeper than {MAX_DEPTH} levels", "depth")
    if not isinstance(value, dict):
        raise _fail(f"expected a JSON object, got {type(value).__name__}", "type")
    errors = _non_finite_errors(value)
    if errors:
        raise RecordInputError(errors)
    return value


def _settle_floats(node: dict[str, Any] | list[Any]) -> bool:
    """Make orjson's floats what the reference parser gives, in place; False where unsure.

    An integral float below 2**53 becomes an int, as ``_number`` does. An integral float at or
    above 2**53 may be an integer literal orjson rounded (beyond 64 bits) where the reference
    keeps every digit: not decidable from the value, so the reference parses. Any other float is
    the same double in both (both round correctly; orjson refuses what overflows).
    """
    items: Iterable[tuple[Any, Any]] = node.items() if isinstance(node, dict) else enumerate(node)
    for key, item in items:
        if item.__class__ is float and item.is_integer():
            if abs(item) >= 2**53:
                return False
            node[key] = int(item)
    return True


def _members_within_depth(value: Any, settle_floats: bool = False) -> int | None:
    """Object members of a parsed value, or None when it nests deeper than MAX_DEPTH.

    Level by level over containers only (scalars are not visited one by one in Python), so
    the depth comes with the count at no extra cost. With ``settle_floats`` (orjson's
    result), each container's floats are settled on the way (:func:`_settle_floats`), and
    None also means one could not be.
    """
    members = 0
    level = [value] if value.__class__ is dict or value.__class__ is list else []
    for _ in range(MAX_DEPTH):
        below: list[Any] = []
        for node in level:
            children = node.values() if node.__class__ is dict else node
            members += len(node) if node.__class__ is dict else 0
            below += [x for x in children if x.__class__ is dict or x.__class__ is list]
            floats = settle_floats and float in {x.__class__ for x in children}
            if floats and not _settle_floats(node):
                return None
        if not below:
            return members
        level = below
    return None if level else members


_MEMBER_END = re.compile(r'"[ \t\n\r]*+:')
"""A quote, JSON whitespace and a colon: how every object member's key ends."""
_ESCAPED_MEMBER_END = re.compile(r'(?<!\\)(?:\\\\)*+\\"[ \t\n\r]*+:')
"""The same after an odd run of backslashes: an escaped quote, inside a string, not a key end."""


def _keys_in_text(text: str) -> int:
    """Object members of JSON text, counted by their keys' closing quotes; never fewer.

    A quote after an even run of backslashes opens or closes a string, and a closing quote
    followed by a colon ends a key, so every member is counted once. The count is higher only
    when a string opens with a colon (``": ..."``): the text then goes to the reference parser,
    which is slower and gives the same value.
    """
    keys = len(_MEMBER_END.findall(text))
    if '\\"' in text:
        keys -= len(_ESCAPED_MEMBER_END.findall(text))
    return keys


def _fast_parse(text: str) -> dict[str, Any] | None:
    """orjson's parse when it provably equals the reference's; None to ask the reference.

    One pass over the parsed containers, level by level, counts the members, bounds the depth
    and settles the floats; one scan of the text counts the keys. A key count above the members
    means orjson dropped a duplicate key (the reference refuses those), or a string opened with
    a colon: either way the reference parses.
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None  # the reference words the error (or, rarely, accepts: big integers)
    if value.__class__ is not dict:
        return None
    members = _members_within_depth(value, settle_floats=True)
    if members is None:
        return None  # deeper than MAX_DEPTH, or a float the reference may read otherwise
    if _keys_in_text(text) != members:
        return None
    return value


def parse_json_object(data: bytes) -> dict[str, Any]:
    """Decode UTF-8 JSON that must be an object; raise RecordInputError with clear errors."""
    if not data.strip():
        raise _fail("empty input: expected a JSON object", "empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(
            f"not UTF-8: invalid byte 0x{data[exc.start]:02x} at offset {exc.start}", "encoding"
        ) from None
    value = _fast_parse(text)
    return value if value is not None else _reference_parse(text)


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
