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


def _server(args: argparse.Namespace) -> str | None:
    server = args.server or os.environ.get("FHIR_SERVER_URL")
    if not server:
        print("fhir-adapter: error: give --server URL or set FHIR_SERVER_URL", file=sys.stderr)
    return server


def cmd_push(args: argparse.Namespace) -> int:
    """Convert and push each record as one idempotent transaction."""
    from adapter.fhir.errors import FhirError
    from adapter.pipeline import convert_source, expand_inputs
    from adapter.push import fhir_client, push_bundle

    server = _server(args)
    if not server:
        return EXIT_USAGE
    failed = 0
    with fhir_client(server) as client:
        for source in expand_inputs(args.files):
            outcome = convert_source(source, _options(args))
            if outcome.bundle is None:
                failed += 1
                _print_errors(source, outcome.errors)
                continue
            try:
                result = push_bundle(client, outcome.bundle)
            except FhirError as exc:
                failed += 1
                print(f"{source}: push failed: {exc}", file=sys.stderr)
                continue
            print(f"{source}: {len(result.references)} resources, {result.created} new")
            if not args.quiet:
                for reference in result.references:
                    print(f"  {reference}")
    return EXIT_INVALID if failed else EXIT_OK


def cmd_pull(args: argparse.Namespace) -> int:
    """Fetch a patient's resources and map them back to a case record."""
    from adapter.fhir.errors import FhirError
    from adapter.pipeline import dump_json
    from adapter.push import fhir_client
    from adapter.reverse import pull_case_record

    server = _server(args)
    if not server:
        return EXIT_USAGE
    try:
        with fhir_client(server) as client:
            record = pull_case_record(client, args.patient, args.namespace)
    except LookupError as exc:
        print(f"fhir-adapter pull: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except FhirError as exc:
        print(f"fhir-adapter pull: {exc}", file=sys.stderr)
        return EXIT_INVALID
    data = dump_json(record)
    if args.output and args.output != "-":
        Path(args.output).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
    return EXIT_OK


def cmd_timeline(args: argparse.Namespace) -> int:
    """Draw a swimmer timeline of one case (record, or a bundle the adapter produced)."""
    from adapter.record.loader import load_record_file
    from adapter.reverse import bundle_to_record
    from adapter.timeline import render_timeline

    try:
        record = load_record_file(Path(args.file))
    except RecordInputError as exc:
        _print_errors(args.file, exc.errors)
        return EXIT_INVALID
    if record.get("resourceType") == "Bundle":
        record = bundle_to_record(record, args.namespace)
    errors = validate_record(record)
    if errors:
        _print_errors(args.file, errors)
        return EXIT_INVALID
    try:
        render_timeline(record, Path(args.output))
    except ValueError as exc:
        print(f"fhir-adapter timeline: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"timeline written to {args.output}", file=sys.stderr)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gateway with uvicorn."""
    from adapter.gateway.server import serve

    return int(serve(args.host, args.port))


def cmd_completion(args: argparse.Namespace) -> int:
    """Print a shell completion script generated from this parser."""
    from adapter.completion import bash_script, zsh_script

    parser = build_parser()
    print(bash_script(parser) if args.shell == "bash" else zsh_script(parser), end="")
    return EXIT_OK


def _namespace_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        default=os.environ.get("FHIR_ADAPTER_NAMESPACE", DEFAULT_NAMESPACE),
        help="base URI of identifier systems (env FHIR_ADAPTER_NAMESPACE)",
    )


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
    _namespace_option(convert)
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

    push = commands.add_parser(
        "push",
        help="convert case records and push them to a FHIR server",
        description="Convert each record and POST it as one transaction. Every entry is a "
        "conditional create on a business identifier (or a PUT to a derived id), so pushing "
        "the same record again creates nothing new. Retries with backoff on 409/429/502/503/"
        "504 and connection errors. Bearer token from FHIR_SERVER_TOKEN.",
        epilog="example: fhir-adapter push examples/cases/*.json --server http://127.0.0.1:8089/fhir",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    push.add_argument("files", nargs="+", metavar="FILE", help="case record files or folders")
    push.add_argument("--server", help="FHIR base URL (env FHIR_SERVER_URL)")
    push.add_argument("--fhir-version", choices=["R4", "R5"], default="R4")
    push.add_argument("-q", "--quiet", action="store_true", help="one line per record")
    _namespace_option(push)
    push.set_defaults(handler=cmd_push)

    pull = commands.add_parser(
        "pull",
        help="fetch a patient's resources and map them back to a case record",
        description="Find the Patient by its case-record identifier, fetch its resources with "
        "Patient/$everything, and map them back to a case record.",
        epilog="example: fhir-adapter pull --server http://127.0.0.1:8089/fhir "
        "--patient caruso2022-02 -o case.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pull.add_argument("--server", help="FHIR base URL (env FHIR_SERVER_URL)")
    pull.add_argument(
        "--patient",
        required=True,
        metavar="IDENTIFIER",
        help="the case record_id the Patient was pushed with",
    )
    pull.add_argument("-o", "--output", metavar="case.json", help="output file (default stdout)")
    _namespace_option(pull)
    pull.set_defaults(handler=cmd_pull)

    timeline = commands.add_parser(
        "timeline",
        help="draw a swimmer timeline of one case as SVG or PNG",
        description="Lines of therapy as bars with dose marks, responses, adverse events shaded "
        "by grade, stagings and death, from a case record or a bundle the adapter produced.",
        epilog="example: fhir-adapter timeline examples/cases/caruso2022-02.json -o case.svg",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    timeline.add_argument("file", metavar="FILE", help="case record or adapter bundle")
    timeline.add_argument("-o", "--output", required=True, metavar="case.svg|case.png")
    _namespace_option(timeline)
    timeline.set_defaults(handler=cmd_timeline)

    serve = commands.add_parser(
        "serve",
        help="run the FHIR gateway (FastAPI) with uvicorn",
        description="Run the gateway a hospital EHR pushes case records and FHIR Bundles to. "
        "Configured by environment variables (see README: Gateway).",
        epilog="example: FHIR_ADAPTER_UPSTREAM_URL=http://127.0.0.1:8089/fhir "
        "FHIR_ADAPTER_API_KEYS=secret fhir-adapter serve --port 8080",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(handler=cmd_serve)

    completion = commands.add_parser(
        "completion",
        help="print a shell completion script",
        epilog="example: source <(fhir-adapter completion bash)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    completion.add_argument("shell", choices=["bash", "zsh"])
    completion.set_defaults(handler=cmd_completion)
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
