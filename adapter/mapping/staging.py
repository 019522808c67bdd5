"""ISCL/EORTC stage grouping: categories in, group out, from the table in mappings/staging/.

The engine only derives; it never overwrites what a source wrote. A written group that the
categories contradict is reported as a warning naming both, and the written group is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from adapter.mappings import iscl_eortc_staging

_SUB_LETTER = re.compile(r"^([TNMB][0-4X])[ab]?$")


@dataclass(frozen=True)
class StagingRow:
    """One row of the grouping table: the categories each axis may take for the group."""

    group: str
    t: frozenset[str]
    n: frozenset[str]
    m: frozenset[str]
    b: frozenset[str]


@dataclass(frozen=True)
class StagingTable:
    """The grouping table plus how coarse written groups (III, IV, IVA) relate to fine ones."""

    rows: tuple[StagingRow, ...]
    nx_groups_with: frozenset[str]
    coarse_groups: dict[str, frozenset[str]]


@lru_cache(maxsize=1)
def staging_table() -> StagingTable:
    """The table of mappings/staging/iscl-eortc.json, loaded once."""
    raw = iscl_eortc_staging()
    rows = tuple(
        StagingRow(
            r["group"], frozenset(r["t"]), frozenset(r["n"]), frozenset(r["m"]), frozenset(r["b"])
        )
        for r in raw["groups"]
    )
    coarse = {k: frozenset(v) for k, v in raw["coarse_groups"].items()}
    return StagingTable(rows, frozenset(raw["nx_groups_with"]), coarse)


def base_category(category: str) -> str:
    """Strip a sub-letter (T1a → T1, B0b → B0): sub-letters refine but never change the group."""
    match = _SUB_LETTER.match(category)
    return match.group(1) if match else category


def derive_group(t: str | None, n: str | None, m: str | None, b: str | None) -> str | None:
    """The finest stage group the four categories imply, or None when one is missing.

    NX (clinically abnormal, not histologically confirmed) cannot be N3 and is abnormal, so it
    satisfies any row that accepts N1 or N2.
    """
    if not (t and n and m and b):
        return None
    table = staging_table()
    t_, n_, m_, b_ = (base_category(c) for c in (t, n, m, b))
    for row in table.rows:
        n_ok = n_ in row.n or (n_ == "NX" and bool(row.n & table.nx_groups_with))
        if t_ in row.t and n_ok and m_ in row.m and b_ in row.b:
            return row.group
    return None


def written_agrees(written: str, derived: str) -> bool:
    """Whether a written group is the derived one or a coarser group that contains it."""
    if written == derived:
        return True
    return derived in staging_table().coarse_groups.get(written, frozenset())


def stage_conflict(staging: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(derived_group, conflict_message)`` for one staging of a record."""
    derived = derive_group(staging.get("t"), staging.get("n"), staging.get("m"), staging.get("b"))
    written = staging.get("group")
    if derived and written and not written_agrees(written, derived):
        categories = " ".join(staging[k] for k in ("t", "n", "m", "b"))
        return derived, (
            f"written stage group {written} contradicts categories {categories}, "
            f"which give {derived}; the written group is kept"
        )
    return derived, None
