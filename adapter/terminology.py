"""Looks concepts up in the verified code tables of ``mappings/terminology/``.

Each table maps a record's concept key (``mogamulizumab``, ``sezary_syndrome``) to a display and
zero or more codings, every coding with the ``source`` where it was verified. A concept without
codings is sent as text alone; nothing here ever makes a code up.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property
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
    relationship: str | None = None
    """None: the concept itself; ``broader``: a parent, a fallback only; ``related``: kept for
    another use (a radiotherapy modality, the organism of an infection), never the code."""

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

    @cached_property
    def emitted(self) -> tuple[Coding, ...]:
        """The codings a CodeableConcept carries: all codings that mean the concept itself
        (translations of one meaning), else the first broader one as a fallback beside the
        text. Never two non-equivalent codes: a broader code is dropped when an exact one
        exists, and ``related`` codings are never sent. Computed once per concept: the tables
        are read once per process and asked for it on every coded element."""
        exact = tuple(c for c in self.codings if c.relationship is None)
        if exact:
            return exact
        return tuple(c for c in self.codings if c.relationship == "broader")[:1]

    def codeable_concept(self, text: str | None = None) -> dict[str, Any]:
        """FHIR CodeableConcept: verified codings (if any) plus text, never a guessed code."""
        concept: dict[str, Any] = {}
        codings = self.emitted
        if codings:
            concept["coding"] = [coding.as_fhir() for coding in codings]
        concept["text"] = text or self.display
        return concept

    def coding_in(self, system: str) -> Coding | None:
        """The emitted coding of one code system, if this concept has a verified one."""
        return next((c for c in self.emitted if c.system == system), None)


@cache
def table(name: str) -> dict[str, Concept]:
    """All concepts of one table (empty when the table file is absent)."""
    raw = optional_json(f"terminology/{name}.json")
    if raw is None:
        return {}
    concepts: dict[str, Concept] = {}
    for key, entry in raw.get("concepts", {}).items():
        codings = tuple(
            Coding(
                c["system"],
                c["code"],
                c.get("display", entry.get("display", key)),
                c["source"],
                c.get("relationship"),
            )
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
