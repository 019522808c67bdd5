"""``fhir-adapter serve``: run the gateway with uvicorn."""

from __future__ import annotations

import argparse
import sys

from adapter.cli.common import EXIT_USAGE, add_command


def run(args: argparse.Namespace) -> int:
    """Run the gateway until it is stopped; its exit code is the command's."""
    from adapter.gateway.server import Tls, serve

    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        print(
            "fhir-adapter serve: error: --ssl-certfile and --ssl-keyfile go together",
            file=sys.stderr,
        )
        return EXIT_USAGE
    tls = Tls(args.ssl_certfile, args.ssl_keyfile) if args.ssl_certfile else None
    return int(serve(args.host, args.port, tls))


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """Host, port and TLS: shared with ``python -m adapter.gateway``."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    parser.add_argument(
        "--ssl-certfile",
        metavar="PEM",
        help="serve HTTPS with this certificate chain (with --ssl-keyfile)",
    )
    parser.add_argument("--ssl-keyfile", metavar="PEM", help="private key of the certificate")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand and its options."""
    parser = add_command(
        commands,
        "serve",
        help="run the FHIR gateway (FastAPI) with uvicorn",
        description="Run the gateway a hospital EHR pushes case records and FHIR Bundles to. "
        "Configured by environment variables (docs/gateway.md).",
        epilog="example: FHIR_ADAPTER_UPSTREAM_URL=http://127.0.0.1:8089/fhir "
        "FHIR_ADAPTER_CLIENTS=/etc/fhir-adapter/clients.json fhir-adapter serve --port 8443 "
        "--ssl-certfile cert.pem --ssl-keyfile key.pem",
    )
    add_server_options(parser)
    parser.set_defaults(handler=run)
