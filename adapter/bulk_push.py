"""Pushing many records: concurrent, retried per record, resumable, and summarised.

A registry loading ten thousand cases cannot send one transaction at a time, cannot start
over after a network hiccup at record 7,000, and wants to know at the end what landed.
So :func:`bulk_push` reads records from files, folders and NDJSON (one record per line),
converts each (in the calling thread: ~1–3 ms, far below a server round trip) and hands the
bundles to ``jobs`` threads that each call :func:`adapter.push.push_bundle`, with at most
``2 × jobs`` bundles in memory at once however large the input.

Retries happen at two levels. The FHIR client retries a request a few times within seconds
(connection refused, 409 from a conditional-create race, 429, 502–504); a record whose push
still failed with something transient (no answer, 408/409/425/429, 5xx) is tried again here
after a longer backoff (``RetrySettings``), so a server restart in the middle of a load costs
a pause, not failed records. A refusal (422: the server says the data is wrong) is final.

Resuming: every transaction is idempotent (conditional creates and PUTs to derived ids), so
sending everything again is always *safe*, but for 10,000 records it is also slow. With a
journal (``--state FILE``), each record the server accepted is appended as one JSON line
holding a digest of (server URL, FHIR version, identifier namespace, the record's bytes). A
rerun skips every record whose digest is in the journal before converting it, and sends the
rest: records not reached, records that failed, and records whose content changed since (a
corrected record has a new digest). Only the record's own bytes count, so a new adapter
version that maps differently does not resend on its own; delete the journal (or use a new
one) to push everything again. A line is written, flushed, after the server's answer, so an
interruption at any moment loses at most the answers in flight, whose records are then sent
again: idempotent, so harmless. A cheap check against the server (search each record's
Patient) was the alternative; it costs a request per record, and a found Patient says
nothing about whether the record changed since it was sent.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from adapter.fhir import FhirClient, FhirError, FhirTransportError, OperationOutcomeError
from adapter.mapping import ConversionOptions
from adapter.pipeline import STDIN, convert_bytes, expand_inputs, read_input
from adapter.push import PushResult, push_bundle
from adapter.record.errors import RecordError

__all__ = [
    "NDJSON_SUFFIXES",
    "BulkPushSummary",
    "JournalError",
    "PushInput",
    "PushJournal",
    "RecordResult",
    "RetrySettings",
    "bulk_push",
    "count_records",
    "expand_push_paths",
    "is_transient",
    "iter_push_inputs",
    "record_digest",
]

NDJSON_SUFFIXES = (".ndjson", ".jsonl")
JOURNAL_FORMAT = "fhir-adapter push journal"
JOURNAL_VERSION = 1
_TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})

Status = Literal["pushed", "skipped", "invalid", "failed", "interrupted"]


# -- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushInput:
    """One record to push: a file, or one line of an NDJSON file (``path:LINE``)."""

    source: str
    path: str
    data: bytes | None = None
    """The record's bytes when they were read already (NDJSON lines); files are read lazily."""

    def read(self) -> bytes:
        """The record's bytes (raises ``OSError`` for an unreadable file)."""
        return self.data if self.data is not None else read_input(self.path)


def _is_ndjson(path: str) -> bool:
    return path.lower().endswith(NDJSON_SUFFIXES)


def expand_push_paths(arguments: Iterable[str]) -> Iterator[str]:
    """Like :func:`adapter.pipeline.expand_inputs`, and folders also yield their NDJSON files."""
    for argument in arguments:
        yield from expand_inputs([argument])
        if argument != STDIN and os.path.isdir(argument):
            folder = Path(argument)
            yield from sorted(
                str(p) for suffix in NDJSON_SUFFIXES for p in folder.glob(f"*{suffix}")
            )


def iter_push_inputs(paths: Iterable[str]) -> Iterator[PushInput]:
    """One input per JSON file, one per non-blank line of an NDJSON file (streamed)."""
    for path in paths:
        if not _is_ndjson(path):
            yield PushInput(path, path)
            continue
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below; a generator holds it
        except OSError:
            yield PushInput(path, path)  # fails as "cannot read" under its own name
            continue
        with handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield PushInput(f"{path}:{number}", path, line)


def count_records(paths: Iterable[str]) -> int:
    """How many records :func:`iter_push_inputs` will yield (for a progress total)."""
    total = 0
    for path in paths:
        if not _is_ndjson(path):
            total += 1
            continue
        try:
            with open(path, "rb") as handle:
                total += sum(1 for line in handle if line.strip())
        except OSError:
            total += 1
    return total


# -- the journal ----------------------------------------------------------------------------


def record_digest(data: bytes, *, server: str, options: ConversionOptions) -> str:
    """What identifies "this record, pushed like this, to this server" in the journal."""
    digest = hashlib.sha256()
    for part in (server.rstrip("/"), options.fhir_version, options.namespace):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(data)
    return digest.hexdigest()


def _is_journal_header(line: str) -> bool:
    try:
        header = json.loads(line)
    except ValueError:
        return False
    return isinstance(header, dict) and header.get("format") == JOURNAL_FORMAT


class JournalError(ValueError):
    """The journal file exists but is not a push journal."""


class PushJournal:
    """Append-only JSON lines of the records a server accepted; see the module docstring.

    A torn last line (the process died while writing it) is ignored on loading; its record
    is simply pushed again.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._done: set[str] = set()
        self.ignored_lines = 0
        if self.path.exists():
            self._load()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._file: IO[str] = self.path.open("a", encoding="utf-8")
        if fresh:
            self._write({"format": JOURNAL_FORMAT, "version": JOURNAL_VERSION})

    def _load(self) -> None:
        with self.path.open(encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
            if first.strip() and not _is_journal_header(first):
                # Never append to a file that is not ours (a record passed as --state).
                raise JournalError(f"{self.path}: not a push journal; give a new file name")
            for line in handle:
                try:
                    entry = json.loads(line)
                except ValueError:
                    self.ignored_lines += 1
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("digest"), str):
                    self._done.add(entry["digest"])

    def __len__(self) -> int:
        return len(self._done)

    def done(self, digest: str) -> bool:
        """Whether the server already accepted this record (as pushed now)."""
        return digest in self._done

    def record(self, digest: str, result: RecordResult) -> None:
        """Remember an accepted record; flushed at once so a kill right after keeps it."""
        self._done.add(digest)
        self._write(
            {
                "digest": digest,
                "source": result.source,
                "resources": result.resources,
                "created": result.created,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )

    def _write(self, entry: dict[str, Any]) -> None:
        self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()


# -- one record -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrySettings:
    """Record-level retries, on top of the FHIR client's own quick ones."""

    retries: int = 3
    """Further attempts after the first, for transient failures only."""
    base_seconds: float = 2.0
    max_seconds: float = 60.0

    def delay(self, attempt: int) -> float:
        """Full jitter, capped exponential: spreads the retries of many threads."""
        return random.uniform(0.0, min(self.max_seconds, self.base_seconds * 2.0 ** (attempt - 1)))


@dataclass
class RecordResult:
    """What became of one record."""

    source: str
    status: Status
    resources: int = 0
    created: int = 0
    updated: int = 0
    removed: int = 0
    attempts: int = 0
    references: list[str] = field(default_factory=list)
    error: str | None = None
    """Why the push failed (one line), for ``failed`` and ``interrupted``."""
    errors: list[RecordError] = field(default_factory=list)
    """Why the record is invalid, located by JSON path, for ``invalid``."""
    warnings: list[str] = field(default_factory=list)


def is_transient(error: FhirError) -> bool:
    """Whether trying the same push again later may succeed."""
    if isinstance(error, FhirTransportError):
        return True
    if isinstance(error, OperationOutcomeError):
        return error.status_code in _TRANSIENT_STATUSES or error.status_code >= 500
    return False


def _push_with_retries(
    client: FhirClient,
    source: str,
    bundle: dict[str, Any],
    retry: RetrySettings,
    stop: threading.Event,
) -> RecordResult:
    attempt = 0
    while True:
        attempt += 1
        try:
            pushed: PushResult = push_bundle(client, bundle)
        except FhirError as exc:
            if not is_transient(exc) or attempt > retry.retries:
                return RecordResult(source, "failed", attempts=attempt, error=str(exc))
            # wait() returns True when stopping: give the record up as interrupted.
            if stop.wait(retry.delay(attempt)):
                return RecordResult(source, "interrupted", attempts=attempt, error=str(exc))
            continue
        except Exception as exc:  # one record's surprise must not end a 10,000-record run
            error = f"unexpected {type(exc).__name__}: {exc}"
            return RecordResult(source, "failed", attempts=attempt, error=error)
        return RecordResult(
            source,
            "pushed",
            resources=len(pushed.references),
            created=pushed.created,
            updated=pushed.updated,
            removed=len(pushed.removed),
            attempts=attempt,
            references=list(pushed.references),
        )


# -- many records ---------------------------------------------------------------------------


@dataclass
class BulkPushSummary:
    """Counts and rates of a whole run; ``as_dict`` is the ``--summary json`` object."""

    total: int = 0
    pushed: int = 0
    skipped: int = 0
    invalid: int = 0
    failed: int = 0
    resources: int = 0
    created: int = 0
    updated: int = 0
    removed: int = 0
    retried: int = 0
    """Records that needed more than one attempt (and were then pushed or failed)."""
    warnings: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    failed_inputs: list[str] = field(default_factory=list)

    def add(self, result: RecordResult) -> None:
        """Count one record's outcome."""
        self.total += 1
        self.warnings += len(result.warnings)
        if result.attempts > 1:
            self.retried += 1
        if result.status == "pushed":
            self.pushed += 1
            self.resources += result.resources
            self.created += result.created
            self.updated += result.updated
            self.removed += result.removed
        elif result.status == "skipped":
            self.skipped += 1
        elif result.status == "invalid":
            self.invalid += 1
            self.failed_inputs.append(result.source)
        else:
            # failed, or given up while retrying because the run was interrupted
            self.failed += 1
            self.failed_inputs.append(result.source)

    @property
    def records_per_s(self) -> float:
        """Pushed records per second of wall time."""
        return self.pushed / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def resources_per_s(self) -> float:
        """Resources in the pushed transactions per second of wall time."""
        return self.resources / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def ok(self) -> bool:
        """Every record pushed (or already pushed) and the run finished."""
        return not (self.invalid or self.failed or self.interrupted)

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain JSON values."""
        return {
            "total": self.total,
            "pushed": self.pushed,
            "skipped": self.skipped,
            "invalid": self.invalid,
            "failed": self.failed,
            "resources": self.resources,
            "created": self.created,
            "updated": self.updated,
            "removed": self.removed,
            "retried": self.retried,
            "warnings": self.warnings,
            "elapsed_s": round(self.elapsed_s, 3),
            "records_per_s": round(self.records_per_s, 2),
            "resources_per_s": round(self.resources_per_s, 1),
            "interrupted": self.interrupted,
            "failed_inputs": self.failed_inputs,
        }

    def line(self) -> str:
        """The text summary."""
        text = (
            f"pushed {self.pushed}, skipped {self.skipped} (already pushed), "
            f"invalid {self.invalid}, failed {self.failed}; {self.resources} resources "
            f"({self.created} new, {self.updated} updated, {self.removed} removed) in "
            f"{self.elapsed_s:.1f} s: {self.records_per_s:.1f} "
            f"records/s, {self.resources_per_s:.0f} resources/s"
        )
        return text + (" (interrupted)" if self.interrupted else "")


def bulk_push(
    inputs: Iterable[PushInput],
    *,
    client: FhirClient,
    server: str,
    options: ConversionOptions,
    jobs: int = 4,
    journal: PushJournal | None = None,
    retry: RetrySettings | None = None,
    on_result: Callable[[RecordResult], None] | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> BulkPushSummary:
    """Convert and push every input with ``jobs`` concurrent transactions.

    ``on_result`` sees every record's outcome, in the calling thread, as it is known
    (completion order). Setting ``stop`` (the CLI does on Ctrl-C and SIGTERM) ends the run
    early: nothing new is sent, transactions already on the wire are waited for and
    journaled, and the summary says ``interrupted``. A ``KeyboardInterrupt`` does the same
    as best it can (it can strike between a server's answer and its journal line, and that
    record is then sent again next time: harmless, as every push is idempotent). Never
    raises for a record's problem.
    """
    if jobs < 1:
        raise ValueError("jobs must be at least 1")
    retry = retry or RetrySettings()
    stop = stop or threading.Event()
    summary = BulkPushSummary()
    started = clock()
    # Pushes in flight: their record's digest and conversion warnings.
    in_flight: dict[Future[RecordResult], tuple[str, list[str]]] = {}

    def settle(result: RecordResult, digest: str | None = None) -> None:
        if result.status == "pushed" and journal is not None and digest is not None:
            journal.record(digest, result)
        summary.add(result)
        if on_result is not None:
            on_result(result)

    def collect(done: Iterable[Future[RecordResult]]) -> None:
        for future in done:
            digest, warnings = in_flight.pop(future)
            result = future.result()
            result.warnings.extend(warnings)
            settle(result, digest)

    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="push")
    try:
        for item in inputs:
            if stop.is_set():
                summary.interrupted = True
                break
            try:
                data = item.read()
            except OSError as exc:
                problem = RecordError("$", "io", f"cannot read: {exc.strerror or exc}")
                settle(RecordResult(item.source, "invalid", errors=[problem]))
                continue
            digest = record_digest(data, server=server, options=options)
            if journal is not None and journal.done(digest):
                settle(RecordResult(item.source, "skipped"))
                continue
            outcome = convert_bytes(item.source, data, options)
            if outcome.bundle is None:
                settle(RecordResult(item.source, "invalid", errors=outcome.errors))
                continue
            while len(in_flight) >= 2 * jobs:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                collect(done)
            future = pool.submit(
                _push_with_retries, client, item.source, outcome.bundle, retry, stop
            )
            in_flight[future] = (digest, outcome.warnings)
        while in_flight:
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            collect(done)
    except KeyboardInterrupt:
        summary.interrupted = True
        stop.set()
        # Transactions on the wire finish (their answers are journaled); queued ones don't start.
        pool.shutdown(wait=True, cancel_futures=True)
        collect([f for f in in_flight if f.done() and not f.cancelled()])
    finally:
        pool.shutdown(wait=True)
        summary.elapsed_s = clock() - started
    return summary
