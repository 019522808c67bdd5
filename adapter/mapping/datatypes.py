"""Small builders for FHIR datatypes that several mappers share.

Kept as plain dicts: building pydantic models for every element costs far more than the whole
mapping (see bench/), and the output is validated against fhir.resources in the tests instead.
"""

from __future__ import annotations

from typing import Any

from adapter import terminology

UCUM = "http://unitsofmeasure.org"
DATA_ABSENT_REASON_URL = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"


def text_concept(text: str) -> dict[str, Any]:
    """A CodeableConcept for a concept with no verified code: text alone, never a guess."""
    return {"text": text}


def concept(table: str, key: str, text: str | None = None) -> dict[str, Any]:
    """CodeableConcept of a table concept: its verified codings plus text."""
    return terminology.lookup(table, key).codeable_concept(text)


def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    """A Coding; used only with codes that come from mappings/ or from FHIR's own code systems."""
    result = {"system": system, "code": code}
    if display:
        result["display"] = display
    return result


def ucum_quantity(value: float, unit_key: str, comparator: str | None = None) -> dict[str, Any]:
    """A Quantity in the unit as written, with its UCUM code when units.json has a verified one.

    Units without a verified UCUM code keep their human unit and no system, which FHIR allows.
    """
    quantity: dict[str, Any] = {"value": number(value)}
    if comparator:
        quantity["comparator"] = comparator
    quantity["unit"] = unit_key
    unit = terminology.table("units").get(unit_key)
    ucum = unit.coding_in(UCUM) if unit else None
    if ucum:
        quantity.update(system=UCUM, code=ucum.code)
    return quantity


def number(value: float) -> int | float:
    """JSON number without a spurious ``.0`` so 1 mg/kg stays ``1``, as the source wrote it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def data_absent(reason: str = "unknown") -> dict[str, Any]:
    """The data-absent-reason extension for a value the source does not give."""
    return {"extension": [{"url": DATA_ABSENT_REASON_URL, "valueCode": reason}]}


def annotation(text: str) -> dict[str, str]:
    """An Annotation holding the source's own words."""
    return {"text": text}


def comparable(start: str, end: str) -> bool:
    """Whether FHIR can order two partial dates (FHIRPath gives no answer for, e.g., ``2019``
    against ``2019-05``: different precisions that agree at the coarser one)."""
    shorter = min(len(start), len(end))
    return len(start) == len(end) or start[:shorter] != end[:shorter]


def period(start: str | None, end: str | None, end_url: str | None = None) -> dict[str, Any]:
    """A Period at the precision of its dates (FHIR dateTime accepts YYYY and YYYY-MM).

    When start and end cannot be ordered at their precisions (started 2019-05-01, ended
    "May 2019"), Period.end would break per-1 on strict servers; the end then travels in the
    ``end_url`` extension instead, exactly as written, rather than being padded or dropped.
    """
    result: dict[str, Any] = {}
    if start:
        result["start"] = start
    if end:
        if start and end_url and not comparable(start, end):
            result["extension"] = [{"url": end_url, "valueDateTime": end}]
        else:
            result["end"] = end
    return result
