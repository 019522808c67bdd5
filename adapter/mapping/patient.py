"""Case record → Patient: sex, derived birth year, race/ethnicity, death; ages stay as stated."""

from __future__ import annotations

from typing import Any

from adapter import terminology
from adapter.mapping.context import MappingContext
from adapter.mapping.datatypes import data_absent
from adapter.mapping.extensions import relative_time
from adapter.record.dates import PartialDate

US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
US_CORE_ETHNICITY = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
OMB = "urn:oid:2.16.840.1.113883.6.238"


def derived_birth_year(ages: list[dict[str, Any]]) -> tuple[str, str] | None:
    """``(year, explanation)`` from the first age whose reference date is known.

    An age of N at a date in year Y means birth in Y-N or Y-N-1; the adapter records Y-N (the
    year the person would reach the stated age in that year) and says so in an extension on
    birthDate, so no reader mistakes it for a stated birth date.
    """
    for age in ages:
        if "date" in age:
            when = PartialDate.parse(age["date"])
            year = when.year - int(age["years"])  # 70.0 is an integer to JSON Schema
            explanation = (
                f"derived from age {age['years']} at {age['refers_to']} ({when}): "
                f"born in {year} or {year - 1}; the source gives no birth date"
            )
            return f"{year:04d}", explanation
    return None


def _omb_extension(url: str, key: str | None, text: str) -> dict[str, Any]:
    subs: list[dict[str, Any]] = []
    if key:
        code = terminology.lookup("race-ethnicity", key).coding_in(OMB)
        if code:
            subs.append({"url": "ombCategory", "valueCoding": code.as_fhir()})
    subs.append({"url": "text", "valueString": text})
    return {"url": url, "extension": subs}


def map_patient(ctx: MappingContext, record: dict[str, Any]) -> dict[str, Any]:
    """The Patient resource; identified by the record_id so a resend finds the same patient."""
    source = record["patient"]
    resource: dict[str, Any] = {"resourceType": "Patient"}
    race_ext = [
        _omb_extension(US_CORE_RACE, r.get("category"), r["text"]) for r in source.get("race", [])
    ]
    if "ethnicity" in source:
        eth = source["ethnicity"]
        race_ext.append(_omb_extension(US_CORE_ETHNICITY, eth.get("category"), eth["text"]))
    if race_ext:
        resource["extension"] = race_ext
    resource["identifier"] = [{"system": ctx.patient_identifier_system, "value": ctx.record_id}]
    # Published cases are anonymised: the name is withheld, which US Core (and so mCODE)
    # expects to be said with a data-absent-reason rather than left out.
    resource["name"] = [data_absent("masked")]
    resource["gender"] = source["sex"]
    if "birth_date" in source:
        resource["birthDate"] = source["birth_date"]
    else:
        derived = derived_birth_year(source.get("ages", []))
        if derived:
            resource["birthDate"] = derived[0]
            resource["_birthDate"] = {
                "extension": [
                    {"url": ctx.extension_url("birth-date-derivation"), "valueString": derived[1]}
                ]
            }
        else:
            resource["_birthDate"] = data_absent("unknown")
    death = source.get("deceased")
    if death is not None:
        if "cause" in death:
            resource.setdefault("extension", []).append(
                {"url": ctx.extension_url("cause-of-death"), "valueString": death["cause"]}
            )
        if "after" in death:
            resource.setdefault("extension", []).append(
                relative_time(ctx, death["after"], "relative-death")
            )
        if "date" in death:
            resource["deceasedDateTime"] = death["date"]
        else:
            resource["deceasedBoolean"] = True
    return resource
