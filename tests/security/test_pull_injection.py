"""Row 4 (medium): search injection on pull.

``GET /patients/x,999-97-5872/case-record`` made the gateway search
``identifier=<system>|x,999-97-5872``; HAPI reads the comma as OR, so a Synthea patient's SSN
matched, and an existing versus a missing SSN answered 400 versus 404. Fixed: the identifier
must be a record_id (checked before anything goes upstream), every search value is escaped, and
the answer depends only on the caller's own namespace.
"""

from __future__ import annotations

import secrets
import uuid

import httpx
import pytest

from adapter.fhir.client import FhirClient
from adapter.reverse import pull_case_record
from tests.security.conftest import EHR_A, SERVER_URL, Gateway, create_on_hapi

SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"


@pytest.fixture(scope="module")
def ssn(hapi: httpx.Client) -> str:
    """A Synthea-style patient, created directly on HAPI, with an SSN identifier."""
    value = (
        f"999-{secrets.randbelow(90) + 10}-{secrets.randbelow(9000) + 1000}-{uuid.uuid4().hex[:6]}"
    )
    create_on_hapi(
        hapi,
        {
            "resourceType": "Patient",
            "identifier": [{"system": SSN_SYSTEM, "value": value}],
            "name": [{"family": "Synthea", "given": ["Sam"]}],
        },
    )
    return value


def test_the_injection_is_real_on_this_server(hapi: httpx.Client, ssn: str) -> None:
    """Precondition: unescaped, the comma ORs in the SSN match; escaped, it does not."""
    injected = hapi.get("Patient", params={"identifier": f"{EHR_A.patient_system}|x,{ssn}"})
    assert injected.json().get("total") == 1
    escaped = hapi.get("Patient", params={"identifier": f"{EHR_A.patient_system}|x\\,{ssn}"})
    assert escaped.json().get("total") == 0


def test_pull_cannot_match_another_system(gateway: Gateway, ssn: str) -> None:
    missing = f"999-00-0000-{uuid.uuid4().hex[:6]}"
    with gateway.client() as client:
        answers = [
            client.get(f"/patients/x,{value}/case-record", headers=EHR_A.headers(None))
            for value in (ssn, missing)
        ]
        encoded = client.get(f"/patients/x%2C{ssn}/case-record", headers=EHR_A.headers(None))
    (existing, absent) = answers
    assert existing.status_code == absent.status_code == encoded.status_code == 400
    assert existing.json() == absent.json() == encoded.json()  # no oracle
    assert existing.json()["issue"][0]["expression"] == ["identifier"]


def test_the_library_escapes_the_search_too(ssn: str) -> None:
    """``fhir-adapter pull`` and the gateway share pull_case_record."""
    assert SERVER_URL
    with FhirClient(SERVER_URL) as client, pytest.raises(LookupError):
        pull_case_record(client, f"x,{ssn}", EHR_A.namespace)
