"""What every command shares: exit codes, error lines, the server and namespace options."""

from __future__ import annotations

import argparse
import os
import sys

from adapter.mapping.context import DEFAULT_NAMESPACE, ConversionOptions
from adapter.record.errors import RecordError

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70


def print_errors(source: str, errors: list[RecordError]) -> None:
    """One ``SOURCE: $.path: rule`` line per problem on stderr."""
    for error in errors:
        print(error.line(source), file=sys.stderr)


def conversion_options(args: argparse.Namespace) -> ConversionOptions:
    """The mapping options every converting command takes from its arguments."""
    return ConversionOptions(fhir_version=args.fhir_version, namespace=args.namespace)


def server_url(args: argparse.Namespace) -> str | None:
    """``--server`` or ``FHIR_SERVER_URL``; prints the usage error itself when neither is set."""
    server = args.server or os.environ.get("FHIR_SERVER_URL")
    if not server:
        print("fhir-adapter: error: give --server URL or set FHIR_SERVER_URL", file=sys.stderr)
    return server


def add_namespace_option(parser: argparse.ArgumentParser) -> None:
    """``--namespace``: the base of identifier systems, shared by converting and pulling."""
    parser.add_argument(
        "--namespace",
        default=os.environ.get("FHIR_ADAPTER_NAMESPACE", DEFAULT_NAMESPACE),
        help="base URI of identifier systems (env FHIR_ADAPTER_NAMESPACE)",
    )


def add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    epilog: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand whose description and example epilog keep their line breaks."""
    return commands.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
