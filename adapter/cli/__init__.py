"""The ``fhir-adapter`` command line: a thin shell over the library, all I/O lives here.

One module per command (``validate``, ``convert``, ``push``, ``pull``, ``timeline``,
``serve``, ``purge``, ``completion``), each with a ``register`` that adds its subparser and a
``run`` that executes it; this module assembles the parser and owns the never-a-traceback rule.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from adapter import __version__
from adapter.cli import completion, convert, pull, purge, push, serve, timeline, validate
from adapter.cli.common import EXIT_INTERNAL, EXIT_OK

__all__ = ["build_parser", "main"]

_COMMANDS = (validate, convert, push, pull, timeline, serve, purge, completion)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; separate so that tests and shell completion can inspect it."""
    parser = argparse.ArgumentParser(
        prog="fhir-adapter",
        description="Validate oncology case records, convert them to FHIR, push and pull them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _COMMANDS:
        command.register(commands)
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
