"""``fhir-adapter validate``: check case records against the schema and the code tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from adapter.cli.common import EXIT_INVALID, EXIT_OK, add_command, print_errors
from adapter.record.errors import RecordError, RecordInputError
from adapter.record.loader import load_record_file
from adapter.record.validate import validate_record


def check_file(path: Path) -> list[RecordError]:
    """All errors of one record file, from unreadable bytes to broken references."""
    try:
        record = load_record_file(path)
    except RecordInputError as exc:
        return exc.errors
    return validate_record(record)


def run(args: argparse.Namespace) -> int:
    """Validate each file; exit 1 if any is invalid, naming every problem on stderr."""
    failed = 0
    for name in args.files:
        errors = check_file(Path(name))
        if errors:
            failed += 1
            print_errors(name, errors)
        elif not args.quiet:
            print(f"{name}: valid")
    return EXIT_INVALID if failed else EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand and its options."""
    parser = add_command(
        commands,
        "validate",
        help="check case records against the case-record schema and code tables",
        description="Check case records. Exit 0 when all are valid, 1 otherwise; each problem "
        "is one line on stderr: FILE: $.json.path: rule broken.",
        epilog="example: fhir-adapter validate examples/cases/*.json",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="case record JSON files")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    parser.set_defaults(handler=run)
