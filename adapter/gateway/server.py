"""Run the gateway under uvicorn: what ``fhir-adapter serve`` and the Docker image call."""

from __future__ import annotations

import logging
import sys

import uvicorn

from adapter.gateway.audit import configure_logging
from adapter.gateway.config import ConfigError, Settings
from adapter.gateway.main import create_app

__all__ = ["serve"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def serve(host: str, port: int) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit code.

    Settings come from the environment and are checked before anything listens, so a
    misconfiguration exits 2 with one line naming the variable. uvicorn's access log is off:
    it prints raw paths (which can hold patient identifiers); the gateway's own audit
    line replaces it.
    """
    try:
        settings = Settings.from_env()
        app = create_app(settings)
    except ConfigError as exc:
        print(f"fhir-adapter serve: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(logging.INFO)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=15,
    )
    server = uvicorn.Server(config)
    server.run()
    return EXIT_OK if server.started else EXIT_FAILED
