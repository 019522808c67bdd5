"""Case record → Patient: sex, a birth year only when an age fixes it, race/ethnicity, death.

Ages stay as stated, in Observations (see observation.map_age)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from adapter import terminology
from adapter.mapping.computed import Computed, set_primitive
from adapter.mapping.context import MappingContext
from adapter.mapping.datatypes import data_absent
from adapter.mapping.extensions import relative_time
from adapter.record.dates import PartialDate

US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
US_CORE_ETHNICITY = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
OMB = "urn:oid:2.16.840.1.113883.6.238"


def _years_before(day: date, years: int) -> date:
    """The same calendar day ``years`` earlier (29 February becomes 28 February)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def derived_birth_year(ages: list[dict[str, Any]]) -> tuple[str, str] | None:
    """``(year, basis)`` when a stated age and its dated reference fix the birth year.

    An age of N on a day D means birth after D minus N+1 years and no later than D minus N
    years: two calendar years unless D is 31 December. A reference known only to the month or
    the year widens the range further. The year is returned only when every possible birth day
    falls in one year, so a birthDate is never a guess between two.
    """
    for age in ages:
        if "date" not in age:
            continue
        when = PartialDate.parse(age["date"])
        years = int(age["years"])  # 70.0 is an integer to JSON Schema
        earliest = _years_before(when.earliest(), years + 1) + timedelta(days=1)
        latest = _years_before(when.latest(), years)
        if earliest.year == latest.year:
            basis = f"age {years} at {age['refers_to'].replace('_', ' ')} on {when}"
            return f"{latest.year:04d}", basis
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
        # An age rarely fixes the birth year (a 64-year-old in 2014 was born in 1949 or 1950):
        # the ages travel as stated, in Observations, and birthDate only when it is certain.
        derived = derived_birth_year(source.get("ages", []))
        if derived:
            set_primitive(ctx, resource, "birthDate", derived[0], Computed("age", derived[1]))
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
