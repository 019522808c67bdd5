"""The allow-list of the profile test: exact messages, scoped, with reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conformance.findings import AllowedMessage, load_allow_list

MCODE_MA = (
    "http://hl7.org/fhir/us/mcode/StructureDefinition/"
    "mcode-cancer-related-medication-administration"
)
REF = "Unable to find a profile match for urn:uuid:{uuid} among choices: X"


def entry(message: str = REF, profile: str = MCODE_MA) -> AllowedMessage:
    return AllowedMessage(message, "MedicationAdministration", profile, "because")


def test_uuid_placeholder_matches_a_uuid_only() -> None:
    text = "Unable to find a profile match for urn:uuid:91d4690e-4886-578b-be5b-aa5124287a53 among"
    assert entry().applies(text + " choices: X", "MedicationAdministration", (MCODE_MA,))
    assert not entry().applies(
        "Unable to find a profile match for urn:uuid:anything among choices: X",
        "MedicationAdministration",
        (MCODE_MA,),
    )
    assert not entry().applies(text + " choices: Y", "MedicationAdministration", (MCODE_MA,))


def test_other_characters_are_literal() -> None:
    allowed = entry("Found Condition, but expected one of ([])")
    assert allowed.applies(
        "Found Condition, but expected one of ([])", "MedicationAdministration", (MCODE_MA,)
    )
    assert not allowed.applies(
        "Found Condition, but expected one of (x)", "MedicationAdministration", (MCODE_MA,)
    )


def test_scope_is_resource_type_and_profile() -> None:
    allowed = entry("m")
    assert not allowed.applies("m", "MedicationRequest", (MCODE_MA,))
    assert not allowed.applies("m", "MedicationAdministration", ())
    base = entry("m", "http://hl7.org/fhir/StructureDefinition/MedicationAdministration")
    assert base.applies("m", "MedicationAdministration", ())


def test_every_entry_of_the_real_list_has_a_reason() -> None:
    entries = load_allow_list()
    assert entries
    assert all(len(e.reason) > 40 for e in entries)


def test_an_entry_without_reason_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "allow-list.json"
    raw = {"message": "m", "resourceType": "Patient", "profile": "p", "reason": ""}
    path.write_text(json.dumps({"entries": [raw]}))
    with pytest.raises(ValueError, match="lacks reason"):
        load_allow_list(path)
