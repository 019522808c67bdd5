"""``fhir-adapter serve``: run the gateway with uvicorn."""

from __future__ import annotations

import argparse

from adapter.cli.common import add_command


def run(args: argparse.Namespace) -> int:
    """Run the gateway until it is stopped; its exit code is the command's."""
    from adapter.gateway.server import serve

    return int(serve(args.host, args.port))


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand and its options."""
    parser = add_command(
        commands,
        "serve",
        help="run the FHIR gateway (FastAPI) with uvicorn",
        description="Run the gateway a hospital EHR pushes case records and FHIR Bundles to. "
        "Configured by environment variables (see README: Gateway).",
        epilog="example: FHIR_ADAPTER_UPSTREAM_URL=http://127.0.0.1:8089/fhir "
        "FHIR_ADAPTER_API_KEYS=secret fhir-adapter serve --port 8080",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.set_defaults(handler=run)
