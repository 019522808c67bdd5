"""``fhir-adapter pull``: read a patient back from a server into a case record."""

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
    server_url,
)


def run(args: argparse.Namespace) -> int:
    """Fetch a patient's resources and map them back to a case record."""
    from adapter.fhir.errors import FhirError
    from adapter.pipeline import dump_json
    from adapter.push import fhir_client
    from adapter.reverse import pull_case_record

    server = server_url(args)
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


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand and its options."""
    parser = add_command(
        commands,
        "pull",
        help="fetch a patient's resources and map them back to a case record",
        description="Find the Patient by its case-record identifier, fetch its resources with "
        "Patient/$everything, and map them back to a case record.",
        epilog="example: fhir-adapter pull --server http://127.0.0.1:8089/fhir "
        "--patient caruso2022-02 -o case.json",
    )
    parser.add_argument("--server", help="FHIR base URL (env FHIR_SERVER_URL)")
    parser.add_argument(
        "--patient",
        required=True,
        metavar="IDENTIFIER",
        help="the case record_id the Patient was pushed with",
    )
    parser.add_argument("-o", "--output", metavar="case.json", help="output file (default stdout)")
    add_namespace_option(parser)
    parser.set_defaults(handler=run)
