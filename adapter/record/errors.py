"""The one error type every input check reports, so CLI and gateway render it the same way."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def json_path(parts: Any) -> str:
    """``$.a.b[0]`` from path parts (keys and indexes); keys that are not identifiers are quoted."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}"
        else:
            out += f"[{part!r}]"
    return out


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


class RecordErrors(list[RecordError]):
    """The errors of one record, in path order; ``omitted`` counts those a cap left out.

    A list, so every caller that compares or iterates the result of ``validate_record`` works
    unchanged; the count is there for callers that cap (the gateway's responses).
    """

    def __init__(self, errors: list[RecordError] | None = None, omitted: int = 0) -> None:
        super().__init__(errors or [])
        self.omitted = omitted

    @property
    def total(self) -> int:
        """Errors found, reported or not."""
        return len(self) + self.omitted


class RecordInputError(Exception):
    """Raised when input cannot even be read as a JSON object; carries the located errors."""

    def __init__(self, errors: list[RecordError]) -> None:
        super().__init__("; ".join(e.line() for e in errors))
        self.errors = errors
