"""The bundle says exactly what the source says: stated dates win, computed values are marked,
dose steps, causality, study links, statuses and codes (issue #10)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from adapter import terminology
from adapter.mapping import ConversionOptions, convert_record
from adapter.mapping.computed import read as computed_marker
from adapter.mapping.context import DEFAULT_NAMESPACE
from adapter.mapping.courses import plan_treatment
from adapter.mapping.patient import derived_birth_year
from adapter.mapping.schedule import Anchor, expand_schedule
from adapter.record.validate import validate_record
from adapter.reverse import bundle_to_record
from tests.conftest import load_case

STANDARD = {"regimen": "mogamulizumab_standard"}
WEEKLY = {"frequency": {"times": 1, "period": 1, "period_unit": "wk"}}


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def key_of(resource: dict[str, Any]) -> str:
    identifier = resource["identifier"]
    first = identifier[0] if isinstance(identifier, list) else identifier
    return str(first["value"]).split("/", 2)[2]


def by_key(bundle: dict[str, Any], kind: str, key: str) -> dict[str, Any]:
    return next(r for r in resources(bundle, kind) if key_of(r) == key)


def convert(record: dict[str, Any], version: str = "R4") -> dict[str, Any]:
    assert validate_record(record) == []
    return convert_record(record, ConversionOptions(fhir_version=version)).bundle


def course(**fields: Any) -> dict[str, Any]:
    treatment: dict[str, Any] = {
        "id": "t1",
        "kind": "drug",
        "start": "2021-01-04",
        "agents": [{"drug": "mogamulizumab", "schedule": WEEKLY}],
    }
    treatment.update(fields)
    return treatment


def record_with(treatment: dict[str, Any], **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "record_id": "truth-test",
        "schema_version": "1.0",
        "recorded_at": "2026-01-01T00:00:00Z",
        "source": {"citation": "Test case", "case_number": 1},
        "patient": {"sex": "female"},
        "diagnoses": [{"id": "dx1", "condition": "sezary_syndrome", "role": "primary"}],
        "treatments": [treatment],
    }
    record.update(extra)
    return record


# -- anchoring ------------------------------------------------------------------------------


def test_a_stated_cycle_date_re_anchors_every_later_dose() -> None:
    expansion = expand_schedule(
        "2020-12-23", None, STANDARD, {"cycles": 3}, anchors=[Anchor(date(2021, 1, 21), cycle=2)]
    )
    assert expansion.doses is not None
    whens = [d.when for d in expansion.doses]
    assert whens[:4] == [
        date(2020, 12, 23),
        date(2020, 12, 30),
        date(2021, 1, 6),
        date(2021, 1, 13),
    ]
    # cycle 2 day 1 is the stated date, day 15 and cycle 3 count from it (the schedule: Jan 20)
    assert whens[4:] == [date(2021, 1, 21), date(2021, 2, 4), date(2021, 2, 18), date(2021, 3, 4)]
    stated = [d.number for d in expansion.doses if d.date_computed is None]
    assert stated == [1, 5]


def test_a_stated_dose_date_re_anchors_the_doses_after_it() -> None:
    expansion = expand_schedule(
        "2021-01-04", None, WEEKLY, {"doses": 4}, anchors=[Anchor(date(2021, 1, 20), dose=3)]
    )
    assert expansion.doses is not None
    assert [d.when for d in expansion.doses] == [
        date(2021, 1, 4),
        date(2021, 1, 11),
        date(2021, 1, 20),
        date(2021, 1, 27),
    ]


def test_an_anchor_before_the_dose_it_follows_is_a_contradiction_not_a_reordering() -> None:
    expansion = expand_schedule(
        "2021-01-04", None, WEEKLY, {"doses": 4}, anchors=[Anchor(date(2021, 1, 10), dose=3)]
    )
    assert expansion.doses is None and expansion.problem is not None
    assert "not after dose 2" in expansion.problem


def test_caruso_02_doses_follow_the_figure_caption() -> None:
    bundle = convert(load_case("caruso2022-02"))
    doses = [
        r
        for r in resources(bundle, "MedicationAdministration")
        if key_of(r).startswith("t2.mogamulizumab.d")
    ]
    assert doses[4]["effectiveDateTime"] == "2021-01-21"  # "Second cycle ... on 01/21/2021"
    assert "_effectiveDateTime" not in doses[4]  # a stated date is not marked
    assert all(d["effectiveDateTime"] <= "2021-06-01" for d in doses)  # "End ...: 06/01/2021"
    request = by_key(bundle, "MedicationRequest", "t2.mogamulizumab")
    anchor = next(e for e in request["extension"] if e["url"].endswith("/schedule-anchor"))
    assert {"url": "date", "valueDateTime": "2021-01-21"} in anchor["extension"]


# -- re-anchoring after an interruption ------------------------------------------------------


def test_a_restart_re_anchors_the_phased_schedule_where_it_stopped() -> None:
    treatment = course(
        agents=[{"drug": "mogamulizumab", "schedule": STANDARD}],
        counts={"doses": 6},
        interruptions=[{"after_dose": 3, "end": "2021-03-01"}],
    )
    plan = plan_treatment(treatment)[0]
    assert plan.doses is not None
    assert [d.when for d in plan.doses] == [
        date(2021, 1, 4),
        date(2021, 1, 11),
        date(2021, 1, 18),
        date(2021, 3, 1),  # the stated restart: dose 4, day 22 of cycle 1
        date(2021, 3, 8),  # day 1 of cycle 2, seven days later as the schedule says
        date(2021, 3, 22),  # day 15 of cycle 2
    ]
    assert [(d.cycle, d.day) for d in plan.doses][3:] == [(1, 22), (2, 1), (2, 15)]
    assert plan.doses[3].date_computed is None and plan.doses[4].date_computed is not None
    assert "restart 2021-03-01" in plan.doses[4].date_computed.basis


# -- end bound -------------------------------------------------------------------------------


def test_no_dose_after_a_stated_end_a_count_that_does_not_fit_is_not_expanded() -> None:
    fits = expand_schedule("2021-01-04", "2021-01-25", WEEKLY, {"doses": 4})
    assert fits.doses is not None and fits.doses[-1].when == date(2021, 1, 25)
    too_many = expand_schedule("2021-01-04", "2021-01-20", WEEKLY, {"doses": 4})
    assert too_many.doses is None
    assert too_many.problem and "2021-01-25" in too_many.problem
    month_end = expand_schedule("2021-01-04", "2021-01", WEEKLY, {"doses": 5})
    assert month_end.doses is None  # dose 5 would be 2021-02-01, after "January 2021"


def test_end_before_bounds_the_schedule_and_the_conflict_is_reported() -> None:
    """caruso2022-04: 6 gemcitabine cycles (days 1, 8, 15 q28) from 08/07/19 would put the 18th
    dose on 2019-12-09, inside the radiotherapy that began on 7/12/2019 after the progression."""
    result = convert_record(load_case("caruso2022-04"))
    administrations = [
        r
        for r in resources(result.bundle, "MedicationAdministration")
        if key_of(r).startswith("t3.")
    ]
    assert [key_of(r) for r in administrations] == ["t3.gemcitabine"]
    assert administrations[0]["effectivePeriod"] == {"start": "2019-07-08", "end": "2019-12"}
    assert any("2019-12-09" in w and "2019-12-07" in w for w in result.warnings)


def test_end_before_must_follow_the_start() -> None:
    record = record_with(course(end_before="2021-01-01", counts={"doses": 2}))
    errors = validate_record(record)
    assert [e.path for e in errors] == ["$.treatments[0].end_before"]


def test_anchors_must_lie_within_the_course_and_in_order() -> None:
    record = record_with(
        course(
            counts={"cycles": 3},
            end="2021-03-01",
            anchors=[
                {"cycle": 3, "date": "2021-02-01"},
                {"cycle": 2, "date": "2021-01-25"},
                {"cycle": 4, "date": "2021-04-01"},
            ],
        )
    )
    messages = {(e.path, e.message) for e in validate_record(record)}
    assert (
        "$.treatments[0].anchors[1].date",
        "2021-01-25 is not after the anchor before it (2021-02-01)",
    ) in messages
    assert any(p == "$.treatments[0].anchors[2].date" and "after end" in m for p, m in messages)
    assert any(p == "$.treatments[0].anchors[2].cycle" and "beyond" in m for p, m in messages)


# -- derived marking -------------------------------------------------------------------------


def test_a_regimen_route_is_marked_computed_and_a_stated_one_is_not() -> None:
    mavoric = convert(load_case("mavoric-cr-01"))
    request = by_key(mavoric, "MedicationRequest", "t8.mogamulizumab")
    route = request["dosageInstruction"][0]["route"]
    marker = computed_marker(route)
    assert marker is not None and marker[0] == "regimen"
    assert "mogamulizumab_standard" in marker[1]
    assert (
        computed_marker(request["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]) is None
    )
    stated = convert(load_case("caruso2022-04"))
    assert (
        computed_marker(
            by_key(stated, "MedicationRequest", "t8.mogamulizumab")["dosageInstruction"][0]["route"]
        )
        is None
    )  # "mogamulizumab 1 mg/kg IV"


def test_a_regimen_dose_is_marked_computed_on_request_and_administrations() -> None:
    bundle = convert(load_case("caruso2022-06"))  # "standard IV schedule": no dose stated
    request = by_key(bundle, "MedicationRequest", "t3.mogamulizumab")
    dose = request["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
    assert dose["value"] == 1 and computed_marker(dose) == (
        "regimen",
        "dose of the named regimen mogamulizumab_standard",
    )
    administration = by_key(bundle, "MedicationAdministration", "t3.mogamulizumab")
    assert computed_marker(administration["dosage"]["dose"]) is not None


def test_no_route_or_dose_without_a_named_schedule_or_protocol() -> None:
    bundle = convert(load_case("caruso2022-10"))  # "mogamulizumab 1 mg/kg", no schedule
    request = by_key(bundle, "MedicationRequest", "t4.mogamulizumab")
    instruction = request["dosageInstruction"][0]
    assert "route" not in instruction
    assert computed_marker(instruction["doseAndRate"][0]["doseQuantity"]) is None
    bundle = convert(load_case("caruso2022-12"))  # dose and schedule not given at all
    assert "dosageInstruction" not in by_key(bundle, "MedicationRequest", "t3.mogamulizumab")


def test_every_expanded_date_off_a_stated_date_is_marked_and_the_basis_names_it() -> None:
    bundle = convert(load_case("caruso2022-03"))  # start 05/05/2021, 3 cycles
    doses = [
        r for r in resources(bundle, "MedicationAdministration") if key_of(r).startswith("t9.")
    ]
    assert len(doses) == 8
    assert "_effectiveDateTime" not in doses[0] and doses[0]["effectiveDateTime"] == "2021-05-05"
    for dose in doses[1:]:
        method, basis = computed_marker(dose["_effectiveDateTime"]) or ("", "")
        assert method == "schedule" and "2021-05-05" in basis


def test_a_date_from_a_relative_time_is_marked_in_r4_and_r5() -> None:
    treatment = course(counts={"doses": 4})
    record = record_with(
        treatment,
        adverse_events=[
            {
                "id": "ae1",
                "term": "constipation",
                "text": "constipation",
                "onset_after": {"treatment": "t1", "days": 10},
            }
        ],
    )
    r4 = by_key(convert(record), "AdverseEvent", "ae1")
    assert r4["date"] == "2021-01-14"
    assert computed_marker(r4["_date"]) is not None
    assert computed_marker(r4["_date"])[0] == "relative-time"  # type: ignore[index]
    r5 = by_key(convert(record, "R5"), "AdverseEvent", "ae1")
    assert computed_marker(r5["_occurrenceDateTime"]) is not None


def test_no_birth_date_from_an_age_that_allows_two_years() -> None:
    patient = resources(convert(load_case("caruso2022-11")), "Patient")[0]
    assert "birthDate" not in patient  # "On 2014, a 64-year-old woman": 1949 or 1950
    ages = [
        r
        for r in resources(convert(load_case("caruso2022-11")), "Observation")
        if key_of(r).startswith("age")
    ]
    assert ages[0]["code"]["coding"][0]["code"] == "30525-0"
    assert ages[0]["valueQuantity"] == {
        "value": 64,
        "unit": "years",
        "system": "http://unitsofmeasure.org",
        "code": "a",
    }


def test_a_birth_year_is_asserted_and_marked_only_when_the_age_fixes_it() -> None:
    assert derived_birth_year([{"years": 64, "refers_to": "presentation", "date": "2014"}]) is None
    assert derived_birth_year([{"years": 64, "refers_to": "other", "date": "2014-06-30"}]) is None
    year = derived_birth_year([{"years": 64, "refers_to": "other", "date": "2014-12-31"}])
    assert year is not None and year[0] == "1950"
    record = record_with(course(counts={"doses": 1}))
    record["patient"]["ages"] = [{"years": 64, "refers_to": "other", "date": "2014-12-31"}]
    patient = resources(convert(record), "Patient")[0]
    assert patient["birthDate"] == "1950"
    assert computed_marker(patient["_birthDate"]) is not None


def test_the_derived_stage_group_is_marked_and_the_written_one_is_not() -> None:
    bundle = convert(load_case("caruso2022-09"))
    condition = by_key(bundle, "Condition", "dx1")
    written, finer = (stage["summary"]["coding"][0] for stage in condition["stage"])
    assert written["code"] == "IIA" and computed_marker(written) is None
    assert finer["code"] == "IVA1"  # written IVA, categories T4 NX M0 B2
    assert computed_marker(finer) is not None


def test_computed_values_are_not_pulled_back_as_stated() -> None:
    record = load_case("mavoric-cr-01")
    back = bundle_to_record(convert(record), DEFAULT_NAMESPACE)
    agent = next(t for t in back["treatments"] if t["id"] == "t8")["agents"][0]
    assert "route" not in agent  # computed from the regimen, not stated
    assert agent["schedule"]["regimen"] == "mogamulizumab_standard"


# -- dose steps ------------------------------------------------------------------------------


def test_a_lead_in_dose_appears_on_the_request_and_its_own_administration() -> None:
    bundle = convert(load_case("alemtuzumab2014-01"))
    request = by_key(bundle, "MedicationRequest", "t1.alemtuzumab")
    first, then = request["dosageInstruction"]
    assert (first["sequence"], then["sequence"]) == (1, 2)
    assert first["doseAndRate"][0]["doseQuantity"]["value"] == 3
    four_weeks = {"value": 4, "unit": "week", "system": "http://unitsofmeasure.org", "code": "wk"}
    assert first["timing"]["repeat"] == {"boundsDuration": four_weeks, "count": 1}
    assert then["doseAndRate"][0]["doseQuantity"]["value"] == 10
    assert then["timing"]["repeat"] == {
        "boundsDuration": four_weeks,
        "frequency": 3,
        "period": 1,
        "periodUnit": "wk",
    }
    steps = [
        r for r in resources(bundle, "MedicationAdministration") if key_of(r).startswith("t1.")
    ]
    assert [key_of(r) for r in steps] == ["t1.alemtuzumab.s1", "t1.alemtuzumab.s2"]
    assert [r["dosage"]["dose"]["value"] for r in steps] == [3, 10]


def test_a_dose_given_as_a_fraction_is_computed_marked_and_pulled_back_as_the_fraction() -> None:
    record = load_case("lhes-04")  # "resumed at a lower dose (1/10)"
    bundle = convert(record)
    request = by_key(bundle, "MedicationRequest", "t5.mogamulizumab")
    before, after = request["dosageInstruction"]
    assert before["doseAndRate"][0]["doseQuantity"]["value"] == 1
    assert before["timing"]["repeat"]["count"] == 2
    reduced = after["doseAndRate"][0]["doseQuantity"]
    assert reduced["value"] == 0.1 and reduced["unit"] == "mg/kg"
    assert computed_marker(reduced) == (
        "dose-fraction",
        "0.1 of the previous dose 1 mg/kg, as the source gives the new dose only as a fraction",
    )
    administrations = {
        key_of(r): r
        for r in resources(bundle, "MedicationAdministration")
        if key_of(r).startswith("t5.")
    }
    assert administrations["t5.mogamulizumab.s2"]["dosage"]["dose"]["value"] == 0.1
    back = bundle_to_record(bundle, DEFAULT_NAMESPACE)
    agent = next(t for t in back["treatments"] if t["id"] == "t5")["agents"][0]
    assert agent["dose_changes"] == record["treatments"][4]["agents"][0]["dose_changes"]


def test_dose_steps_on_expanded_doses() -> None:
    treatment = course(
        agents=[
            {
                "drug": "alemtuzumab",
                "initial_doses": [{"value": 3, "unit": "mg"}],
                "dose": {"value": 10, "unit": "mg"},
                "dose_changes": [{"from_dose": 4, "dose": {"value": 5, "unit": "mg"}}],
                "schedule": {"frequency": {"times": 3, "period": 1, "period_unit": "wk"}},
            }
        ],
        counts={"doses": 5},
    )
    plan = plan_treatment(treatment)[0]
    assert plan.doses is not None
    assert [d.quantity["value"] for d in plan.doses if d.quantity] == [3, 10, 10, 5, 5]


def test_a_maximum_dose_is_a_range_not_the_dose_of_every_administration() -> None:
    bundle = convert(load_case("caruso2022-05"))
    request = by_key(bundle, "MedicationRequest", "t4.bexarotene")
    assert request["dosageInstruction"][0]["doseAndRate"] == [
        {
            "doseRange": {
                "high": {
                    "value": 300,
                    "unit": "mg/m2",
                    "system": "http://unitsofmeasure.org",
                    "code": "mg/m2",
                }
            }
        }
    ]
    assert "dosage" not in by_key(bundle, "MedicationAdministration", "t4.bexarotene")


def test_dose_changes_must_follow_the_lead_in_doses() -> None:
    agent = {
        "drug": "alemtuzumab",
        "initial_doses": [{"value": 3, "unit": "mg"}],
        "dose": {"value": 10, "unit": "mg"},
        "dose_changes": [{"from_dose": 2, "fraction": 0.5}],
    }
    errors = validate_record(record_with(course(agents=[agent])))
    assert [e.path for e in errors] == ["$.treatments[0].agents[0].dose_changes[0].from_dose"]


# -- causality R4 / R5 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "element", "code"),
    [("R4", "assessment", "C53260"), ("R5", "entityRelatedness", "C53260")],
)
def test_a_stated_attribution_becomes_causality_with_the_source_words(
    version: str, element: str, code: str
) -> None:
    bundle = convert(load_case("caruso2022-11"), version)
    event = by_key(bundle, "AdverseEvent", "ae1")
    causality = event["suspectEntity"][0]["causality"]
    assessment = (causality[0] if version == "R4" else causality)[element]
    assert assessment["coding"][0]["code"] == code
    assert "Mogamulizumab-Induced Lichenoid Reaction" in assessment["text"]


def test_probable_and_unrelated_use_their_own_codes() -> None:
    lhes = by_key(convert(load_case("lhes-04")), "AdverseEvent", "ae2")
    causality = lhes["suspectEntity"][0]["causality"][0]
    # R4: no spelling of the HL7 code passes both validators, so the category travels as
    # its words, and the source's own words beside them.
    assert causality["assessment"] == {"text": "Probably/Likely"}
    assert "likely triggered" in causality["extension"][0]["valueString"]
    r5 = by_key(convert(load_case("lhes-04"), "R5"), "AdverseEvent", "ae2")
    assert (
        r5["suspectEntity"][0]["causality"]["entityRelatedness"]["coding"][0]["code"]
        == "probably-likely"
    )
    dyspnea = by_key(convert(load_case("caruso2022-09")), "AdverseEvent", "ae2")
    assessment = dyspnea["suspectEntity"][0]["causality"][0]["assessment"]
    assert assessment["coding"][0]["code"] == "C53256"  # Not Related
    assert assessment["text"] == "dyspnea caused by hypertensive and valvular heart diseases"


def test_causality_and_its_words_come_back_on_pull() -> None:
    for name in ("caruso2022-11", "lhes-04", "caruso2022-12"):
        record = load_case(name)
        for version in ("R4", "R5"):
            back = bundle_to_record(convert(record, version), DEFAULT_NAMESPACE)
            for event, pulled in zip(record["adverse_events"], back["adverse_events"], strict=True):
                for suspect, got in zip(
                    event.get("suspects", []), pulled.get("suspects", []), strict=True
                ):
                    for field in ("causality", "text", "method"):
                        assert got.get(field) == suspect.get(field), (name, version, field)


# -- study link ------------------------------------------------------------------------------


def test_study_only_where_the_suspect_was_given_within_the_trial() -> None:
    rash = by_key(convert(load_case("caruso2022-11")), "AdverseEvent", "ae1")
    assert "study" not in rash  # mogamulizumab after the EORTC-1652 atezolizumab course
    mavoric = by_key(convert(load_case("mavoric-cr-01")), "AdverseEvent", "ae1")
    assert mavoric["study"][0]["identifier"]["value"] == "NCT01728805"
    record = load_case("caruso2022-11")
    record["adverse_events"][0]["suspects"] = [{"treatment": "t5"}]  # atezolizumab, in trial
    assert "study" in by_key(convert(record), "AdverseEvent", "ae1")
    record["adverse_events"][0].pop("suspects")
    assert "study" not in by_key(convert(record), "AdverseEvent", "ae1")


# -- statuses --------------------------------------------------------------------------------


def test_a_stop_reason_alone_makes_the_course_stopped_everywhere() -> None:
    treatment = course(stop_reason="progression")
    bundle = convert(record_with(treatment))
    assert by_key(bundle, "MedicationRequest", "t1.mogamulizumab")["status"] == "stopped"
    assert by_key(bundle, "MedicationAdministration", "t1.mogamulizumab")["status"] == "stopped"
    procedure = course(kind="puva", name="PUVA", stop_reason_text="progression")
    procedure.pop("agents")
    assert by_key(convert(record_with(procedure)), "Procedure", "t1")["status"] == "stopped"


def test_no_unknown_status_beside_a_stop_reason_and_transplants_are_completed() -> None:
    from tests.conftest import CASE_FILES

    for path in CASE_FILES:
        bundle = convert(json.loads(path.read_text(encoding="utf-8")))
        for kind in ("MedicationRequest", "MedicationAdministration", "Procedure"):
            for resource in resources(bundle, kind):
                if "statusReason" in resource:
                    assert resource["status"] != "unknown", (path.stem, key_of(resource))
    for name, key in (
        ("caruso2022-08", "t7"),
        ("alemtuzumab2014-05", "t2"),
        ("caruso2022-02", "t3"),
    ):
        assert by_key(convert(load_case(name)), "Procedure", key)["status"] == "completed"


def test_every_primary_condition_has_a_clinical_status() -> None:
    from tests.conftest import CASE_FILES

    for path in CASE_FILES:
        record = json.loads(path.read_text(encoding="utf-8"))
        bundle = convert(record)
        for dx in record["diagnoses"]:
            if dx["role"] == "primary":
                condition = by_key(bundle, "Condition", dx["id"])
                assert "coding" in condition.get("clinicalStatus", {}), path.stem


# -- codes and categories --------------------------------------------------------------------


def test_the_most_specific_transplant_code_the_facts_support() -> None:
    codes = {}
    for name, key in (
        ("caruso2022-02", "t3"),
        ("caruso2022-05", "t8"),
        ("alemtuzumab2014-05", "t2"),
        ("caruso2022-08", "t7"),
    ):
        procedure = by_key(convert(load_case(name)), "Procedure", key)
        codes[name] = [c["code"] for c in procedure["code"]["coding"]]
    assert codes == {
        "caruso2022-02": ["425843001"],  # "fresh PBSC"
        "caruso2022-05": ["425843001"],  # "infusion of peripheral blood stem cells"
        "alemtuzumab2014-05": ["58390007"],  # "Allogeneic bone marrow transplant"
        "caruso2022-08": ["234336002"],  # source of the cells not stated: the generic code
    }


def test_never_two_codes_of_different_meaning_in_one_concept() -> None:
    for table in terminology.TABLES:
        for concept in terminology.table(table).values():
            emitted = concept.emitted
            assert all(c.relationship is None for c in emitted) or len(emitted) == 1, concept.key
    event = by_key(convert(load_case("caruso2022-03")), "AdverseEvent", "ae1")
    assert [c["code"] for c in event["event"]["coding"]] == ["128054009"]  # DVT, upper limb


def test_scores_and_measures_get_fitting_observation_categories() -> None:
    def categories(name: str) -> dict[str, str]:
        bundle = convert(load_case(name))
        found = {}
        for observation in resources(bundle, "Observation"):
            kinds = [
                e["valueCode"]
                for e in observation.get("extension", [])
                if e["url"].endswith("/concept-key")
            ]
            if kinds and "category" in observation:
                found[kinds[0]] = observation["category"][0]["coding"][0]["code"]
        return found

    assert categories("caruso2022-11")["mswat"] == "exam"
    assert categories("caruso2022-11")["sezary_cells"] == "laboratory"
    six = categories("caruso2022-06")
    assert (six["bsa_percent"], six["pruritus_vas"], six["wbc"]) == ("exam", "survey", "laboratory")
    assert categories("caruso2022-07")["ejection_fraction"] == "imaging"


def test_every_measurement_kind_has_a_category_and_related_codes_are_never_sent() -> None:
    observations = terminology.table("observations")
    assert all(
        c.attributes.get("category")
        for k, c in observations.items()
        if k != "age" and c.attributes.get("record_kind") is not False
    )
    tseb = terminology.table("procedures")["tseb"]
    assert [c.code for c in tseb.emitted] == ["108290001"]  # 45643008 is the modality
    assert any(c.relationship == "related" for c in tseb.codings)


# -- the reason a treatment was given ------------------------------------------------------


def _resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_a_treatment_given_for_another_diagnosis_names_it_not_the_lymphoma(version: str) -> None:
    """caruso2022-03: dupilumab 'for atopic dermatitis ... not a line of lymphoma therapy'."""
    record = load_case("caruso2022-03")
    bundle = convert_record(record, ConversionOptions(fhir_version=version)).bundle
    conditions = {
        c["identifier"][0]["value"].rsplit("/", 1)[-1]: c for c in _resources(bundle, "Condition")
    }
    full_urls = {id(e["resource"]): e["fullUrl"] for e in bundle["entry"]}
    dermatitis = next(full_urls[id(c)] for k, c in conditions.items() if k.endswith("dx7"))
    lymphoma = next(full_urls[id(c)] for k, c in conditions.items() if k.endswith("dx1"))
    dupilumab = [
        r
        for kind in ("MedicationRequest", "MedicationAdministration")
        for r in _resources(bundle, kind)
        if "dupilumab" in json.dumps(r.get("medicationCodeableConcept") or r.get("medication"))
    ]
    assert dupilumab
    for resource in dupilumab:
        reasons = resource.get("reasonReference") or [r["reference"] for r in resource["reason"]]
        assert [r["reference"] for r in reasons] == [dermatitis]
        assert not any("mcode" in p for p in resource.get("meta", {}).get("profile", []))
    others = [r for r in _resources(bundle, "MedicationRequest") if r not in dupilumab]
    assert others and all(
        [
            r["reference"]
            for r in (o.get("reasonReference") or [x["reference"] for x in o["reason"]])
        ]
        == [lymphoma]
        for o in others
    )
    back = bundle_to_record(bundle, DEFAULT_NAMESPACE)
    assert {t["id"]: t.get("for_diagnosis") for t in back["treatments"]}["t1"] == "dx7"
    assert all("for_diagnosis" not in t for t in back["treatments"] if t["id"] != "t1")


def test_for_diagnosis_must_name_a_diagnosis_of_the_record() -> None:
    record = load_case("caruso2022-03")
    record["treatments"][0]["for_diagnosis"] = "dx99"
    errors = validate_record(record)
    assert [(e.path, e.rule) for e in errors] == [("$.treatments[0].for_diagnosis", "reference")]
