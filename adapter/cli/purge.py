"""``fhir-adapter purge``: delete finished submissions from the gateway's outbox.

The gateway keeps a failed submission's Bundle (patient data) so that an operator can see
why the upstream refused it, and a delivered one's trimmed answer; both for
``FHIR_ADAPTER_RETENTION_DAYS`` (30 by default), after which the running gateway deletes them
itself. This command does the same on demand, for a shorter period or with the gateway
stopped. Queued submissions are never touched: they are data not yet delivered.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from adapter.cli.common import EXIT_INVALID, EXIT_OK, EXIT_USAGE, add_command

_STATES = {
    "failed": ("failed",),
    "delivered": ("delivered",),
    "superseded": ("superseded",),
    "finished": ("delivered", "failed", "superseded"),
}


def run(args: argparse.Namespace) -> int:
    """Delete the chosen finished rows older than ``--older-than-days``; print how many."""
    from adapter.gateway.config import DEFAULT_DB
    from adapter.gateway.outbox import State, open_outbox

    db = args.db or DEFAULT_DB
    if args.older_than_days < 0:
        print("fhir-adapter purge: error: --older-than-days must not be negative", file=sys.stderr)
        return EXIT_USAGE
    try:
        outbox = open_outbox(db)
    except Exception as exc:  # whatever the driver raises: one line, no traceback
        print(f"fhir-adapter purge: cannot open {db}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        deleted = outbox.purge(
            finished_before=time.time() - args.older_than_days * 86400,
            states=[State(name) for name in _STATES[args.state]],
        )
    except Exception as exc:
        print(f"fhir-adapter purge: cannot delete from {db}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    finally:
        outbox.close()
    print(f"deleted {deleted} {args.state} submission{'s' if deleted != 1 else ''}")
    return EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand and its options."""
    parser = add_command(
        commands,
        "purge",
        help="delete finished submissions (and failed ones' Bundles) from the gateway's outbox",
        description="Delete delivered and/or failed submissions that finished more than N days "
        "ago. Queued submissions are never deleted.",
        epilog="example: fhir-adapter purge --db /var/lib/fhir-adapter/outbox.sqlite3 "
        "--older-than-days 7 --state failed",
    )
    parser.add_argument(
        "--db",
        default=os.environ.get("FHIR_ADAPTER_DB"),
        help="outbox: SQLite path or postgresql:// URL (env FHIR_ADAPTER_DB; default: the "
        "gateway's default, fhir-adapter-gateway.sqlite3)",
    )
    parser.add_argument(
        "--older-than-days",
        type=float,
        required=True,
        metavar="N",
        help="only submissions finished more than N days ago (0: all finished ones)",
    )
    parser.add_argument(
        "--state",
        choices=sorted(_STATES),
        default="finished",
        help="which finished submissions: failed, delivered or both (default)",
    )
    parser.set_defaults(handler=run)
