"""``python -m adapter.gateway [--host H] [--port P] [--ssl-certfile PEM --ssl-keyfile PEM]``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from adapter.cli.serve import add_server_options, run


def main(argv: Sequence[str] | None = None) -> int:
    """Parse host, port and TLS and serve; configuration comes from FHIR_ADAPTER_* variables."""
    parser = argparse.ArgumentParser(
        prog="python -m adapter.gateway", description="Run the FHIR adapter gateway."
    )
    add_server_options(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
