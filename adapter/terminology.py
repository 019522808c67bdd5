"""Looks concepts up in the verified code tables of ``mappings/terminology/``.

Each table maps a record's concept key (``mogamulizumab``, ``sezary_syndrome``) to a display and
zero or more codings, every coding with the ``source`` where it was verified. A concept without
codings is sent as text alone; nothing here ever makes a code up.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from adapter.mappings import optional_json

TABLES = (
    "conditions",
    "drugs",
    "procedures",
    "adverse-events",
    "observations",
    "routes",
    "units",
    "responses",
    "stop-reasons",
    "ae-grades",
    "race-ethnicity",
    "staging",
)


@dataclass(frozen=True)
class Coding:
    """One verified code with the note of where it was verified."""

    system: str
    code: str
    display: str
    source: str

    def as_fhir(self) -> dict[str, str]:
        """The FHIR Coding; the source note stays in mappings/, not on the wire."""
        return {"system": self.system, "code": self.code, "display": self.display}


@dataclass(frozen=True)
class Concept:
    """A concept of a table: its display, its verified codings and any extra attributes."""

    key: str
    display: str
    codings: tuple[Coding, ...]
    attributes: dict[str, Any]

    def codeable_concept(self, text: str | None = None) -> dict[str, Any]:
        """FHIR CodeableConcept: verified codings (if any) plus text, never a guessed code."""
        concept: dict[str, Any] = {}
        if self.codings:
            concept["coding"] = [coding.as_fhir() for coding in self.codings]
        concept["text"] = text or self.display
        return concept

    def coding_in(self, system: str) -> Coding | None:
        """The coding of one code system, if this concept has a verified one."""
        return next((c for c in self.codings if c.system == system), None)


@cache
def table(name: str) -> dict[str, Concept]:
    """All concepts of one table (empty when the table file is absent)."""
    raw = optional_json(f"terminology/{name}.json")
    if raw is None:
        return {}
    concepts: dict[str, Concept] = {}
    for key, entry in raw.get("concepts", {}).items():
        codings = tuple(
            Coding(c["system"], c["code"], c.get("display", entry.get("display", key)), c["source"])
            for c in entry.get("codings", [])
        )
        attributes = {k: v for k, v in entry.items() if k not in {"display", "codings"}}
        concepts[key] = Concept(key, entry.get("display", key), codings, attributes)
    return concepts


def lookup(table_name: str, key: str) -> Concept:
    """The concept for a key; unknown keys are rejected earlier by record validation."""
    try:
        return table(table_name)[key]
    except KeyError:
        raise KeyError(f"{key!r} is not in mappings/terminology/{table_name}.json") from None


def has(table_name: str, key: str) -> bool:
    """Whether a key exists, for validation."""
    return key in table(table_name)
