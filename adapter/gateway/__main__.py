"""``python -m adapter.gateway [--host H] [--port P]``: the gateway without the full CLI."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from adapter.gateway.server import serve


def main(argv: Sequence[str] | None = None) -> int:
    """Parse host and port and serve; configuration comes from FHIR_ADAPTER_* variables."""
    parser = argparse.ArgumentParser(
        prog="python -m adapter.gateway", description="Run the FHIR adapter gateway."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    args = parser.parse_args(argv)
    return serve(args.host, args.port)


if __name__ == "__main__":
    raise SystemExit(main())
