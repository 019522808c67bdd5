"""``fhir-adapter push``: convert records and send each as one idempotent transaction.

One record or ten thousand: the orchestration (concurrency, per-record retries, the resume
journal) is :mod:`adapter.bulk_push`; this module is its command line: the options, a
line per record on stdout, progress on stderr, the closing summary and the exit code.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from types import FrameType
from typing import Any

from adapter.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    add_command,
    add_namespace_option,
    conversion_options,
    server_url,
)

EXIT_INTERRUPTED = 130
PROGRESS_LINE_SECONDS = 10.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _usage(message: str) -> int:
    print(f"fhir-adapter push: error: {message}", file=sys.stderr)
    return EXIT_USAGE


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C or SIGTERM stop the run cleanly: nothing new is sent, the transactions on the
    wire are waited for and journaled, the summary is printed. A second Ctrl-C aborts."""

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        print("stopping: waiting for the transactions in flight ...", file=sys.stderr)

    try:
        previous = {sig: signal.signal(sig, request_stop) for sig in _STOP_SIGNALS}
    except ValueError:  # not the main thread (embedded use): leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _LineProgress:
    """Progress for logs (stderr is not a terminal): one line every few seconds."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.last = self.started

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last >= PROGRESS_LINE_SECONDS:
            self.last = now
            rate = self.done / (now - self.started)
            print(
                f"progress: {self.done}/{self.total} records, {rate:.1f}/s",
                file=sys.stderr,
                flush=True,
            )


def run(args: argparse.Namespace) -> int:
    """Convert and push every record; see the command's description."""
    from adapter.bulk_push import (
        JournalError,
        PushJournal,
        RecordResult,
        RetrySettings,
        bulk_push,
        count_records,
        expand_push_paths,
        iter_push_inputs,
    )
    from adapter.push import fhir_client

    server = server_url(args)
    if not server:
        return EXIT_USAGE
    if args.jobs < 1:
        return _usage("--jobs must be at least 1")
    if args.retries < 0:
        return _usage("--retries must be 0 or more")
    paths = list(expand_push_paths(args.files))
    if not paths:
        return _usage("no input files found")
    total = count_records(paths)
    options = conversion_options(args)

    def report(result: RecordResult) -> None:
        for warning in result.warnings:
            print(f"{result.source}: warning: {warning}", file=sys.stderr)
        if result.status == "pushed":
            # Flushed per record: a log being tailed (or a pipe) sees progress as it happens.
            print(
                f"{result.source}: {result.resources} resources, {result.created} new, "
                f"{result.updated} updated, {result.removed} removed"
            )
            if not args.quiet:
                for reference in result.references:
                    print(f"  {reference}")
            sys.stdout.flush()
        elif result.status == "skipped":
            print(f"{result.source}: skipped, already pushed (journal {args.state})", flush=True)
        elif result.status == "invalid":
            for error in result.errors:
                print(error.line(result.source), file=sys.stderr)
        else:
            print(f"{result.source}: push failed: {result.error}", file=sys.stderr)
        advance()

    with ExitStack() as stack:
        advance = _progress(stack, total, args)
        try:
            journal = PushJournal(args.state) if args.state else None
        except (OSError, JournalError) as exc:
            return _usage(f"--state: {exc}")
        if journal is not None:
            stack.callback(journal.close)
            if journal.ignored_lines:
                print(
                    f"{args.state}: {journal.ignored_lines} unreadable line(s) ignored "
                    "(their records are pushed again)",
                    file=sys.stderr,
                )
        client = stack.enter_context(fhir_client(server))
        stop = threading.Event()
        stack.enter_context(_stop_on_signals(stop))
        summary = bulk_push(
            iter_push_inputs(paths),
            client=client,
            server=server,
            options=options,
            jobs=args.jobs,
            journal=journal,
            retry=RetrySettings(retries=args.retries),
            on_result=report,
            stop=stop,
        )
    if summary.interrupted:
        hint = (
            f"rerun the same command to push the rest (journal {args.state})"
            if args.state
            else "pushing again is safe (idempotent); with --state FILE a rerun skips "
            "what was already pushed"
        )
        print(f"interrupted: {hint}", file=sys.stderr)
    if args.summary == "json":
        print(json.dumps(summary.as_dict()), flush=True)
    elif total > 1 or not summary.ok:
        print(summary.line(), file=sys.stderr)
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_INVALID


def _progress(stack: ExitStack, total: int, args: argparse.Namespace) -> Any:
    """A callable advancing the progress display (a bar on a terminal, else log lines)."""
    if args.no_progress or total < 2:
        return lambda: None
    if sys.stderr.isatty():
        from rich.progress import Progress

        bar = stack.enter_context(Progress(transient=True))
        task = bar.add_task("pushing", total=total)
        return lambda: bar.advance(task)
    return _LineProgress(total).advance


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand and its options."""
    parser = add_command(
        commands,
        "push",
        help="convert case records and push them to a FHIR server",
        description="Convert each record and send it as one transaction that makes the server "
        "equal to the record: every entry is a conditional update on a business identifier "
        "(or a PUT to a derived id), and resources an earlier version of the record produced "
        "but this one no longer does are deleted; pushing the same record again changes "
        "nothing, and a concurrent change of the same record is re-planned. Inputs: files, "
        "folders (their *.json, *.ndjson and *.jsonl), globs; an .ndjson/.jsonl file holds "
        "one record per line. "
        "--jobs N sends N transactions at once. A transient failure (no answer, 408/409/425/"
        "429, 5xx) is retried by the client within seconds and then per record with a longer "
        "backoff (--retries); a refusal (e.g. 422) is final. With --state FILE every accepted "
        "record is journaled and a rerun skips it unless its content changed, so an "
        "interrupted load resumes where it stopped. Exit 0 when every record was pushed (or "
        "already was), 1 when some were invalid or failed, 2 on a usage error, 130 when "
        "interrupted (Ctrl-C, SIGTERM). Bearer token from FHIR_SERVER_TOKEN.",
        epilog="examples:\n"
        "  fhir-adapter push examples/cases/*.json --server http://127.0.0.1:8089/fhir\n"
        "  fhir-adapter push cases.ndjson --jobs 8 --state cases.push-state -q "
        "--summary json",
    )
    parser.add_argument(
        "files", nargs="+", metavar="INPUT", help="case record files, folders, NDJSON files"
    )
    parser.add_argument("--server", help="FHIR base URL (env FHIR_SERVER_URL)")
    parser.add_argument("--fhir-version", choices=["R4", "R5"], default="R4")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="one line per record, no references"
    )
    parser.add_argument(
        "--jobs", type=int, default=4, metavar="N", help="transactions in flight (default 4)"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="per-record retries of transient failures, after the client's own (default 3)",
    )
    parser.add_argument(
        "--state",
        metavar="FILE",
        help="resume journal: records already pushed are skipped, accepted ones appended",
    )
    parser.add_argument(
        "--summary",
        choices=["text", "json"],
        default="text",
        help="closing summary: text on stderr, or json as the last line of stdout",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (terminal) or progress lines every 10 s (otherwise) on stderr",
    )
    add_namespace_option(parser)
    parser.set_defaults(handler=run)
