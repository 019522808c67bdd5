"""Rows 2 (high), 3 and 7 (medium): what a credential may write, probe and read.

Reproduced as the issue did: a write client PUT a patient created directly on HAPI (name and
birthDate replaced), updated by search, overwrote the gateway's own Provenance, sent a batch
that got no gateway Provenance, used ``ifNoneExist`` as a patient-search oracle, and one key
read another's submissions and pulled any patient. Each test asserts the refusal *and* that
HAPI holds exactly what it held before.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from adapter.gateway.clients import Client, server_id
from tests.security.conftest import (
    EHR_A,
    EHR_B,
    OPS,
    READER,
    WRITER,
    Caller,
    Gateway,
    create_on_hapi,
    delivered,
    record,
)


def own_id(caller: Caller, resource_type: str, name: str) -> str:
    """An id in the caller's space (what the normalisation step assigns)."""
    return server_id(Client(caller.client, frozenset(), caller.namespace), resource_type, name)


def transaction(*entries: dict[str, Any], bundle_type: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": bundle_type, "entry": list(entries)}


def victim(hapi: httpx.Client) -> dict[str, Any]:
    """A patient another system created directly on the upstream."""
    return create_on_hapi(
        hapi,
        {
            "resourceType": "Patient",
            "name": [{"family": f"Victim{uuid.uuid4().hex[:10]}", "given": ["Vera"]}],
            "birthDate": "1950-01-01",
        },
    )


def unchanged(hapi: httpx.Client, before: dict[str, Any]) -> None:
    now = hapi.get(f"{before['resourceType']}/{before['id']}").json()
    assert now["meta"]["versionId"] == before["meta"]["versionId"]
    for element in ("name", "birthDate", "agent", "recorded", "target"):
        assert now.get(element) == before.get(element), element


def push(gateway: Gateway, caller: Caller, bundle: dict[str, Any]) -> httpx.Response:
    with gateway.client() as client:
        return client.post("/fhir", json=bundle, headers=caller.headers())


def refused_or_kept_apart(response: httpx.Response, foreign: str) -> None:
    """403 on this branch; after normalisation lands, a write into the caller's own space.
    Either way the foreign resource is never the one written."""
    if response.status_code == 403:
        assert response.json()["issue"][0]["code"] == "forbidden"
        return
    assert response.status_code in (201, 202), response.text
    references = {r.get("reference") for r in response.json().get("references", [])}
    assert foreign not in references


def test_put_by_a_server_id_the_gateway_did_not_assign(
    gateway: Gateway, hapi: httpx.Client
) -> None:
    target = victim(hapi)
    forged = {
        "resourceType": "Patient",
        "id": target["id"],
        "name": [{"family": "Attacker"}],
        "birthDate": "2000-01-01",
    }
    response = push(
        gateway,
        EHR_A,
        transaction(
            {"resource": forged, "request": {"method": "PUT", "url": f"Patient/{target['id']}"}}
        ),
    )
    refused_or_kept_apart(response, f"Patient/{target['id']}")
    unchanged(hapi, target)


def test_update_by_search_is_refused(gateway: Gateway, hapi: httpx.Client) -> None:
    target = victim(hapi)
    family = target["name"][0]["family"]
    forged = {"resourceType": "Patient", "name": [{"family": family}], "birthDate": "2000-01-01"}
    response = push(
        gateway,
        EHR_A,
        transaction(
            {"resource": forged, "request": {"method": "PUT", "url": f"Patient?family={family}"}}
        ),
    )
    assert response.status_code == 403, response.text
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[0].request.url"]
    unchanged(hapi, target)


def gateway_provenance(view: dict[str, Any]) -> str:
    """Id of the gateway's Provenance (``gw-`` + content digest) that a delivery wrote."""
    [found] = [
        r["reference"].split("/")[1]
        for r in view["references"]
        if r["reference"].startswith("Provenance/gw-")
    ]
    return str(found)


def _delivered_transaction(gateway: Gateway, caller: Caller) -> tuple[str, str]:
    """A legitimate push; returns (its gateway Provenance's id, the patient's server id)."""
    patient_id = own_id(caller, "Patient", f"p-{uuid.uuid4().hex[:8]}")
    bundle = transaction(
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": {"resourceType": "Patient", "id": patient_id, "gender": "female"},
            "request": {"method": "PUT", "url": f"Patient/{patient_id}"},
        }
    )
    with gateway.client() as client:
        view = delivered(
            client, caller, client.post("/fhir", json=bundle, headers=caller.headers())
        )
    return gateway_provenance(view), patient_id


def test_the_gateways_provenance_cannot_be_forged(gateway: Gateway, hapi: httpx.Client) -> None:
    provenance_id, _ = _delivered_transaction(gateway, EHR_A)
    provenance = hapi.get(f"Provenance/{provenance_id}").json()
    assert provenance["resourceType"] == "Provenance", provenance
    forged = {
        **provenance,
        "recorded": "2001-01-01T00:00:00Z",
        "agent": [{"who": {"display": "someone else"}}],
    }
    forged.pop("meta", None)
    for caller in (EHR_A, EHR_B):
        for bundle_type in ("transaction", "batch"):
            response = push(
                gateway,
                caller,
                transaction(
                    {
                        "resource": forged,
                        "request": {"method": "PUT", "url": f"Provenance/{provenance_id}"},
                    },
                    bundle_type=bundle_type,
                ),
            )
            assert response.status_code == 403, response.text
            expressions = {e for i in response.json()["issue"] for e in i.get("expression", [])}
            assert "Bundle.entry[0].resource.resourceType" in expressions
    unchanged(hapi, provenance)


def test_a_batch_gets_the_gateways_provenance(gateway: Gateway, hapi: httpx.Client) -> None:
    patient_id = own_id(EHR_A, "Patient", f"p-{uuid.uuid4().hex[:8]}")
    bundle = transaction(
        {
            "resource": {"resourceType": "Patient", "id": patient_id, "gender": "male"},
            "request": {"method": "PUT", "url": f"Patient/{patient_id}"},
        },
        bundle_type="batch",
    )
    with gateway.client() as client:
        view = delivered(client, EHR_A, client.post("/fhir", json=bundle, headers=EHR_A.headers()))
    provenance = hapi.get(f"Provenance/{gateway_provenance(view)}")
    assert provenance.status_code == 200
    targets = json.dumps(provenance.json().get("target"))
    assert patient_id in targets


def test_if_none_exist_is_not_a_patient_search_oracle(gateway: Gateway, hapi: httpx.Client) -> None:
    target = victim(hapi)
    family = target["name"][0]["family"]
    answers = []
    for probe in (family, f"Nobody{uuid.uuid4().hex[:10]}"):
        entry = {
            "resource": {"resourceType": "Patient", "name": [{"family": probe}]},
            "request": {
                "method": "POST",
                "url": "Patient",
                "ifNoneExist": f"family={probe}&birthdate=1950-01-01",
            },
        }
        response = push(gateway, EHR_A, transaction(entry))
        answers.append((response.status_code, response.json()))
    (existing_status, existing), (missing_status, missing) = answers
    assert existing_status == missing_status == 403
    assert existing == missing  # nothing in the answer depends on what the server holds
    found = hapi.get("Patient", params={"family": family, "_summary": "count"}).json()
    assert found["total"] == 1  # nothing was created either
    unchanged(hapi, target)


def test_no_borrowed_identifiers(gateway: Gateway) -> None:
    patient_id = own_id(EHR_B, "Patient", "borrower")
    borrowed = {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [{"system": EHR_A.patient_system, "value": "someone-of-a"}],
    }
    response = push(
        gateway,
        EHR_B,
        transaction(
            {"resource": borrowed, "request": {"method": "PUT", "url": f"Patient/{patient_id}"}}
        ),
    )
    assert response.status_code == 403
    [issue] = response.json()["issue"]
    assert issue["expression"] == ["Bundle.entry[0].resource.identifier[0].system"]
    assert "belongs to another client" in issue["diagnostics"]


def test_each_key_reaches_only_its_own_client(gateway: Gateway) -> None:
    data = record()
    body = json.dumps(data).encode()
    with gateway.client() as client:
        pushed = client.post("/case-records", content=body, headers=EHR_A.headers())
        delivered(client, EHR_A, pushed)
        location = pushed.headers["location"]
        pull = f"/patients/{data['record_id']}/case-record"
        # Submissions: the pushing client and admins only; others get 404, as for no such id.
        assert client.get(location, headers=EHR_A.headers(None)).status_code == 200
        assert client.get(location, headers=OPS.headers(None)).status_code == 200
        for other in (EHR_B, READER, WRITER):
            response = client.get(location, headers=other.headers(None))
            assert response.status_code == 404
            assert response.json()["issue"][0]["diagnostics"] == "no such submission"
        # Pulls: only the caller's namespace; B does not see A's patient.
        assert client.get(pull, headers=EHR_A.headers(None)).status_code == 200
        assert client.get(pull, headers=EHR_B.headers(None)).status_code == 404
        # Scopes: read-only cannot write, write-only cannot read or convert.
        assert (
            client.post("/case-records", content=body, headers=READER.headers()).status_code == 403
        )
        assert client.get(pull, headers=WRITER.headers(None)).status_code == 403
        convert = client.post("/case-records/$convert", content=body, headers=WRITER.headers())
        assert convert.status_code == 403
