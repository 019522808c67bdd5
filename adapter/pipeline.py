"""Record bytes in, bundle or located errors out: the one path every front end goes through.

CLI, gateway and benchmarks all call :func:`convert_bytes`, so a record that fails in one
fails identically in the others. Functions here do no output of their own and are picklable,
so the CLI can fan them out over processes.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from adapter.mapping import ConversionOptions, convert_record
from adapter.record.errors import RecordError, RecordInputError
from adapter.record.loader import parse_json_object
from adapter.record.validate import validate_record

STDIN = "-"


@dataclass
class Outcome:
    """What became of one input: a bundle, or the errors that prevented it."""

    source: str
    bundle: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Converted without errors (warnings do not count as failure)."""
        return self.bundle is not None


def validated_record(data: bytes) -> tuple[dict[str, Any] | None, list[RecordError]]:
    """Parse and validate record bytes; the record is returned only when it is valid."""
    try:
        record = parse_json_object(data)
    except RecordInputError as exc:
        return None, exc.errors
    errors = validate_record(record)
    return (None, errors) if errors else (record, [])


def convert_bytes(source: str, data: bytes, options: ConversionOptions) -> Outcome:
    """Validate then convert one record."""
    record, errors = validated_record(data)
    if record is None:
        return Outcome(source, errors=errors)
    result = convert_record(record, options)
    return Outcome(source, result.bundle, result.warnings)


def read_input(source: str) -> bytes:
    """Bytes of a path, or of stdin for ``-``."""
    if source == STDIN:
        return sys.stdin.buffer.read()
    return Path(source).read_bytes()


def convert_source(source: str, options: ConversionOptions) -> Outcome:
    """Read and convert one input; an unreadable file is an error of that input only."""
    try:
        data = read_input(source)
    except OSError as exc:
        return Outcome(
            source, errors=[RecordError("$", "io", f"cannot read: {exc.strerror or exc}")]
        )
    return convert_bytes(source, data, options)


def expand_inputs(arguments: Iterable[str]) -> Iterator[str]:
    """Files, folders (their ``*.json``, sorted) and glob patterns, in the order given.

    A name that matches nothing is yielded as is, so that it fails as "cannot read" with its
    own name rather than disappearing from the run.
    """
    for argument in arguments:
        if argument == STDIN:
            yield argument
        elif os.path.isdir(argument):
            yield from sorted(str(p) for p in Path(argument).glob("*.json"))
        elif glob.has_magic(argument):
            matches = sorted(glob.glob(argument, recursive=True))
            yield from matches if matches else [argument]
        else:
            yield argument


def dump_json(value: Any) -> bytes:
    """Indented, key-order-preserving JSON with a final newline: byte-identical across runs."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def dump_ndjson_line(value: Any) -> bytes:
    """One compact JSON line, as FHIR Bulk Data NDJSON expects."""
    return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)
