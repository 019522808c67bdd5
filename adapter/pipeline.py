"""Record bytes in, bundle or located errors out: the one path every front end goes through.

CLI, gateway and benchmarks all call :func:`convert_bytes`, so a record that fails in one
fails identically in the others. Functions here do no output of their own and are picklable,
so the CLI can fan them out over processes.

For files, :func:`render_sources` goes one step further and returns the serialised output
(a JSON bundle, or NDJSON lines per resource type), in input order, from one process or from
several: workers read, parse, validate, convert and serialise, the caller only writes bytes,
so nothing but bytes crosses between processes and the output of ``--jobs N`` is the output
of ``--jobs 1`` by construction.
"""

from __future__ import annotations

import glob
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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


def validated_record(
    data: bytes, max_errors: int | None = None
) -> tuple[dict[str, Any] | None, list[RecordError]]:
    """Parse and validate record bytes; the record is returned only when it is valid.

    ``max_errors`` caps the errors computed (``validate_record``); the list returned is then a
    :class:`~adapter.record.errors.RecordErrors` whose ``omitted`` counts the rest.
    """
    try:
        record = parse_json_object(data)
    except RecordInputError as exc:
        return None, exc.errors
    errors = validate_record(record, max_errors=max_errors)
    return (None, errors) if errors else (record, [])


def convert_bytes(
    source: str, data: bytes, options: ConversionOptions, max_errors: int | None = None
) -> Outcome:
    """Validate then convert one record (``max_errors``: see :func:`validated_record`)."""
    record, errors = validated_record(data, max_errors)
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


OutputFormat = Literal["json", "ndjson"]

CHUNK = 32
"""Inputs per task handed to a worker process: enough to make the hand-over negligible."""

PARALLEL_FROM = 2 * CHUNK
"""Fewer inputs than this are converted in the calling process: starting workers costs more."""


def default_jobs() -> int:
    """Worker processes for folder conversion: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class Rendered:
    """One input's serialised output, or why there is none; only bytes and strings, so it
    crosses process boundaries cheaply."""

    source: str
    output: bytes | dict[str, bytes] | None = None
    """A JSON bundle, or NDJSON lines by resource type (in first-seen order); None on failure."""
    warnings: list[str] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """fhir.resources findings on the output (``--validate``); the input then fails."""

    @property
    def ok(self) -> bool:
        """Output was produced."""
        return self.output is not None


def _ndjson_by_type(bundle: dict[str, Any]) -> dict[str, bytes]:
    lines: dict[str, list[bytes]] = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        lines.setdefault(resource["resourceType"], []).append(dump_ndjson_line(resource))
    return {kind: b"".join(chunk) for kind, chunk in lines.items()}


def render_source(
    source: str, options: ConversionOptions, output_format: OutputFormat, validate: bool = False
) -> Rendered:
    """Read, convert and serialise one input (the unit of work of ``fhir-adapter convert``)."""
    outcome = convert_source(source, options)
    rendered = Rendered(source, warnings=outcome.warnings, errors=outcome.errors)
    if outcome.bundle is None:
        return rendered
    if validate:
        from adapter.fhir_validation import validate_bundle_resources

        rendered.problems = validate_bundle_resources(outcome.bundle, options.fhir_version)
        if rendered.problems:
            return rendered
    if output_format == "ndjson":
        rendered.output = _ndjson_by_type(outcome.bundle)
    else:
        rendered.output = dump_json(outcome.bundle)
    return rendered


def _render_chunk(
    sources: list[str], options: ConversionOptions, output_format: OutputFormat, validate: bool
) -> list[Rendered]:
    return [render_source(s, options, output_format, validate) for s in sources]


def warm_up() -> None:
    """Load the schema validators and code tables once, before worker processes fork."""
    from adapter.record.schema import fast_validator

    fast_validator()
    validate_record({})


def render_sources(
    sources: list[str],
    options: ConversionOptions,
    output_format: OutputFormat,
    *,
    jobs: int = 1,
    validate: bool = False,
) -> Iterator[Rendered]:
    """Every input's :class:`Rendered`, in input order, from ``jobs`` processes.

    At most two chunks per worker are in flight, so memory stays flat however many inputs a
    folder holds (a fast worker cannot run ahead of the writer by more than that).
    """
    if jobs <= 1 or len(sources) < PARALLEL_FROM or STDIN in sources:
        for source in sources:
            yield render_source(source, options, output_format, validate)
        return
    warm_up()
    chunks = (sources[i : i + CHUNK] for i in range(0, len(sources), CHUNK))
    pool = ProcessPoolExecutor(max_workers=jobs)
    try:
        pending: deque[Future[list[Rendered]]] = deque()
        for chunk in chunks:
            pending.append(pool.submit(_render_chunk, chunk, options, output_format, validate))
            if len(pending) >= 2 * jobs:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:  # also when the caller stops early (Ctrl-C, a closed pipe): drop queued chunks
        pool.shutdown(wait=True, cancel_futures=True)
