"""The words of a timeline: course names, title, subtitle, response and stage labels.

Kept apart from placement so that what a lane or marker is called can change without touching
where it goes, and so that the names are short enough for a lane label yet still say what the
source says (a drug's display without the terminology table's remarks, a trial in brackets).
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

from adapter import terminology

_PROCEDURE_LABELS = {
    "photopheresis": "ECP",
    "puva": "PUVA",
    "nbuvb": "nbUVB",
    "uva": "UVA",
    "phototherapy": "phototherapy",
    "tseb": "TSEB",
    "radiotherapy": "radiotherapy",
    "total_body_irradiation": "TBI",
    "stem_cell_transplant": "stem cell transplant",
    "surgery": "surgery",
}
_COMPARTMENT_ORDER = ("overall", "skin", "blood", "nodes", "viscera")


def strip_parens(text: str) -> str:
    """The text without its bracketed remarks (unless nothing else is left)."""
    return re.sub(r"\s*\([^)]*\)", "", text).strip() or text


def display(table: str, key: str) -> str:
    """The terminology table's display of a key, or the key in words when the table lacks it."""
    concept = terminology.table(table).get(key)
    return concept.display if concept else key.replace("_", " ")


def _drug_label(key: str) -> str:
    """A drug's display without remarks: 'corticosteroid, systemic (agent not stated)' reads
    'systemic corticosteroid'."""
    text = strip_parens(display("drugs", key))
    head, comma, tail = text.partition(", ")
    return f"{tail} {head}" if comma and "," not in tail else text


def course_label(treatment: dict[str, Any], trial: str | None) -> str:
    """A course's short name: its regimen name, its agents, or the kind of procedure."""
    kind = treatment.get("kind", "drug")
    if kind == "drug":
        agents = [_drug_label(a["drug"]) for a in treatment.get("agents", [])]
        name = treatment.get("name")
        if name and (len(name) <= 14 or not agents):
            label = str(name)
        else:
            label = " + ".join(dict.fromkeys(agents)) or str(name or "drug")
    elif kind == "stem_cell_transplant":
        kind_of = (treatment.get("transplant") or {}).get("type")
        label = {"allogeneic": "allo-HSCT", "autologous": "auto-HSCT"}.get(kind_of or "", "HSCT")
    elif kind == "radiotherapy" and (treatment.get("radiation") or {}).get("total_dose"):
        dose = treatment["radiation"]["total_dose"]
        label = f"radiotherapy {dose['value']:g} {dose['unit']}"
    else:
        label = _PROCEDURE_LABELS.get(kind, kind.replace("_", " "))
    if treatment.get("in_trial") and trial:
        label += f" ({trial})"
    return label


def distinct_labels(labels: dict[str, str], lines: dict[str, Any]) -> dict[str, str]:
    """Labels that would name two lanes or rows alike (a drug given again outside numbered
    lines, or twice in one line) get the course's ordinal: 'mogamulizumab (2nd course)'."""
    totals: dict[tuple[Any, str], int] = {}
    for tid, label in labels.items():
        totals[(lines[tid], label)] = totals.get((lines[tid], label), 0) + 1
    seen: dict[tuple[Any, str], int] = {}
    result = {}
    for tid, label in labels.items():
        key = (lines[tid], label)
        if totals[key] > 1:
            seen[key] = seen.get(key, 0) + 1
            n = seen[key]
            suffix = {1: "st", 2: "nd", 3: "rd"}.get(n if n < 20 else n % 10, "th")
            label = f"{label} ({n}{suffix} course)"
        result[tid] = label
    return result


def counts_summary(treatment: dict[str, Any]) -> str:
    """What the source counts of a course ('about 6 cycles, 12 doses'): shown when its dates
    are not, so the reader still learns how long it ran."""
    counts = treatment.get("counts") or {}
    about = "about " if counts.get("approximate") else ""
    parts = []
    for key, word in (
        ("cycles", "cycle"),
        ("doses", "dose"),
        ("sessions", "session"),
        ("days", "day"),
        ("weeks", "week"),
        ("months", "month"),
    ):
        if key in counts:
            n = counts[key]
            parts.append(f"{about}{n} {word}{'s' if n != 1 else ''}")
    return ", ".join(parts)


def relative_text(relative: dict[str, Any]) -> str:
    """A time relative to a course in words: 'day +150', 'after dose 3'."""
    if "days" in relative:
        return f"day {relative['days']:+d}"
    if "weeks" in relative:
        return f"week {relative['weeks']}"
    if "months" in relative:
        return f"month {relative['months']}"
    if "after_dose" in relative:
        return f"after dose {relative['after_dose']}"
    if "after_cycle" in relative:
        return f"after cycle {relative['after_cycle']}"
    return str(relative.get("text") or "relative time")


def _short_citation(source: dict[str, Any]) -> str:
    citation = str(source.get("citation", "")).strip()
    year_match = re.search(r"(?<![\d.])(19|20)\d{2}(?![\d.])", citation)
    year = year_match.group(0) if year_match else ""
    authors = re.match(r"\s*([^.,;:\[]+?\bet al)\b\.?", citation)
    if authors:
        short = f"{authors.group(1)}."
    else:
        short = re.split(r"[.\[]", citation, maxsplit=1)[0].strip()
        if len(short) > 60:
            short = textwrap.shorten(short, 60, placeholder="…")
    return f"{short} {year}".strip()


def subtitle(record: dict[str, Any]) -> str:
    """Where the case comes from: short citation, case number, trial and arm, case label."""
    source = record.get("source") or {}
    parts = [_short_citation(source)]
    if source.get("case_number"):
        parts.append(f"case {source['case_number']}")
    trial = source.get("trial") or {}
    if trial.get("name"):
        arm = f", {trial['arm']} arm" if trial.get("arm") else ""
        parts.append(f"{trial['name']} trial{arm}")
    if source.get("case_label") and not re.fullmatch(
        r"(patient|case)\s*#?\s*\d+", str(source["case_label"]), re.IGNORECASE
    ):
        parts.append(str(source["case_label"]))
    return textwrap.shorten(" · ".join(p for p in parts if p), 150, placeholder="…")


def primary_diagnosis(record: dict[str, Any]) -> dict[str, Any] | None:
    """The diagnosis marked primary, else the first one."""
    diagnoses = record.get("diagnoses") or []
    return next((d for d in diagnoses if d.get("role") == "primary"), None) or (
        diagnoses[0] if diagnoses else None
    )


def title(record: dict[str, Any]) -> str:
    """Record id and primary diagnosis, without the table's long bracketed remarks."""
    primary = primary_diagnosis(record)
    if primary is None:
        return str(record.get("record_id", "case"))
    text = display("conditions", str(primary.get("condition", "")))
    text = re.sub(r"\s*\([^)]{9,}\)", "", text)
    if primary.get("variant"):
        text += f", {primary['variant']}"
    return f"{record.get('record_id', 'case')} — {text}"


def response_label(category: str, compartments: list[str], footnote: bool = False) -> str:
    """'PR skin+blood'; an overall response is the bare category on the plot, where the
    marker sits on its course, but names 'overall' in a footnote, where it does not."""
    ordered = sorted(
        dict.fromkeys(compartments),
        key=lambda c: _COMPARTMENT_ORDER.index(c) if c in _COMPARTMENT_ORDER else 9,
    )
    if ordered == ["overall"] and not footnote:
        return category
    return f"{category} {'+'.join(ordered)}"


def stage_label(staging: dict[str, Any]) -> str:
    """'IVA1 (T4 N0 M0 B2)': the group with the categories the source gives."""
    tnmb = " ".join(staging[k] for k in ("t", "n", "m", "b") if staging.get(k))
    group = staging.get("group")
    if group and tnmb:
        return f"{group} ({tnmb})"
    return str(group or tnmb or "stage")
