"""``fhir-adapter timeline``: draw one case as a swimmer timeline (SVG or PNG)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapter.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    add_command,
    add_namespace_option,
    print_errors,
)
from adapter.record.errors import RecordInputError
from adapter.record.loader import load_record_file
from adapter.record.validate import validate_record


def run(args: argparse.Namespace) -> int:
    """Draw a swimmer timeline of one case (record, or a bundle the adapter produced)."""
    from adapter.reverse import bundle_to_record
    from adapter.timeline import render_timeline

    try:
        record = load_record_file(Path(args.file))
    except RecordInputError as exc:
        print_errors(args.file, exc.errors)
        return EXIT_INVALID
    if record.get("resourceType") == "Bundle":
        record = bundle_to_record(record, args.namespace)
    errors = validate_record(record)
    if errors:
        print_errors(args.file, errors)
        return EXIT_INVALID
    try:
        render_timeline(record, Path(args.output))
    except ValueError as exc:
        print(f"fhir-adapter timeline: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"timeline written to {args.output}", file=sys.stderr)
    return EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand and its options."""
    parser = add_command(
        commands,
        "timeline",
        help="draw a swimmer timeline of one case as SVG or PNG",
        description="Lines of therapy as bars with dose marks, responses, adverse events shaded "
        "by grade, stagings and death, from a case record or a bundle the adapter produced.",
        epilog="example: fhir-adapter timeline examples/cases/caruso2022-02.json -o case.svg",
    )
    parser.add_argument("file", metavar="FILE", help="case record or adapter bundle")
    parser.add_argument("-o", "--output", required=True, metavar="case.svg|case.png")
    add_namespace_option(parser)
    parser.set_defaults(handler=run)
