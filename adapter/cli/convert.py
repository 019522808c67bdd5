"""``fhir-adapter convert``: where bundles go, progress, summary, exit code.

Conversion streams: inputs are read, converted and written one at a time (or a few at a time
with ``--jobs``), so memory stays flat however many records a folder holds.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO

from adapter.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    add_command,
    add_namespace_option,
    conversion_options,
)
from adapter.pipeline import STDIN, OutputFormat, default_jobs, expand_inputs, render_sources

_NDJSON_BUFFER = 1 << 20
"""Write buffer per NDJSON file: one system call per megabyte, not per resource."""


def _usage(message: str) -> int:
    print(f"fhir-adapter convert: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _output_name(source: str) -> str:
    return "stdin.json" if source == STDIN else Path(source).with_suffix(".json").name


class _NdjsonWriter:
    """One file per resource type, opened on first use and appended to across inputs."""

    def __init__(self, folder: Path, stack: ExitStack) -> None:
        self.folder = folder
        self.stack = stack
        self.files: dict[str, IO[bytes]] = {}

    def write(self, lines_by_type: dict[str, bytes]) -> None:
        for kind, lines in lines_by_type.items():
            if kind not in self.files:
                path = self.folder / f"{kind}.ndjson"
                self.files[kind] = self.stack.enter_context(
                    path.open("wb", buffering=_NDJSON_BUFFER)
                )
            self.files[kind].write(lines)


def run(args: argparse.Namespace) -> int:
    """Execute ``fhir-adapter convert``; returns the exit code."""
    options = conversion_options(args)
    sources = list(expand_inputs(args.inputs))
    if not sources:
        return _usage("no input files found")
    if args.format == "ndjson" and not args.out_dir:
        return _usage("--format ndjson needs --out-dir")
    if len(sources) > 1 and not args.out_dir:
        return _usage(f"{len(sources)} inputs need --out-dir (or convert one at a time)")
    if args.output and args.out_dir:
        return _usage("use either -o or --out-dir")
    if args.jobs is not None and args.jobs < 1:
        return _usage("--jobs must be at least 1")
    jobs = args.jobs or default_jobs()
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    converted = failed = warning_count = 0
    failures: list[str] = []
    show_progress = not args.quiet and len(sources) > 1 and sys.stderr.isatty()
    with ExitStack() as stack:
        ndjson = _NdjsonWriter(out_dir, stack) if out_dir and args.format == "ndjson" else None
        progress = None
        if show_progress:
            from rich.progress import Progress

            progress = stack.enter_context(Progress(transient=True))
            task = progress.add_task("converting", total=len(sources))
        output_format: OutputFormat = "ndjson" if ndjson is not None else "json"
        rendered_inputs = render_sources(
            sources, options, output_format, jobs=jobs, validate=args.validate
        )
        for rendered in rendered_inputs:
            if progress is not None:
                progress.advance(task)
            for warning in rendered.warnings:
                print(f"{rendered.source}: warning: {warning}", file=sys.stderr)
            warning_count += len(rendered.warnings)
            if rendered.output is None:
                failed += 1
                failures.append(rendered.source)
                for error in rendered.errors:
                    print(error.line(rendered.source), file=sys.stderr)
                for problem in rendered.problems:
                    print(f"{rendered.source}: {problem}", file=sys.stderr)
                continue
            converted += 1
            if isinstance(rendered.output, dict):
                if ndjson is not None:
                    ndjson.write(rendered.output)
            elif out_dir is not None:
                (out_dir / _output_name(rendered.source)).write_bytes(rendered.output)
            elif args.output and args.output != STDIN:
                Path(args.output).write_bytes(rendered.output)
            else:
                sys.stdout.buffer.write(rendered.output)
                sys.stdout.flush()
    if not args.quiet:
        summary = {
            "converted": converted,
            "failed": failed,
            "warnings": warning_count,
            "failed_inputs": failures,
        }
        writes_stdout = out_dir is None and (not args.output or args.output == STDIN)
        stream = sys.stderr if writes_stdout else sys.stdout
        if args.summary == "json":
            print(json.dumps(summary), file=stream)
        else:
            print(
                f"converted {converted}, failed {failed}, warnings {warning_count}", file=sys.stderr
            )
    return EXIT_INVALID if failed else EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand and its options."""
    parser = add_command(
        commands,
        "convert",
        help="convert case records to FHIR transaction Bundles",
        description="Convert case records (files, folders, globs, or - for stdin) to FHIR "
        "transaction Bundles. One input writes to stdout unless -o is given; several inputs "
        "need --out-dir. Exit 0 when all converted, 1 when some inputs were invalid (the valid "
        "ones are still converted), 2 on a usage error.",
        epilog="examples:\n"
        "  fhir-adapter convert examples/cases/caruso2022-02.json -o bundle.json\n"
        "  fhir-adapter convert examples/cases --out-dir out/ --fhir-version R5\n"
        "  fhir-adapter convert examples/cases --out-dir ndjson/ --format ndjson --jobs 2\n"
        "  cat record.json | fhir-adapter convert - > bundle.json",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="case record files, folders, glob patterns, or - for stdin",
    )
    parser.add_argument(
        "-o", "--output", metavar="OUT.json", help="output file for a single input (- for stdout)"
    )
    parser.add_argument("--out-dir", metavar="DIR", help="write one output per input here")
    parser.add_argument(
        "--format",
        choices=["json", "ndjson"],
        default="json",
        help="json: one Bundle per input; ndjson: one resource per line, one "
        "file per resource type (FHIR Bulk Data), needs --out-dir",
    )
    parser.add_argument(
        "--fhir-version",
        choices=["R4", "R5"],
        default="R4",
        help="FHIR release of the output (default R4)",
    )
    add_namespace_option(parser)
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="convert in N parallel processes (default: the number of cores; output is the "
        "same for any N; runs of fewer than 64 inputs stay in one process)",
    )
    parser.add_argument(
        "--validate",
        action="store_true",
        help="also validate every output resource with fhir.resources",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar, no closing summary"
    )
    parser.add_argument(
        "--summary",
        choices=["text", "json"],
        default="text",
        help="closing summary format (json for scripts)",
    )
    parser.set_defaults(handler=run)
