"""The one error type every input check reports, so CLI and gateway render it the same way."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class RecordError:
    """A problem in a case record, located by JSON path and named by the rule it breaks.

    ``rule`` is a short machine-readable name (``required``, ``enum``, ``unknown-concept``...) so
    that an OperationOutcome can carry it as a code while ``message`` stays human-readable.
    """

    path: str
    rule: str
    message: str

    def line(self, source: str | None = None) -> str:
        """One line for a terminal or log: ``FILE: $.path: message``."""
        prefix = f"{source}: " if source else ""
        return f"{prefix}{self.path}: {self.message}"


class RecordInputError(Exception):
    """Raised when input cannot even be read as a JSON object; carries the located errors."""

    def __init__(self, errors: list[RecordError]) -> None:
        super().__init__("; ".join(e.line() for e in errors))
        self.errors = errors
