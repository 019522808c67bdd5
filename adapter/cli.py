"""The ``fhir-adapter`` command line: a thin shell over the library, all I/O lives here."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from adapter import __version__
from adapter.mapping.context import DEFAULT_NAMESPACE, ConversionOptions
from adapter.record.errors import RecordError, RecordInputError
from adapter.record.loader import load_record_file
from adapter.record.validate import validate_record

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70


def _print_errors(source: str, errors: list[RecordError]) -> None:
    for error in errors:
        print(error.line(source), file=sys.stderr)


def check_file(path: Path) -> list[RecordError]:
    """All errors of one record file, from unreadable bytes to broken references."""
    try:
        record = load_record_file(path)
    except RecordInputError as exc:
        return exc.errors
    return validate_record(record)


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate each file; exit 1 if any is invalid, naming every problem on stderr."""
    failed = 0
    for name in args.files:
        errors = check_file(Path(name))
        if errors:
            failed += 1
            _print_errors(name, errors)
        elif not args.quiet:
            print(f"{name}: valid")
    return EXIT_INVALID if failed else EXIT_OK


def _options(args: argparse.Namespace) -> ConversionOptions:
    return ConversionOptions(fhir_version=args.fhir_version, namespace=args.namespace)


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert records to bundles; see :mod:`adapter.convert_command` for the output rules."""
    from adapter.convert_command import run_convert

    return run_convert(args, _options(args))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; separate so that tests and shell completion can inspect it."""
    parser = argparse.ArgumentParser(
        prog="fhir-adapter",
        description="Validate oncology case records, convert them to FHIR, push and pull them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="check case records against the case-record schema and code tables",
        description="Check case records. Exit 0 when all are valid, 1 otherwise; each problem "
        "is one line on stderr: FILE: $.json.path: rule broken.",
        epilog="example: fhir-adapter validate examples/cases/*.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="case record JSON files")
    validate.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    validate.set_defaults(handler=cmd_validate)

    convert = commands.add_parser(
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
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="case record files, folders, glob patterns, or - for stdin",
    )
    convert.add_argument(
        "-o", "--output", metavar="OUT.json", help="output file for a single input (- for stdout)"
    )
    convert.add_argument("--out-dir", metavar="DIR", help="write one output per input here")
    convert.add_argument(
        "--format",
        choices=["json", "ndjson"],
        default="json",
        help="json: one Bundle per input; ndjson: one resource per line, one "
        "file per resource type (FHIR Bulk Data), needs --out-dir",
    )
    convert.add_argument(
        "--fhir-version",
        choices=["R4", "R5"],
        default="R4",
        help="FHIR release of the output (default R4)",
    )
    convert.add_argument(
        "--namespace",
        default=os.environ.get("FHIR_ADAPTER_NAMESPACE", DEFAULT_NAMESPACE),
        help="base URI of identifier systems (env FHIR_ADAPTER_NAMESPACE)",
    )
    convert.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="convert in N parallel processes"
    )
    convert.add_argument(
        "--validate",
        action="store_true",
        help="also validate every output resource with fhir.resources",
    )
    convert.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar, no closing summary"
    )
    convert.add_argument(
        "--summary",
        choices=["text", "json"],
        default="text",
        help="closing summary format (json for scripts)",
    )
    convert.set_defaults(handler=cmd_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # last resort: a bug must still not print a traceback at users
        print(
            f"fhir-adapter: internal error ({type(exc).__name__}: {exc}); please report it "
            "with the input that caused it",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
