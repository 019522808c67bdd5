"""``fhir-adapter push``: convert records and send each as one idempotent transaction."""

from __future__ import annotations

import argparse
import sys

from adapter.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    add_command,
    add_namespace_option,
    conversion_options,
    print_errors,
    server_url,
)


def run(args: argparse.Namespace) -> int:
    """Convert and push each record as one idempotent transaction."""
    from adapter.fhir.errors import FhirError
    from adapter.pipeline import convert_source, expand_inputs
    from adapter.push import fhir_client, push_bundle

    server = server_url(args)
    if not server:
        return EXIT_USAGE
    failed = 0
    with fhir_client(server) as client:
        for source in expand_inputs(args.files):
            outcome = convert_source(source, conversion_options(args))
            if outcome.bundle is None:
                failed += 1
                print_errors(source, outcome.errors)
                continue
            try:
                result = push_bundle(client, outcome.bundle)
            except FhirError as exc:
                failed += 1
                print(f"{source}: push failed: {exc}", file=sys.stderr)
                continue
            print(
                f"{source}: {len(result.references)} resources, {result.created} new, "
                f"{result.updated} updated, {len(result.removed)} removed"
            )
            if not args.quiet:
                for reference in result.references:
                    print(f"  {reference}")
    return EXIT_INVALID if failed else EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand and its options."""
    parser = add_command(
        commands,
        "push",
        help="convert case records and push them to a FHIR server",
        description="Convert each record and send it as one transaction that makes the server "
        "equal to the record: every entry is a conditional update on a business identifier "
        "(or a PUT to a derived id), and resources an earlier version of the record produced "
        "but this one no longer does are deleted. Pushing the same record again changes "
        "nothing. A concurrent change of the same record (409/412) is re-planned; retries with "
        "backoff on 429/502/503/504 and connection errors. Bearer token from "
        "FHIR_SERVER_TOKEN.",
        epilog="example: fhir-adapter push examples/cases/*.json --server http://127.0.0.1:8089/fhir",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="case record files or folders")
    parser.add_argument("--server", help="FHIR base URL (env FHIR_SERVER_URL)")
    parser.add_argument("--fhir-version", choices=["R4", "R5"], default="R4")
    parser.add_argument("-q", "--quiet", action="store_true", help="one line per record")
    add_namespace_option(parser)
    parser.set_defaults(handler=run)
