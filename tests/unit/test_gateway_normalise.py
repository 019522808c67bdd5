"""Unit tests of the normalisation of client Bundles (authorization rules 1, 2, 4)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from adapter.gateway.bundles import provenance_id
from adapter.gateway.clients import Client, server_id
from adapter.gateway.normalise import (
    format_identifier_condition,
    normalise_bundle,
    parse_identifier_condition,
)
from adapter.gateway.resource_types import (
    ACCEPTED_RESOURCE_TYPES,
    REFUSED_RESOURCE_TYPES,
    accepted_types,
)

EHR = Client("ehr", frozenset({"write"}), "https://ehr.example", ("urn:mrn",))
OTHER = Client("other", frozenset({"write"}), "https://other.example")
PATIENT_URN = "urn:uuid:11111111-1111-4111-8111-111111111111"


def bundle(*entries: dict[str, Any], bundle_type: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": bundle_type, "entry": copy.deepcopy(list(entries))}


def post(resource: dict[str, Any], full_url: str | None = None, **request: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url is not None:
        entry["fullUrl"] = full_url
    return entry


def put(resource: dict[str, Any], url: str, full_url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "request": {"method": "PUT", "url": url}}
    if full_url is not None:
        entry["fullUrl"] = full_url
    return entry


PATIENT = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "42"}]}


def observation(subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": subject},
        "performer": [{"reference": "Practitioner/dr-1"}, {"reference": "#contained"}],
    }


def test_plain_post_becomes_put_to_a_derived_id() -> None:
    sent = bundle(post(PATIENT, PATIENT_URN))
    assert normalise_bundle(sent, EHR) == []
    [entry] = sent["entry"]
    expected = server_id(EHR, "Patient", PATIENT_URN)
    assert expected.startswith("ehr-")
    assert entry["request"] == {"method": "PUT", "url": f"Patient/{expected}"}
    assert entry["resource"]["id"] == expected
    assert entry["fullUrl"] == PATIENT_URN  # the transaction still resolves it


def test_same_names_of_two_clients_never_meet() -> None:
    ours, theirs = bundle(post(PATIENT, PATIENT_URN)), bundle(post(PATIENT, PATIENT_URN))
    normalise_bundle(ours, EHR)
    normalise_bundle(theirs, OTHER)
    assert ours["entry"][0]["request"]["url"] != theirs["entry"][0]["request"]["url"]


def test_put_local_id_is_translated_and_client_ids_kept() -> None:
    mine = server_id(EHR, "Patient", "123")
    sent = bundle(
        put({**PATIENT, "id": "123"}, "Patient/123"),
        put({"resourceType": "Patient"}, f"Patient/{mine}"),
    )
    # The second entry writes the same resource by its gateway id: a duplicate.
    issues = normalise_bundle(sent, EHR)
    assert [i.expression for i in issues] == [("Bundle.entry[1].request.url",)]
    assert "entries 0 and 1 both write" in issues[0].diagnostics
    single = bundle(put({"resourceType": "Patient", "id": mine}, f"Patient/{mine}"))
    assert normalise_bundle(single, EHR) == []
    assert single["entry"][0]["request"]["url"] == f"Patient/{mine}"


def test_put_body_id_contradicting_url_is_refused() -> None:
    sent = bundle(put({**PATIENT, "id": "other"}, "Patient/123"))
    [issue] = normalise_bundle(sent, EHR)
    assert issue.expression == ("Bundle.entry[0].resource.id",)


@pytest.mark.parametrize("url", ["Patient/", "Patient/a b", "Patient/1/_history/2", "Patient"])
def test_put_needs_an_id_or_an_identifier_condition(url: str) -> None:
    [issue] = normalise_bundle(bundle(put(dict(PATIENT), url)), EHR)
    assert issue.expression == ("Bundle.entry[0].request.url",)


def test_if_none_exist_becomes_conditional_update_without_body_id() -> None:
    sent = bundle(post({**PATIENT, "id": "x"}, PATIENT_URN, ifNoneExist="identifier=urn:mrn|42"))
    assert normalise_bundle(sent, EHR) == []
    [entry] = sent["entry"]
    assert entry["request"] == {"method": "PUT", "url": "Patient?identifier=urn:mrn|42"}
    assert "id" not in entry["resource"]


def test_post_without_full_url_or_condition_is_refused() -> None:
    [issue] = normalise_bundle(bundle(post(dict(PATIENT))), EHR)
    assert issue.expression == ("Bundle.entry[0]",)
    assert issue.code == "required" and "fullUrl or request.ifNoneExist" in issue.diagnostics


def test_conditions_outside_one_identifier_are_left_for_the_policy() -> None:
    sent = bundle(post(dict(PATIENT), ifNoneExist="family=Smith"))
    assert normalise_bundle(sent, EHR) == []
    assert sent["entry"][0]["request"] == {
        "method": "POST",
        "url": "Patient",
        "ifNoneExist": "family=Smith",
    }


def test_references_in_a_transaction() -> None:
    sent = bundle(post(PATIENT, PATIENT_URN), post(observation(PATIENT_URN), "urn:uuid:o-1"))
    assert normalise_bundle(sent, EHR) == []
    resource = sent["entry"][1]["resource"]
    assert resource["subject"] == {"reference": PATIENT_URN}
    practitioner = server_id(EHR, "Practitioner", "dr-1")
    assert resource["performer"] == [
        {"reference": f"Practitioner/{practitioner}"},
        {"reference": "#contained"},
    ]


def test_references_in_a_batch_are_final() -> None:
    sent = bundle(
        post(PATIENT, PATIENT_URN),
        post(observation(PATIENT_URN), "urn:uuid:o-1"),
        post(
            {"resourceType": "Organization", "identifier": [{"system": "urn:org", "value": "1"}]},
            "urn:uuid:org-1",
            ifNoneExist="identifier=urn:org|1",
        ),
        post(
            {
                "resourceType": "Location",
                "managingOrganization": {"reference": "urn:uuid:org-1"},
            },
            "urn:uuid:loc-1",
        ),
        bundle_type="batch",
    )
    assert normalise_bundle(sent, EHR) == []
    patient_id = server_id(EHR, "Patient", PATIENT_URN)
    assert sent["entry"][1]["resource"]["subject"] == {"reference": f"Patient/{patient_id}"}
    # A conditional update's id is not known before: a conditional reference instead.
    assert sent["entry"][3]["resource"]["managingOrganization"] == {
        "reference": "Organization?identifier=urn:org|1"
    }


def test_reference_across_bundles_finds_the_put_resource() -> None:
    first = bundle(put({"resourceType": "Patient", "id": "p7"}, "Patient/p7"))
    later = bundle(post(observation("Patient/p7"), "urn:uuid:o-2"))
    normalise_bundle(first, EHR)
    normalise_bundle(later, EHR)
    assert (
        later["entry"][0]["resource"]["subject"]["reference"] == first["entry"][0]["request"]["url"]
    )


def test_conditional_and_absolute_references_are_left_alone() -> None:
    conditional = "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999"
    absolute = "https://elsewhere.example/fhir/Patient/1"
    resource = observation(conditional)
    resource["performer"] = [{"reference": absolute}]
    sent = bundle(post(resource, "urn:uuid:o-3"))
    assert normalise_bundle(sent, EHR) == []
    assert sent["entry"][0]["resource"]["subject"]["reference"] == conditional
    assert sent["entry"][0]["resource"]["performer"][0]["reference"] == absolute


def test_dangling_urn_reference_is_located() -> None:
    resource = observation(PATIENT_URN)
    resource["extension"] = [
        {"url": "https://x.example", "valueReference": {"reference": "urn:uuid:nowhere"}}
    ]
    sent = bundle(post(resource, "urn:uuid:o-4"))
    issues = normalise_bundle(sent, EHR)
    assert [i.expression for i in issues] == [
        ("Bundle.entry[0].resource.subject.reference",),
        ("Bundle.entry[0].resource.extension[0].valueReference.reference",),
    ]


def test_absolute_full_urls_resolve_and_become_urns() -> None:
    base = "https://ehr.example/fhir"
    sent = bundle(
        post(PATIENT, f"{base}/Patient/123"),
        post(observation("Patient/123"), f"{base}/Observation/9"),
        post(observation(f"{base}/Patient/123"), f"{base}/Observation/10"),
    )
    assert normalise_bundle(sent, EHR) == []
    patient_full_url = sent["entry"][0]["fullUrl"]
    assert patient_full_url.startswith("urn:uuid:")
    # Both the relative form (resolved against the entry's base) and the absolute one.
    assert sent["entry"][1]["resource"]["subject"]["reference"] == patient_full_url
    assert sent["entry"][2]["resource"]["subject"]["reference"] == patient_full_url


def test_duplicate_full_urls_are_refused() -> None:
    sent = bundle(post(PATIENT, PATIENT_URN), post(observation(PATIENT_URN), PATIENT_URN))
    issues = normalise_bundle(sent, EHR)
    assert ("Bundle.entry[1].fullUrl",) in [i.expression for i in issues]


def test_normalisation_is_deterministic_and_provenance_follows_content() -> None:
    original = bundle(post(PATIENT, PATIENT_URN), post(observation(PATIENT_URN), "urn:uuid:o"))
    again = copy.deepcopy(original)
    normalise_bundle(original, EHR)
    normalise_bundle(again, EHR)
    assert original == again
    assert provenance_id("ehr", original) == provenance_id("ehr", again)
    assert provenance_id("ehr", original) != provenance_id("other", original)
    changed = copy.deepcopy(again)
    changed["entry"][1]["resource"]["status"] = "amended"
    assert provenance_id("ehr", changed) != provenance_id("ehr", original)
    identifier = provenance_id("ehr", original)
    assert not EHR.owns_server_id(identifier) and not Client(
        "gw", frozenset(), "https://gw.example"
    ).owns_server_id(identifier)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("identifier=urn:mrn|42", ("urn:mrn", "42")),
        ("?identifier=https%3A%2F%2Fx.example%2Fid%7Ca%20b", ("https://x.example/id", "a b")),
        ("identifier=urn:x|a\\|b", ("urn:x", "a|b")),
        ("identifier=urn:x|a\\,b", ("urn:x", "a,b")),
        ("identifier=urn:x|a,b", None),
        ("identifier=|42", None),
        ("identifier=42", None),
        ("identifier=urn:x|1&family=Smith", None),
        ("family=Smith", None),
        ("_id=1", None),
        ("", None),
    ],
)
def test_parse_identifier_condition(query: str, expected: tuple[str, str] | None) -> None:
    assert parse_identifier_condition(query) == expected


@pytest.mark.parametrize(
    ("system", "value"),
    [("urn:mrn", "42"), ("https://x.example/id", "a|b,c$d\\e"), ("urn:x", "a&family=b#c")],
)
def test_identifier_condition_round_trips(system: str, value: str) -> None:
    formatted = format_identifier_condition(system, value)
    assert "&" not in formatted and "#" not in formatted
    assert parse_identifier_condition(formatted) == (system, value)


def test_resource_type_lists() -> None:
    assert not ACCEPTED_RESOURCE_TYPES & REFUSED_RESOURCE_TYPES.keys()
    assert {"Provenance", "AuditEvent", "CodeSystem", "ValueSet", "StructureDefinition"} <= (
        REFUSED_RESOURCE_TYPES.keys()
    )
    assert accepted_types() == ACCEPTED_RESOURCE_TYPES
    assert accepted_types(["Patient"]) == {"Patient"}
    with pytest.raises(ValueError, match="AuditEvent cannot be accepted: the audit trail"):
        accepted_types(["Patient", "AuditEvent"])
