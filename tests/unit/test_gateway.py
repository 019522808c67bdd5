"""Unit tests of the gateway's endpoints, against a respx-mocked upstream FHIR server.

Covers every endpoint and every error status, the 201 path (delivered at once), the 202 path
(upstream down, then delivered by the worker), the failed state with the upstream's
OperationOutcome, restarts on the same outbox file, and the audit log's lack of patient data.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from adapter.fhir import FhirTransportError, OperationOutcomeError
from adapter.fhir_validation import validate_bundle_resources, validate_resource
from adapter.gateway.bundles import provenance_id
from adapter.gateway.clients import Client, server_id
from adapter.gateway.config import Settings
from adapter.gateway.outbox import Lease, NewSubmission, SqliteOutbox, State
from adapter.gateway.worker import Breaker, DeliveryResult, backoff
from adapter.mapping.context import DEFAULT_NAMESPACE
from tests.conftest import INVALID, load_case
from tests.unit.test_gateway_helpers import (
    ADMIN_AUTH,
    API_KEY,
    AUTH,
    HEADERS,
    OWN_SYSTEM,
    UPSTREAM,
    FakeUpstream,
    admin_clients,
    fake_upstream,
    make_settings,
    outcome,
    own_id,
    record_bytes,
    running,
    wait_for_status,
)

P1 = own_id("Patient", "p1")  # the normalised form of the client's PUT Patient/p1
PATIENT_PUT = {
    "fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
    "resource": {"resourceType": "Patient", "id": P1, "gender": "female"},
    "request": {"method": "PUT", "url": f"Patient/{P1}"},
}
CONDITION_POST = {
    "resource": {
        "resourceType": "Condition",
        "identifier": [{"system": OWN_SYSTEM, "value": "c1"}],
        "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"},
    },
    "request": {
        "method": "POST",
        "url": "Condition",
        "ifNoneExist": f"identifier={OWN_SYSTEM}|c1",
    },
}


def ehr_bundle(*entries: dict[str, Any], bundle_type: str = "transaction") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": bundle_type,
        "entry": [json.loads(json.dumps(e)) for e in entries or (PATIENT_PUT, CONDITION_POST)],
    }


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as fake:
        yield fake


@pytest.fixture
def client(settings: Settings, upstream: FakeUpstream) -> Iterator[TestClient]:
    with running(settings) as test_client:
        yield test_client


def issues(response: httpx.Response) -> list[dict[str, Any]]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert response.headers["content-type"].startswith("application/fhir+json")
    for issue in body["issue"]:
        assert issue["severity"] in ("fatal", "error", "warning", "information")
        assert issue["code"] and issue["diagnostics"]
    return list(body["issue"])


def expressions(response: httpx.Response) -> set[str]:
    return {e for issue in issues(response) for e in issue.get("expression", [])}


# -- health and metadata -------------------------------------------------------------------


def test_healthz_needs_no_token(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.fixture
def ops_client(tmp_path: Path, upstream: FakeUpstream) -> Iterator[TestClient]:
    """A gateway with an operator client (ADMIN_AUTH) besides the default key; no cache."""
    settings = make_settings(
        tmp_path, clients_file=admin_clients(tmp_path), ready_cache_seconds=0.0
    )
    with running(settings) as test_client:
        yield test_client


def test_readyz_reports_queue_and_upstream_to_admins(ops_client: TestClient) -> None:
    response = ops_client.get("/readyz", headers=ADMIN_AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["upstream"] == "reachable"
    assert body["checks"]["queue"]["queued"] == 0
    # Anyone else (no token, or a non-admin key) learns "ready" and nothing more.
    for headers in ({}, AUTH):
        assert ops_client.get("/readyz", headers=headers).json() == {"status": "ready"}


def test_readyz_503_when_upstream_unreachable(
    ops_client: TestClient, upstream: FakeUpstream
) -> None:
    upstream.mode = "down"
    response = ops_client.get("/readyz", headers=ADMIN_AUTH)
    assert response.status_code == 503
    assert "upstream /metadata unreachable" in issues(response)[0]["diagnostics"]
    anonymous = ops_client.get("/readyz")
    assert anonymous.status_code == 503
    assert [i["diagnostics"] for i in issues(anonymous)] == ["not ready"]


def test_readyz_503_when_queue_unreachable(ops_client: TestClient) -> None:
    gateway = ops_client.app.state.gateway  # type: ignore[attr-defined]

    def broken() -> dict[str, int]:
        raise OSError("disk gone")

    gateway.outbox.counts = broken
    response = ops_client.get("/readyz", headers=ADMIN_AUTH)
    assert response.status_code == 503
    assert "queue database unreachable" in issues(response)[0]["diagnostics"]


def test_metadata_is_a_valid_capability_statement(client: TestClient) -> None:
    response = client.get("/metadata", headers=AUTH)
    assert response.status_code == 200
    statement = response.json()
    assert validate_resource(statement, "R4") == []
    types_ = {r["type"] for r in statement["rest"][0]["resource"]}
    assert {"Patient", "Condition", "AdverseEvent", "Encounter", "Claim"} <= types_
    assert not {"Provenance", "StructureDefinition", "Subscription"} & types_
    assert statement["fhirVersion"] == "4.0.1"


def test_metadata_needs_a_token(client: TestClient) -> None:
    assert client.get("/metadata").status_code == 401


def test_openapi_documents_every_endpoint(tmp_path: Path, upstream: FakeUpstream) -> None:
    with running(make_settings(tmp_path, docs=True)) as client:
        document = client.get("/openapi.json").json()
        docs = client.get("/docs")
    assert set(document["paths"]) == {
        "/case-records",
        "/case-records/$convert",
        "/fhir",
        "/submissions/{submission_id}",
        "/patients/{identifier}/case-record",
        "/healthz",
        "/readyz",
        "/metadata",
    }
    schemas = document["components"]["schemas"]
    assert "CaseRecord" in schemas and "OperationOutcome" in schemas and "Bundle" in schemas
    body = document["paths"]["/case-records"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/fhir+json", "application/json"}
    assert docs.status_code == 200
    # The docs page loads nothing: no script, no third-party host.
    assert "<script" not in docs.text and "cdn" not in docs.text.lower()
    assert docs.headers["content-security-policy"].startswith("default-src 'none'")


def test_docs_are_off_by_default(tmp_path: Path, upstream: FakeUpstream) -> None:
    with running(make_settings(tmp_path)) as client:
        assert client.get("/openapi.json").status_code == 404
        assert client.get("/docs").status_code == 404


# -- POST /case-records: 201 -----------------------------------------------------------------


def test_push_case_record_delivered_201(client: TestClient, upstream: FakeUpstream) -> None:
    response = client.post("/case-records", content=record_bytes(), headers=HEADERS)
    assert response.status_code == 201, response.text
    view = response.json()
    assert response.headers["location"] == f"/submissions/{view['id']}"
    assert view["status"] == "delivered" and view["attempts"] == 1
    assert view["references"][0] == {
        "status": "201 Created",
        "location": "Patient/1/_history/1",
        "reference": "Patient/1",
    }
    # The stored upstream answer keeps statuses and locations, not the echoed resources.
    assert all("resource" not in e for e in view["upstream"]["response"]["entry"])
    assert client.get(response.headers["location"], headers=AUTH).json() == view

    [sent] = upstream.bundles
    assert sent["type"] == "transaction"
    provenance_entry = sent["entry"][-1]
    assert provenance_entry["request"]["method"] == "PUT"
    assert provenance_entry["request"]["url"].startswith("Provenance/gw-")
    provenance = provenance_entry["resource"]
    assert provenance["agent"][0]["who"]["identifier"]["value"] == "default"
    assert "api-key:" in provenance["agent"][0]["who"]["display"]
    assert provenance["entity"][0]["what"]["identifier"]["value"] == view["id"]
    assert "test-gateway" in provenance["agent"][1]["who"]["display"]
    # It points at the record's own Provenance, which names every resource: pointing at the
    # resources would block a later correction from deleting one (referential integrity).
    [record_provenance] = [
        e for e in sent["entry"][:-1] if e["resource"]["resourceType"] == "Provenance"
    ]
    assert provenance["target"] == [{"reference": record_provenance["fullUrl"]}]
    # Everything else is a conditional update or a PUT by id: re-delivery duplicates nothing.
    for entry in sent["entry"][:-1]:
        request = entry["request"]
        assert request["method"] == "PUT"
        resource = entry["resource"]
        assert request["url"].startswith(f"{resource['resourceType']}?identifier=") or (
            request["url"] == f"{resource['resourceType']}/{resource['id']}"
        )
    # The delivery read the record's state first: nothing there, so nothing to delete.
    assert upstream.state_route.call_count == 1
    assert "ifMatch" not in record_provenance["request"]
    assert all(e["request"]["method"] != "DELETE" for e in sent["entry"])


def test_case_record_resend_finds_its_provenance_in_the_state_read(
    client: TestClient, upstream: FakeUpstream
) -> None:
    """An unchanged resend adds no gateway Provenance, and learns so at no extra round trip.

    The record's state search asks for the gateway's content-derived Provenance too
    (``_id=record,gateway``); the fake server answers with what it holds, as HAPI does.
    """
    first = client.post("/case-records", content=record_bytes(), headers=HEADERS)
    second = client.post("/case-records", content=record_bytes(), headers=HEADERS)
    assert (first.status_code, second.status_code) == (201, 201)
    sent_first, sent_second = upstream.bundles
    gateway_entry = sent_first["entry"][-1]
    assert gateway_entry["request"]["url"].startswith("Provenance/gw-")
    # Its id, computed in the worker process that converted the record, is the digest of
    # exactly the content that was sent (before the Provenance itself was added).
    content = dict(sent_first, entry=sent_first["entry"][:-1])
    assert gateway_entry["resource"]["id"] == provenance_id(DEFAULT_CLIENT.id, content)
    # The second transaction is the first without the gateway's Provenance (the record's
    # own Provenance now carries ifMatch: the fake server holds it, without a version).
    assert [e["fullUrl"] for e in sent_second["entry"]] == [
        e["fullUrl"] for e in sent_first["entry"][:-1]
    ]
    assert len([p for p in upstream.provenances if p.startswith("gw-")]) == 1
    assert upstream.provenance_read_route.call_count == 0
    assert upstream.state_route.call_count == 2
    [search] = json.loads(upstream.state_route.calls[-1].request.content)["entry"]
    assert f",{gateway_entry['resource']['id']}&" in search["request"]["url"]


def test_changed_case_record_gets_its_own_gateway_provenance(
    client: TestClient, upstream: FakeUpstream
) -> None:
    changed = json.loads(record_bytes())
    changed["patient"]["sex"] = "female" if changed["patient"].get("sex") == "male" else "male"
    assert client.post("/case-records", content=record_bytes(), headers=HEADERS).status_code == 201
    assert (
        client.post("/case-records", content=json.dumps(changed), headers=HEADERS).status_code
        == 201
    )
    first, second = (bundle["entry"][-1]["resource"] for bundle in upstream.bundles)
    assert first["resourceType"] == second["resourceType"] == "Provenance"
    assert first["id"].startswith("gw-") and second["id"].startswith("gw-")
    assert first["id"] != second["id"]


def test_every_example_pushes_a_valid_bundle(case_name: str, tmp_path: Path) -> None:
    """The converted bundle plus the gateway Provenance validates with fhir.resources (R4B)."""
    with fake_upstream() as upstream, running(make_settings(tmp_path)) as client:
        response = client.post("/case-records", content=record_bytes(case_name), headers=HEADERS)
        assert response.status_code == 201, response.text
        [sent] = upstream.bundles
    assert validate_bundle_resources(sent, "R4") == []


def test_push_accepts_application_json_with_charset(client: TestClient) -> None:
    headers = {**AUTH, "Content-Type": "application/json; charset=UTF-8"}
    assert client.post("/case-records", content=record_bytes(), headers=headers).status_code == 201


def test_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "ehr-42"})
    assert response.headers["x-request-id"] == "ehr-42"
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id\twith\ttabs"})
    assert generated.headers["x-request-id"] != "bad id\twith\ttabs"


# -- 202 and the worker ------------------------------------------------------------------------


def test_upstream_down_gives_202_then_worker_delivers(
    client: TestClient, upstream: FakeUpstream
) -> None:
    upstream.mode = "down"
    response = client.post("/case-records", content=record_bytes(), headers=HEADERS)
    assert response.status_code == 202, response.text
    assert response.headers["retry-after"]
    location = response.headers["location"]
    queued = response.json()
    assert queued["status"] == "queued"
    assert queued["error"] == "upstream unreachable: ConnectError"
    assert client.get(location, headers=AUTH).json()["status"] == "queued"

    upstream.mode = "ok"
    delivered = wait_for_status(client, location, "delivered")
    assert delivered["attempts"] >= 2
    assert delivered["references"]
    assert "error" not in delivered
    assert len(upstream.bundles) == 1


def test_respond_async_answers_202_once_stored_and_the_outbox_delivers(
    client: TestClient, upstream: FakeUpstream
) -> None:
    # Down: a synchronous push would have tried once (attempts 1, "upstream unreachable").
    upstream.mode = "down"
    headers = {**HEADERS, "Prefer": "handling=lenient, Respond-Async; wait=5"}
    response = client.post("/case-records", content=record_bytes(), headers=headers)
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["status"] == "queued"
    assert queued["attempts"] == 0 and "error" not in queued
    location = response.headers["location"]
    assert response.headers["content-location"] == location == f"/submissions/{queued['id']}"
    assert response.headers["preference-applied"] == "respond-async"
    assert response.headers["retry-after"]

    upstream.mode = "ok"
    delivered = wait_for_status(client, location, "delivered")
    assert delivered["references"]
    assert len(upstream.bundles) == 1


def test_other_preferences_keep_the_synchronous_answer(
    client: TestClient, upstream: FakeUpstream
) -> None:
    headers = {**HEADERS, "Prefer": "return=minimal, respond-asynchronously"}
    response = client.post("/case-records", content=record_bytes(), headers=headers)
    assert response.status_code == 201, response.text
    assert "preference-applied" not in response.headers
    assert "content-location" not in response.headers
    assert len(upstream.bundles) == 1


def test_fhir_bundle_respond_async(client: TestClient, upstream: FakeUpstream) -> None:
    headers = {**HEADERS, "Prefer": "respond-async"}
    response = client.post("/fhir", json=ehr_bundle(), headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["attempts"] == 0
    assert response.headers["preference-applied"] == "respond-async"
    wait_for_status(client, response.headers["content-location"], "delivered")
    assert len(upstream.bundles) == 1


def test_upstream_503_is_retried_until_delivered(
    client: TestClient, upstream: FakeUpstream
) -> None:
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] <= 3:
            return outcome(503, "transient", "warming up")
        upstream.mode = "ok"
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": []}
        )

    upstream.mode = flaky
    response = client.post("/case-records", content=record_bytes(), headers=HEADERS)
    assert response.status_code == 202
    view = wait_for_status(client, response.headers["location"], "delivered")
    assert view["attempts"] == 4


def test_redelivery_sends_identical_bundle(client: TestClient, upstream: FakeUpstream) -> None:
    """A retry re-sends the stored bytes: same conditional creates, same Provenance id."""
    seen: list[bytes] = []

    def first_lost(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        if len(seen) == 1:
            raise httpx.ReadTimeout("answer lost", request=request)
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": []}
        )

    upstream.mode = first_lost
    response = client.post("/case-records", content=record_bytes(), headers=HEADERS)
    assert response.status_code == 202
    wait_for_status(client, response.headers["location"], "delivered")
    assert len(seen) == 2 and json.loads(seen[0]) == json.loads(seen[1])


def test_breaker_queues_without_waiting_on_a_dead_upstream(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = make_settings(tmp_path, breaker_seconds=60.0, retry_base_seconds=30.0)
    upstream.mode = "down"
    with running(settings) as client:
        first = client.post("/case-records", content=record_bytes(), headers=HEADERS)
        assert first.status_code == 202
        # (a case record's delivery starts by reading its state: that is the first call)
        assert upstream.state_route.call_count + upstream.transaction_route.call_count >= 1
        # A different record, so that the worker's own (jittered, possibly immediate) retry of
        # the first push cannot be mistaken for the second push reaching the upstream.
        second_body = record_bytes(record_id="breaker-second")
        second = client.post("/case-records", content=second_body, headers=HEADERS)
        assert second.status_code == 202
        assert second.json()["attempts"] == 0
        calls = [*upstream.state_route.calls, *upstream.transaction_route.calls]
        assert not any(b"breaker-second" in call.request.content for call in calls)


def test_max_attempts_gives_up(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.mode = "unavailable"
    with running(make_settings(tmp_path, max_attempts=3)) as client:
        response = client.post("/case-records", content=record_bytes(), headers=HEADERS)
        assert response.status_code == 202
        view = wait_for_status(client, response.headers["location"], "failed")
    assert view["attempts"] == 3
    assert "gave up after 3 attempts" in view["error"]
    assert view["upstream"]["status"] == 503


# -- failed state ------------------------------------------------------------------------------


def test_upstream_rejection_is_passed_on_and_submission_failed(
    client: TestClient, upstream: FakeUpstream
) -> None:
    upstream.mode = lambda request: outcome(
        422, "processing", "Condition.code: unknown code", "Bundle.entry[1].resource.code"
    )
    response = client.post("/case-records", content=record_bytes(), headers=HEADERS)
    assert response.status_code == 422
    found = issues(response)
    assert found[0]["diagnostics"] == "Condition.code: unknown code"
    assert found[0]["expression"] == ["Bundle.entry[1].resource.code"]
    assert "failed" in found[-1]["diagnostics"]
    view = client.get(response.headers["location"], headers=AUTH).json()
    assert view["status"] == "failed"
    assert view["upstream"]["status"] == 422
    assert view["upstream"]["outcome"]["issue"][0]["diagnostics"] == "Condition.code: unknown code"


def test_upstream_auth_failure_is_a_502(client: TestClient, upstream: FakeUpstream) -> None:
    upstream.mode = lambda request: outcome(401, "login", "bad upstream token")
    response = client.post("/case-records", content=record_bytes(), headers=HEADERS)
    assert response.status_code == 502
    assert issues(response)[0]["diagnostics"] == "bad upstream token"


def test_worker_marks_rejected_submission_failed(
    client: TestClient, upstream: FakeUpstream
) -> None:
    upstream.mode = "down"
    response = client.post("/case-records", content=record_bytes(), headers=HEADERS)
    assert response.status_code == 202
    upstream.mode = lambda request: outcome(400, "invalid", "Bundle rejected", "Bundle.entry[0]")
    view = wait_for_status(client, response.headers["location"], "failed")
    assert view["upstream"] == {
        "status": 400,
        "outcome": {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "invalid",
                    "diagnostics": "Bundle rejected",
                    "expression": ["Bundle.entry[0]"],
                }
            ],
        },
    }


# -- restarts ----------------------------------------------------------------------------------


def test_outbox_survives_recreating_the_app(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = make_settings(tmp_path, retry_base_seconds=60.0, retry_max_seconds=60.0)
    upstream.mode = "down"
    with running(settings) as client:
        # Three different records: versions of one record would supersede each other.
        locations = [
            client.post(
                "/case-records", content=record_bytes(record_id=f"survivor-{n}"), headers=HEADERS
            ).headers["location"]
            for n in range(3)
        ]
    upstream.mode = "ok"
    # A new app on the same file; fast retries so the due rows go out at once.
    with running(make_settings(tmp_path)) as client:
        for location in locations:
            view = client.get(location, headers=AUTH).json()
            assert view["status"] in ("queued", "delivered")
        # Rows are due in up to a minute (backoff from the first app); make them due now.
        gateway = client.app.state.gateway  # type: ignore[attr-defined]
        gateway.outbox._run("UPDATE gateway_submissions SET next_attempt_at = 0")
        gateway.worker.notify()
        for location in locations:
            wait_for_status(client, location, "delivered")
    assert len(upstream.bundles) == 3


def test_startup_requeues_expired_leases(tmp_path: Path, upstream: FakeUpstream) -> None:
    """A row left 'delivering' by a crashed gateway is delivered once its lease expired."""
    settings = make_settings(tmp_path)
    outbox = SqliteOutbox(settings.db)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [PATIENT_PUT]}
    now = time.time()
    outbox.add(
        NewSubmission(
            "crashed-1",
            "bundle",
            "transaction",
            "api-key:x",
            json.dumps(bundle).encode(),
            True,
            client="default",
        ),
        now=now - 600,
        lease=Lease("dead-token", "dead-gateway", now - 480),
    )
    outbox.close()
    with running(settings) as client:
        view = wait_for_status(client, "/submissions/crashed-1", "delivered")
    assert view["attempts"] == 2
    assert len(upstream.bundles) == 1


# -- error statuses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("15-malformed", 400),
        ("16-empty", 400),
        ("17-not-utf8", 400),
        ("18-too-deep", 400),
        ("19-duplicate-key", 400),
        ("20-not-an-object", 422),
    ],
)
def test_unparseable_bodies(client: TestClient, name: str, status: int) -> None:
    body = (INVALID / f"{name}.json").read_bytes()
    response = client.post("/case-records", content=body, headers=HEADERS)
    assert response.status_code == status
    assert expressions(response) == {"$"}


INVALID_RECORDS = sorted(
    p.stem for p in INVALID.glob("*.json") if int(p.stem.split("-", 1)[0]) < 15
)


@pytest.mark.parametrize("name", INVALID_RECORDS)
def test_invalid_records_are_422_with_every_path(client: TestClient, name: str) -> None:
    body = (INVALID / f"{name}.json").read_bytes()
    response = client.post("/case-records", content=body, headers=HEADERS)
    assert response.status_code == 422
    expected_paths = {
        line.split(": ", 2)[1]
        for line in (INVALID / f"{name}.expected").read_text().splitlines()
        if line
    }
    assert expressions(response) == expected_paths
    for issue in issues(response):
        assert issue["details"]["coding"][0]["code"]


def test_integral_float_age_is_not_a_server_error(client: TestClient) -> None:
    """JSON Schema counts 70.0 as an integer, so the record is valid and must convert."""
    record = load_case("caruso2022-01")
    record["patient"]["ages"][0]["years"] = 70.0
    response = client.post("/case-records", content=json.dumps(record), headers=HEADERS)
    assert response.status_code < 500, response.text


def test_invalid_record_never_reaches_upstream(client: TestClient, upstream: FakeUpstream) -> None:
    body = (INVALID / "05-enum-violation.json").read_bytes()
    assert client.post("/case-records", content=body, headers=HEADERS).status_code == 422
    assert upstream.transaction_route.call_count == 0


def test_401_without_token(client: TestClient) -> None:
    response = client.post(
        "/case-records", content=record_bytes(), headers={"Content-Type": "application/fhir+json"}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="fhir-oncology-adapter"'
    assert issues(response)[0]["code"] == "login"


@pytest.mark.parametrize(
    "authorization", ["Bearer wrong-key", "Basic dXNlcjpwYXNz", "Bearer", "Bearer a.b.c"]
)
def test_401_with_bad_credentials(client: TestClient, authorization: str) -> None:
    headers = {"Authorization": authorization, "Content-Type": "application/fhir+json"}
    response = client.post("/case-records", content=record_bytes(), headers=headers)
    assert response.status_code == 401
    assert 'error="invalid_' in response.headers["www-authenticate"]


def test_401_before_anything_else(client: TestClient) -> None:
    """An unauthenticated caller learns nothing about its body (not 415, not 413)."""
    response = client.post("/case-records", content=b"x" * 10, headers={"Content-Type": "text/x"})
    assert response.status_code == 401


def test_404_unknown_route_and_submission(client: TestClient) -> None:
    response = client.get("/nowhere", headers=AUTH)
    assert response.status_code == 404
    assert issues(response)[0]["code"] == "not-found"
    response = client.get("/submissions/does-not-exist", headers=AUTH)
    assert response.status_code == 404
    assert issues(response)[0]["code"] == "not-found"


def test_405_wrong_method(client: TestClient) -> None:
    response = client.delete("/case-records", headers=AUTH)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert issues(response)[0]["code"] == "not-supported"


def test_413_by_content_length(tmp_path: Path, upstream: FakeUpstream) -> None:
    with running(make_settings(tmp_path, max_body_bytes=1000)) as client:
        response = client.post("/case-records", content=record_bytes(), headers=HEADERS)
    assert response.status_code == 413
    assert issues(response)[0]["code"] == "too-long"


def test_413_by_streamed_size(tmp_path: Path, upstream: FakeUpstream) -> None:
    """A chunked body has no Content-Length; the bytes received are counted instead."""

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 100

    with running(make_settings(tmp_path, max_body_bytes=1000)) as client:
        response = client.post("/case-records", content=chunks(), headers=HEADERS)
    assert response.status_code == 413


def test_413_too_many_bundle_entries(tmp_path: Path, upstream: FakeUpstream) -> None:
    with running(make_settings(tmp_path, max_bundle_entries=1)) as client:
        response = client.post("/fhir", json=ehr_bundle(), headers=HEADERS)
    assert response.status_code == 413
    assert expressions(response) == {"Bundle.entry"}


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/xml", "application/fhir+json; charset=latin-1"],
)
def test_415_wrong_media_type(client: TestClient, content_type: str | None) -> None:
    headers = dict(AUTH)
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post("/case-records", content=record_bytes(), headers=headers)
    assert response.status_code == 415
    assert issues(response)[0]["code"] == "not-supported"


def test_400_bad_query_parameter(client: TestClient) -> None:
    response = client.post(
        "/case-records/$convert?fhir_version=R6", content=record_bytes(), headers=HEADERS
    )
    assert response.status_code == 400
    assert expressions(response) == {"query.fhir_version"}


def test_400_bad_content_length(client: TestClient) -> None:
    response = client.post(
        "/case-records", content=record_bytes(), headers={**HEADERS, "Content-Length": "abc"}
    )
    assert response.status_code == 400


def test_unexpected_error_is_a_500_outcome(
    tmp_path: Path,
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    # Threads, so that the patched function is the one that runs.
    monkeypatch.setattr("adapter.gateway.routers.case_records.convert_bytes", explode)
    settings = make_settings(tmp_path, cpu_pool="thread")
    with running(settings) as client, caplog.at_level(logging.ERROR):
        response = client.post("/case-records", content=record_bytes(), headers=HEADERS)
    assert response.status_code == 500
    [issue] = issues(response)
    assert issue["code"] == "exception" and "incident" in issue["diagnostics"]
    assert "Traceback" not in response.text and "bug" not in response.text
    assert "RuntimeError: bug" in caplog.text


def test_no_upstream_configured(tmp_path: Path) -> None:
    with running(make_settings(tmp_path, upstream_url=None)) as client:
        response = client.post("/case-records", content=record_bytes(), headers=HEADERS)
        assert response.status_code == 503
        assert "FHIR_ADAPTER_UPSTREAM_URL" in issues(response)[0]["diagnostics"]
        assert client.get("/readyz").status_code == 503
        converted = client.post("/case-records/$convert", content=record_bytes(), headers=HEADERS)
        assert converted.status_code == 200


# -- $convert ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_convert_returns_bundle_and_pushes_nothing(
    client: TestClient, upstream: FakeUpstream, version: str
) -> None:
    response = client.post(
        f"/case-records/$convert?fhir_version={version}", content=record_bytes(), headers=HEADERS
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json"
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    assert not any(e["request"]["url"].startswith("Provenance/gw-") for e in bundle["entry"])
    assert upstream.transaction_route.call_count == 0
    assert validate_bundle_resources(bundle, version) == []


def test_convert_rejects_invalid_record(client: TestClient) -> None:
    body = (INVALID / "02-missing-required.json").read_bytes()
    response = client.post("/case-records/$convert", content=body, headers=HEADERS)
    assert response.status_code == 422
    assert expressions(response) == {"$.patient.sex"}


# -- POST /fhir --------------------------------------------------------------------------------

DEFAULT_CLIENT = Client("default", frozenset({"read", "write", "convert"}), DEFAULT_NAMESPACE)


def test_fhir_transaction_normalised_and_forwarded_with_provenance(
    client: TestClient, upstream: FakeUpstream
) -> None:
    response = client.post("/fhir", json=ehr_bundle(), headers=HEADERS)
    assert response.status_code == 201, response.text
    view = response.json()
    assert view["kind"] == "bundle" and view["status"] == "delivered"
    [sent] = upstream.bundles
    assert len(sent["entry"]) == 3
    patient, condition, provenance_entry = sent["entry"]
    patient_id = server_id(DEFAULT_CLIENT, "Patient", "p1")
    assert patient["request"] == {"method": "PUT", "url": f"Patient/{patient_id}"}
    assert patient["resource"]["id"] == patient_id
    # The conditional create became a conditional update on the same identifier, without id.
    assert condition["request"] == {"method": "PUT", "url": f"Condition?identifier={OWN_SYSTEM}|c1"}
    assert "id" not in condition["resource"]
    # In a transaction the server resolves urn:uuid references itself.
    assert condition["resource"]["subject"]["reference"] == PATIENT_PUT["fullUrl"]
    assert condition["fullUrl"].startswith("urn:uuid:")  # assigned, so Provenance can target it
    provenance = provenance_entry["resource"]
    assert provenance_entry["request"] == {"method": "PUT", "url": f"Provenance/{provenance['id']}"}
    assert {t["reference"] for t in provenance["target"]} == {
        patient["fullUrl"],
        condition["fullUrl"],
    }
    assert validate_bundle_resources(sent, "R4") == []


def test_fhir_unchanged_resend_adds_no_provenance(
    client: TestClient, upstream: FakeUpstream
) -> None:
    """The same content again: same writes, and the upstream's Provenance is left as it is."""
    first = client.post("/fhir", json=ehr_bundle(), headers=HEADERS)
    second = client.post("/fhir", json=ehr_bundle(), headers=HEADERS)
    assert (first.status_code, second.status_code) == (201, 201)
    sent_first, sent_second = upstream.bundles
    assert sent_second["entry"] == sent_first["entry"][:-1]
    assert upstream.provenance_read_route.call_count == 2
    assert len(upstream.provenances) == 1


def test_fhir_changed_content_gets_its_own_provenance(
    client: TestClient, upstream: FakeUpstream
) -> None:
    corrected = ehr_bundle()
    corrected["entry"][0]["resource"]["gender"] = "other"
    assert client.post("/fhir", json=ehr_bundle(), headers=HEADERS).status_code == 201
    assert client.post("/fhir", json=corrected, headers=HEADERS).status_code == 201
    first, second = (bundle["entry"][-1]["resource"] for bundle in upstream.bundles)
    assert first["resourceType"] == second["resourceType"] == "Provenance"
    assert first["id"] != second["id"]


def test_fhir_provenance_lookup_failure_still_sends_provenance(
    client: TestClient, upstream: FakeUpstream
) -> None:
    upstream.provenance_read_route.side_effect = httpx.ReadTimeout("slow")
    assert client.post("/fhir", json=ehr_bundle(), headers=HEADERS).status_code == 201
    [sent] = upstream.bundles
    assert sent["entry"][-1]["resource"]["resourceType"] == "Provenance"


def test_fhir_batch_gets_provenance_with_final_references(
    client: TestClient, upstream: FakeUpstream
) -> None:
    response = client.post("/fhir", json=ehr_bundle(bundle_type="batch"), headers=HEADERS)
    assert response.status_code == 201
    [sent] = upstream.bundles
    assert sent["type"] == "batch" and len(sent["entry"]) == 3
    patient_ref = f"Patient/{server_id(DEFAULT_CLIENT, 'Patient', 'p1')}"
    # A batch resolves no urn:uuid: the gateway puts the final reference in.
    assert sent["entry"][1]["resource"]["subject"] == {"reference": patient_ref}
    provenance = sent["entry"][2]["resource"]
    assert provenance["target"] == [
        {"reference": patient_ref},
        {"type": "Condition", "identifier": {"system": OWN_SYSTEM, "value": "c1"}},
    ]
    assert validate_bundle_resources(sent, "R4") == []


def test_fhir_plain_posts_become_puts_and_are_retried(
    client: TestClient, upstream: FakeUpstream
) -> None:
    """A POST with a fullUrl is idempotent once rewritten, so a lost answer is simply retried."""
    plain = {
        "fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222",
        "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
        "request": {"method": "POST", "url": "Observation"},
    }
    seen: list[bytes] = []

    def first_lost(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        if len(seen) == 1:
            raise httpx.ReadTimeout("answer lost", request=request)
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": []}
        )

    upstream.mode = first_lost
    response = client.post("/fhir", json=ehr_bundle(plain), headers=HEADERS)
    assert response.status_code == 202
    wait_for_status(client, response.headers["location"], "delivered")
    assert len(seen) == 2 and json.loads(seen[0]) == json.loads(seen[1])
    observation = json.loads(seen[0])["entry"][0]
    expected_id = server_id(DEFAULT_CLIENT, "Observation", plain["fullUrl"])
    assert observation["request"] == {"method": "PUT", "url": f"Observation/{expected_id}"}


def test_fhir_upstream_down_202(client: TestClient, upstream: FakeUpstream) -> None:
    upstream.mode = "down"
    response = client.post("/fhir", json=ehr_bundle(), headers=HEADERS)
    assert response.status_code == 202
    upstream.mode = "ok"
    wait_for_status(client, response.headers["location"], "delivered")


def test_fhir_malformed_json_400(client: TestClient) -> None:
    response = client.post("/fhir", content=b'{"resourceType": "Bundle",', headers=HEADERS)
    assert response.status_code == 400
    assert expressions(response) == {"$"}


@pytest.mark.parametrize(
    ("bundle", "expression"),
    [
        ({"resourceType": "Patient"}, "Bundle.resourceType"),
        ({"resourceType": "Bundle", "type": "collection", "entry": [PATIENT_PUT]}, "Bundle.type"),
        ({"resourceType": "Bundle", "type": "transaction", "entry": []}, "Bundle.entry"),
        ({"resourceType": "Bundle", "type": "transaction", "entry": [1]}, "Bundle.entry[0]"),
        (
            ehr_bundle(
                {
                    "resource": {"resourceType": "Patient"},
                    "request": {"method": "POST", "url": "Patient"},
                }
            ),
            "Bundle.entry[0]",
        ),
        (
            ehr_bundle(
                {
                    "resource": {"resourceType": "Patient"},
                    "request": {"method": "GET", "url": "Patient"},
                }
            ),
            "Bundle.entry[0].request.method",
        ),
        (
            ehr_bundle(
                {
                    "resource": {"resourceType": "Patient"},
                    "request": {"method": "PUT", "url": "Condition/1"},
                }
            ),
            "Bundle.entry[0].request.url",
        ),
        (ehr_bundle({"resource": {"resourceType": "Patient"}}), "Bundle.entry[0].request"),
        (
            ehr_bundle(
                {
                    "resource": {"resourceType": "Patient", "birthDate": "19x"},
                    "request": {"method": "PUT", "url": f"Patient/{own_id('Patient', '1')}"},
                }
            ),
            "Bundle.entry[0].resource.birthDate",
        ),
        (
            ehr_bundle(
                PATIENT_PUT,
                {
                    "resource": {"resourceType": "Patient", "shoeSize": 44},
                    "request": {"method": "PUT", "url": "Patient/1"},
                },
            ),
            "Bundle.entry[1].resource.shoeSize",
        ),
        (
            ehr_bundle(
                {
                    "fullUrl": "urn:uuid:33333333-3333-4333-8333-333333333333",
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"text": "x"},
                        "subject": {"reference": "urn:uuid:44444444-4444-4444-8444-444444444444"},
                    },
                    "request": {"method": "POST", "url": "Observation"},
                }
            ),
            "Bundle.entry[0].resource.subject.reference",
        ),
    ],
)
def test_fhir_invalid_bundles_are_422(
    client: TestClient, upstream: FakeUpstream, bundle: dict[str, Any], expression: str
) -> None:
    response = client.post("/fhir", json=bundle, headers=HEADERS)
    assert response.status_code == 422, response.text
    assert expression in expressions(response)
    assert upstream.transaction_route.call_count == 0


@pytest.mark.parametrize(
    ("bundle", "expression"),
    [
        (
            ehr_bundle(
                PATIENT_PUT,
                {
                    "resource": {"resourceType": "StructureDefinition"},
                    "request": {"method": "PUT", "url": "StructureDefinition/1"},
                },
            ),
            "Bundle.entry[1].resource.resourceType",
        ),
        (
            ehr_bundle(
                {
                    "resource": {"resourceType": "Provenance"},
                    "request": {"method": "PUT", "url": "Provenance/1"},
                }
            ),
            "Bundle.entry[0].resource.resourceType",
        ),
    ],
)
def test_fhir_types_no_client_may_write_are_403(
    client: TestClient, upstream: FakeUpstream, bundle: dict[str, Any], expression: str
) -> None:
    """Authorization rule 7: refused as a matter of rights, before any other check."""
    response = client.post("/fhir", json=bundle, headers=HEADERS)
    assert response.status_code == 403, response.text
    assert expressions(response) == {expression}
    assert upstream.transaction_route.call_count == 0


def test_fhir_refused_type_says_why(client: TestClient) -> None:
    bundle = ehr_bundle(
        {
            "resource": {"resourceType": "Subscription"},
            "request": {"method": "PUT", "url": "Subscription/1"},
        }
    )
    response = client.post("/fhir", json=bundle, headers=HEADERS)
    assert response.status_code == 403
    [issue] = issues(response)
    assert "send data to an address of the sender's choosing" in issue["diagnostics"]


def test_fhir_ehr_types_accepted_by_default(client: TestClient, upstream: FakeUpstream) -> None:
    entries = [
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": {"resourceType": resource_type, **body},
            "request": {"method": "POST", "url": resource_type},
        }
        for resource_type, body in [
            ("Encounter", {"status": "finished", "class": {"code": "AMB"}}),
            ("Organization", {"name": "General Hospital"}),
            ("Practitioner", {"name": [{"family": "Doe"}]}),
            (
                "Immunization",
                {
                    "status": "completed",
                    "vaccineCode": {"text": "flu"},
                    "patient": {"reference": "Patient/p1"},
                    "occurrenceDateTime": "2020-01-01",
                },
            ),
        ]
    ]
    response = client.post("/fhir", json=ehr_bundle(PATIENT_PUT, *entries), headers=HEADERS)
    assert response.status_code == 201, response.text
    [sent] = upstream.bundles
    immunization = sent["entry"][4]["resource"]
    patient_id = server_id(DEFAULT_CLIENT, "Patient", "p1")
    assert immunization["patient"] == {"reference": f"Patient/{patient_id}"}


def test_fhir_allowed_types_are_configurable(tmp_path: Path, upstream: FakeUpstream) -> None:
    with running(make_settings(tmp_path, allowed_resource_types=("Condition",))) as client:
        response = client.post("/fhir", json=ehr_bundle(), headers=HEADERS)
    assert response.status_code == 422
    assert expressions(response) == {"Bundle.entry[0].resource.resourceType"}
    assert "FHIR_ADAPTER_ALLOWED_RESOURCE_TYPES" in issues(response)[0]["diagnostics"]


def test_fhir_413_says_what_to_do(tmp_path: Path, upstream: FakeUpstream) -> None:
    with running(make_settings(tmp_path, max_bundle_entries=1)) as client:
        response = client.post("/fhir", json=ehr_bundle(), headers=HEADERS)
    assert response.status_code == 413
    [issue] = issues(response)
    assert "several Bundles of at most 1 entries" in issue["diagnostics"]
    assert upstream.transaction_route.call_count == 0


# -- GET /patients/{identifier}/case-record ----------------------------------------------------


def fake_reverse(monkeypatch: pytest.MonkeyPatch, behaviour: Any) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    def pull_case_record(client: Any, identifier: str, namespace: str) -> Any:
        calls.append((client, identifier, namespace))
        if isinstance(behaviour, BaseException):
            raise behaviour
        return behaviour

    module = types.ModuleType("adapter.reverse")
    module.pull_case_record = pull_case_record  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "adapter.reverse", module)
    return calls


def test_pull_case_record(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    record = load_case("caruso2022-01")
    calls = fake_reverse(monkeypatch, record)
    response = client.get("/patients/caruso2022-01/case-record", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == record
    [(fhir_client, identifier, _namespace)] = calls
    assert identifier == "caruso2022-01"
    assert str(fhir_client.base_url) == UPSTREAM


def test_pull_501_when_reverse_mapping_missing(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "adapter.reverse", None)  # makes the import fail
    response = client.get("/patients/x/case-record", headers=AUTH)
    assert response.status_code == 501
    assert issues(response)[0]["code"] == "not-supported"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (LookupError("no such patient"), 404),
        (OperationOutcomeError(404, {"resourceType": "OperationOutcome", "issue": []}), 404),
        (
            OperationOutcomeError(
                500,
                {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "exception", "diagnostics": "boom"}],
                },
            ),
            502,
        ),
        (
            FhirTransportError(
                method="GET", url=UPSTREAM, attempts=1, cause=httpx.ConnectError("refused")
            ),
            503,
        ),
        # The identifier is checked before the lookup; a ValueError after it is the
        # upstream's data failing to map back, not the caller's request.
        (ValueError("invalid FHIR id"), 502),
    ],
)
def test_pull_errors(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, error: Exception, status: int
) -> None:
    fake_reverse(monkeypatch, error)
    response = client.get("/patients/x/case-record", headers=AUTH)
    assert response.status_code == status
    issues(response)


def test_pull_needs_read_scope(client: TestClient) -> None:
    assert client.get("/patients/x/case-record").status_code == 401


# -- audit log ---------------------------------------------------------------------------------


def test_audit_log_one_line_per_request_without_patient_data(
    client: TestClient,
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = load_case("caruso2022-01")
    record["record_id"] = "zz-secret-record-id-77"
    note = record["patient"]["ages"][0]["note"]
    citation = record["source"]["citation"]
    invalid = json.loads(json.dumps(record))
    invalid["patient"]["sex"] = "zz-secret-sex-value"
    fake_reverse(monkeypatch, record)
    with caplog.at_level(logging.DEBUG):
        ok = client.post("/case-records", content=json.dumps(record), headers=HEADERS)
        rejected = client.post("/case-records", content=json.dumps(invalid), headers=HEADERS)
        upstream.mode = "down"
        queued = client.post("/case-records", content=json.dumps(record), headers=HEADERS)
        upstream.mode = "ok"
        wait_for_status(client, queued.headers["location"], "delivered")
        pulled = client.get("/patients/zz-secret-record-id-77/case-record", headers=AUTH)
    assert (ok.status_code, rejected.status_code, queued.status_code) == (201, 422, 202)
    assert pulled.status_code == 200

    # Everything the gateway logged; the test's own HTTP client (which logs the URLs it
    # calls, as any client of the gateway might) is not part of the gateway.
    logged = "\n".join(
        caplog.handler.format(r)
        for r in caplog.records
        if not (r.name == "httpx" and "http://testserver/" in r.getMessage())
    )
    for secret in ("zz-secret-record-id-77", "zz-secret-sex-value", note, citation, "female"):
        assert secret not in logged, secret
    lines = [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "adapter.gateway.audit"
    ]
    by_path = [(line["method"], line["path"], line["status"]) for line in lines]
    assert by_path[:3] == [
        ("POST", "/case-records", 201),
        ("POST", "/case-records", 422),
        ("POST", "/case-records", 202),
    ]
    assert ("GET", "/patients/{identifier}/case-record", 200) in by_path
    first = lines[0]
    assert first["principal"].startswith("api-key:") and API_KEY not in json.dumps(lines)
    assert first["submission"] == ok.json()["id"]
    assert first["duration_ms"] >= 0 and first["request_id"]
    assert lines[1]["submission"] is None


def test_audit_line_for_unmatched_route(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="adapter.gateway.audit"):
        client.get("/patients-typo/secret-mrn-123", headers=AUTH)
    [line] = [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "adapter.gateway.audit"
    ]
    assert line["status"] == 404 and line["path"] == "(no route)"
    assert "secret-mrn-123" not in json.dumps(line)


# -- worker pieces -----------------------------------------------------------------------------


def test_backoff_is_bounded_full_jitter() -> None:
    for attempts in range(1, 40):
        delay = backoff(attempts, 1.0, 300.0)
        assert 0.0 <= delay <= min(300.0, 2.0 ** (attempts - 1))
    assert len({round(backoff(8, 1.0, 300.0), 6) for _ in range(20)}) > 1


def test_breaker_opens_on_transient_and_closes_on_success() -> None:
    breaker = Breaker(5.0)
    assert not breaker.is_open(100.0)
    breaker.record(DeliveryResult("retry", None, None), 100.0)
    assert breaker.is_open(104.0) and not breaker.is_open(106.0)
    breaker.record(DeliveryResult("delivered", 200, {}), 101.0)
    assert not breaker.is_open(102.0)
    breaker.record(DeliveryResult("rejected", 400, {}), 101.0)
    assert not breaker.is_open(102.0)


def test_delivered_rows_drop_their_payload(client: TestClient) -> None:
    response = client.post("/case-records", content=record_bytes(), headers=HEADERS)
    gateway = client.app.state.gateway  # type: ignore[attr-defined]
    row = gateway.outbox.get(response.json()["id"])
    assert row.state is State.DELIVERED and row.payload is None


def test_unreadable_stored_bundle_fails_instead_of_looping(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = make_settings(tmp_path)
    outbox = SqliteOutbox(settings.db)
    outbox.add(
        NewSubmission(
            "corrupt-1", "bundle", "transaction", "api-key:x", b"{not json", True, client="default"
        ),
        now=time.time(),
        lease=None,
    )
    outbox.close()
    with running(settings) as client:
        view = wait_for_status(client, "/submissions/corrupt-1", "failed")
    assert view["error"] == "stored bundle is unreadable"
    assert upstream.transaction_route.call_count == 0


def test_shutdown_hands_in_flight_deliveries_back(tmp_path: Path, upstream: FakeUpstream) -> None:
    """Stopping the app mid-delivery re-queues the row at once (no wait for the lease)."""
    started = threading.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.sleep(30)
        raise AssertionError("never answered")

    settings = make_settings(tmp_path)
    upstream.mode = "down"
    with running(settings) as client:
        response = client.post("/case-records", content=record_bytes(), headers=HEADERS)
        assert response.status_code == 202
        upstream.transaction_route.mock(side_effect=slow)
        upstream.mode = "ok"  # the state read before the transaction goes through
        assert started.wait(10)
    outbox = SqliteOutbox(settings.db)
    row = outbox.get(response.json()["id"])
    outbox.close()
    assert row is not None
    assert row.state is State.QUEUED and row.error == "gateway stopped"
