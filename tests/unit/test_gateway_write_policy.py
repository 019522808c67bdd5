"""The write policy on normalised Bundles (docs/authorization.md, rules 3, 5, 6, 7), directly."""

from __future__ import annotations

from typing import Any

import pytest

from adapter.fhir.search import escape_search_value, identifier_token
from adapter.gateway.client_registry import ClientRegistry
from adapter.gateway.clients import Client, server_id
from adapter.gateway.write_policy import (
    ConditionError,
    check_write_policy,
    identifier_condition,
)

A = Client("ehra", frozenset({"write"}), "https://ehr-a.example/", ("urn:oid:1.2.3",))
B = Client("ehrb", frozenset({"write"}), "https://ehr-b.example/")
REGISTRY = ClientRegistry(
    clients=(A, B),
    reserved_prefixes=("https://gw.example/fhir/identifier/gateway-",),
)
UPSTREAM = "http://hapi.internal:8080/fhir"
A_SYSTEM = "https://ehr-a.example/fhir/identifier/mrn"
B_SYSTEM = "https://ehr-b.example/fhir/identifier/mrn"
A_PATIENT = server_id(A, "Patient", "p1")
B_PATIENT = server_id(B, "Patient", "p1")


def bundle(*entries: dict[str, Any], bundle_type: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": bundle_type, "entry": list(entries)}


def put(resource: dict[str, Any], url: str | None = None) -> dict[str, Any]:
    url = url or f"{resource['resourceType']}/{resource.get('id', A_PATIENT)}"
    return {
        "fullUrl": "urn:uuid:0d7c7d8e-1111-4111-8111-111111111111",
        "resource": resource,
        "request": {"method": "PUT", "url": url},
    }


def patient(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": A_PATIENT, **fields}


def refusal(data: dict[str, Any]) -> tuple[int, dict[str, str]] | None:
    """(status, {expression: diagnostics}) of the refusal, or None."""
    found = check_write_policy(data, client=A, registry=REGISTRY, upstream_base=UPSTREAM)
    if found is None:
        return None
    return found.status, {i.expression[0]: i.diagnostics for i in found.issues}


def test_a_bundle_in_the_clients_own_space_passes() -> None:
    data = bundle(
        put(
            patient(
                identifier=[
                    {"system": A_SYSTEM, "value": "1"},
                    {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999"},
                ]
            )
        ),
        put(
            {
                "resourceType": "Observation",
                "subject": {"reference": f"Patient/{A_PATIENT}"},
                "performer": [{"reference": f"Practitioner?identifier={A_SYSTEM}|dr-1"}],
                "hasMember": [{"reference": "urn:uuid:0d7c7d8e-1111-4111-8111-111111111111"}],
                "derivedFrom": [{"reference": "#contained-1"}],
                "focus": [{"reference": "https://terminology.example/Thing/1"}],
            },
            "Observation?identifier=urn:oid:1.2.3|obs-1",
        ),
    )
    assert refusal(data) is None


@pytest.mark.parametrize(
    ("url", "diagnostic"),
    [
        ("Patient/123", "was not assigned by the gateway to this client"),  # a HAPI-made id
        (f"Patient/{B_PATIENT}", "was not assigned by the gateway to this client"),
        ("Patient?family=Victim", "only identifier=system|value"),  # update by search
        (f"Patient?identifier={B_SYSTEM}|1", "not one this client owns"),
        (f"Patient?identifier={A_SYSTEM}|1&family=X", "single identifier"),
        (f"Patient?identifier={A_SYSTEM}|1,{B_SYSTEM}|1", "unescaped ','"),
        (f"Patient?identifier={A_SYSTEM}%7C1%2C{B_SYSTEM}%7C1", "unescaped ','"),
        ("Patient?identifier=1", "system|value"),  # any system
        (f"Patient?identifier={A_SYSTEM}|", "both a system and a value"),
        (f"Patient?identifier:not={A_SYSTEM}|1", "only identifier=system|value"),
        ("Patient?_id=123", "only identifier=system|value"),
        ("Patient?identifier=https://gw.example/fhir/identifier/gateway-x|1", "not one"),
    ],
)
def test_put_outside_the_clients_space_is_403(url: str, diagnostic: str) -> None:
    found = refusal(bundle(put(patient(), url)))
    assert found is not None
    status, issues = found
    assert status == 403
    assert diagnostic in issues["Bundle.entry[0].request.url"]


@pytest.mark.parametrize(
    "condition",
    [
        "family=Victim&birthdate=1950-01-01",  # the patient-search oracle
        f"identifier={B_SYSTEM}|42",
        "identifier=http://hl7.org/fhir/sid/us-ssn|999-97-5872",  # no client owns it
        "name=x",
    ],
)
def test_if_none_exist_accepts_only_the_clients_identifiers(condition: str) -> None:
    entry = {
        "resource": patient(),
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": condition},
    }
    found = refusal(bundle(entry))
    assert found is not None and found[0] == 403
    assert "Bundle.entry[0].request.ifNoneExist" in found[1]
    own = {**entry, "request": {**entry["request"], "ifNoneExist": f"identifier={A_SYSTEM}|1"}}
    assert refusal(bundle(own)) is None


@pytest.mark.parametrize(
    ("reference", "status", "diagnostic"),
    [
        ("Patient/123", 403, "not assigned by the gateway"),
        (f"Patient/{B_PATIENT}/_history/2", 403, "not assigned by the gateway"),
        (f"{UPSTREAM}/Patient/{A_PATIENT}", 403, "absolute references to the upstream"),
        ("HTTP://HAPI.INTERNAL:8080/fhir/Patient/1", 403, "absolute references to the upstream"),
        (f"Patient?identifier={B_SYSTEM}|1", 403, "not one this client owns"),
        ("Patient?name=Victim", 403, "only identifier"),
        ("javascript:alert(1)", 422, "not a reference accepted here"),
        ("Patient", 422, "not a reference accepted here"),
    ],
)
def test_references_stay_in_the_clients_space(reference: str, status: int, diagnostic: str) -> None:
    observation = {
        "resourceType": "Observation",
        "id": server_id(A, "Observation", "o1"),
        "extension": [{"url": "https://x.example/e", "valueReference": {"reference": reference}}],
    }
    found = refusal(bundle(put(observation)))
    assert found is not None and found[0] == status
    where = "Bundle.entry[0].resource.extension[0].valueReference.reference"
    assert diagnostic in found[1][where]


def test_borrowed_and_reserved_identifiers_are_403() -> None:
    found = refusal(
        bundle(
            put(
                patient(
                    identifier=[
                        {"system": A_SYSTEM, "value": "1"},
                        {"system": B_SYSTEM, "value": "1"},
                        {
                            "system": "https://gw.example/fhir/identifier/gateway-submission",
                            "value": "x",
                        },
                    ],
                    contained=[
                        {
                            "resourceType": "Practitioner",
                            "identifier": [{"system": B_SYSTEM, "value": "d"}],
                        }
                    ],
                )
            )
        )
    )
    assert found is not None
    status, issues = found
    assert status == 403
    assert set(issues) == {
        "Bundle.entry[0].resource.identifier[1].system",
        "Bundle.entry[0].resource.identifier[2].system",
        "Bundle.entry[0].resource.contained[0].identifier[0].system",
    }
    assert "belongs to another client" in issues["Bundle.entry[0].resource.identifier[1].system"]


@pytest.mark.parametrize(
    "resource_type",
    [
        "Provenance",
        "AuditEvent",
        "StructureDefinition",
        "SearchParameter",
        "Subscription",
        "CodeSystem",
    ],
)
def test_audit_and_infrastructure_types_are_403(resource_type: str) -> None:
    resource = {"resourceType": resource_type, "id": server_id(A, resource_type, "x")}
    found = refusal(bundle(put(resource)))
    assert found is not None and found[0] == 403
    assert "may not be written by a client" in found[1]["Bundle.entry[0].resource.resourceType"]


def test_provenance_cannot_hide_in_a_batch_or_a_contained_resource() -> None:
    forged = {"resourceType": "Provenance", "id": "gw-1234"}
    found = refusal(bundle(put(forged, "Provenance/gw-1234"), bundle_type="batch"))
    assert found is not None and found[0] == 403
    assert set(found[1]) == {"Bundle.entry[0].request.url", "Bundle.entry[0].resource.resourceType"}
    found = refusal(bundle(put(patient(contained=[forged]))))
    assert found is not None
    assert "Bundle.entry[0].resource.contained[0].resourceType" in found[1]


@pytest.mark.parametrize("method", ["DELETE", "PATCH", "GET", "HEAD"])
def test_only_post_and_put(method: str) -> None:
    entry = {"resource": patient(), "request": {"method": method, "url": f"Patient/{A_PATIENT}"}}
    found = refusal(bundle(entry))
    assert found is not None and found[0] == 403
    assert "Bundle.entry[0].request.method" in found[1]


def test_content_problems_alone_are_422_and_mixed_are_403() -> None:
    malformed = put(patient(), "Patient/a/b/c")
    found = refusal(bundle(malformed))
    assert found is not None and found[0] == 422
    found = refusal(bundle(malformed, put(patient(), "Patient/123")))
    assert found is not None and found[0] == 403
    assert set(found[1]) == {"Bundle.entry[0].request.url", "Bundle.entry[1].request.url"}


def test_full_url_on_the_upstream_is_403() -> None:
    entry = {**put(patient()), "fullUrl": f"{UPSTREAM}/Patient/42"}
    found = refusal(bundle(entry))
    assert found is not None and "Bundle.entry[0].fullUrl" in found[1]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("identifier=https://a.example/x|1", ("https://a.example/x", "1")),
        ("identifier=https%3A%2F%2Fa.example%2Fx%7C1", ("https://a.example/x", "1")),
        ("identifier=urn:oid:1.2|a\\,b", ("urn:oid:1.2", "a,b")),  # an escaped comma is data
        ("identifier=urn:oid:1.2|a\\|b", ("urn:oid:1.2", "a|b")),
    ],
)
def test_identifier_condition_parses_exactly_one_identifier(
    query: str, expected: tuple[str, str]
) -> None:
    assert identifier_condition(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        "identifier=a|b+c",
        "identifier=a|b%2",
        "identifier=a|b#x",
        "identifier=a|b$c",
        "identifier=a|b;x=1",
        "identifier",
        "",
    ],
)
def test_identifier_condition_is_strict(query: str) -> None:
    with pytest.raises(ConditionError):
        identifier_condition(query)


def test_search_escaping() -> None:
    assert escape_search_value("x,999-97-5872") == "x\\,999-97-5872"
    assert escape_search_value("a\\b|c$d") == "a\\\\b\\|c\\$d"
    assert identifier_token("https://a.example/s", "x,1") == "https://a.example/s|x\\,1"
    # Escaping round-trips through the condition parser.
    value = "we|ird,va$lue\\"
    assert identifier_condition(f"identifier={identifier_token('urn:x', value)}") == (
        "urn:x",
        value,
    )
