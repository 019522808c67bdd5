"""The gateway's delivery of corrected case records, against a respx-mocked upstream.

What to delete is decided from the upstream's state when the record is delivered (not when it
was accepted), and the versions of one record are delivered in order, an older one never
after a newer one. The same against a real HAPI: tests/integration/test_corrections.py.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from adapter.mapping import ConversionOptions, convert_record
from adapter.mapping.context import DEFAULT_NAMESPACE
from adapter.reconcile import record_key
from tests.conftest import load_case
from tests.unit.test_gateway_helpers import (
    AUTH,
    HEADERS,
    FakeUpstream,
    fake_upstream,
    make_settings,
    running,
    wait_for_status,
)

CASE = "caruso2022-05"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as fake:
        yield fake


@pytest.fixture
def client(tmp_path: Path, upstream: FakeUpstream) -> Iterator[TestClient]:
    with running(make_settings(tmp_path)) as test_client:
        yield test_client


def body(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


def state_with_extra_event(record: dict[str, Any]) -> httpx.Response:
    """An upstream that holds the record's manifest (version 4) naming one more
    AdverseEvent than ``record`` produces, as after an earlier version with six events."""
    bundle = convert_record(record, ConversionOptions(namespace=DEFAULT_NAMESPACE)).bundle
    key = record_key(bundle)
    assert key is not None
    extra = {
        "resourceType": "AdverseEvent",
        "id": "ae-dropped",
        "meta": {"versionId": "1"},
        "identifier": {
            "system": key.identifier_system,
            "value": f"{key.record_id}/AdverseEvent/ae6",
        },
    }
    manifest = {
        "resourceType": "Provenance",
        "id": key.provenance_id,
        "meta": {"versionId": "4"},
        "target": [{"reference": "AdverseEvent/ae-dropped"}],
        "recorded": "2024-01-01T00:00:00Z",
        "agent": [{"who": {"display": "x"}}],
    }
    searchset = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": manifest, "search": {"mode": "match"}},
            {"resource": extra, "search": {"mode": "include"}},
        ],
    }
    return httpx.Response(
        200,
        json={
            "resourceType": "Bundle",
            "type": "batch-response",
            "entry": [{"resource": searchset, "response": {"status": "200 OK"}}],
        },
        headers={"Content-Type": "application/fhir+json"},
    )


def test_what_to_delete_is_decided_at_delivery_time(
    client: TestClient, upstream: FakeUpstream
) -> None:
    record = load_case(CASE)
    upstream.mode = "down"
    response = client.post("/case-records", content=body(record), headers=HEADERS)
    assert response.status_code == 202
    assert upstream.bundles == []
    # Meanwhile the upstream came to hold a resource this version no longer has.
    upstream.state_route.mock(return_value=state_with_extra_event(record))
    upstream.mode = "ok"
    view = wait_for_status(client, response.headers["location"], "delivered")
    [sent] = upstream.bundles
    deletes = [e["request"] for e in sent["entry"] if e["request"]["method"] == "DELETE"]
    assert deletes == [{"method": "DELETE", "url": "AdverseEvent/ae-dropped"}]
    [manifest] = [
        e
        for e in sent["entry"]
        if e["request"]["method"] == "PUT"
        and e["request"]["url"].startswith("Provenance/")
        and not e["request"]["url"].startswith("Provenance/gw-")
    ]
    assert manifest["request"]["ifMatch"] == 'W/"4"'
    assert view["status"] == "delivered"


def test_only_the_newest_of_queued_versions_is_sent(
    client: TestClient, upstream: FakeUpstream
) -> None:
    first = load_case(CASE)
    second = copy.deepcopy(first)
    second["patient"]["sex"] = "female"
    other = copy.deepcopy(first)
    other["record_id"] = "another-record"
    upstream.mode = "down"
    older = client.post("/case-records", content=body(first), headers=HEADERS)
    unrelated = client.post("/case-records", content=body(other), headers=HEADERS)
    newer = client.post("/case-records", content=body(second), headers=HEADERS)
    assert [r.status_code for r in (older, unrelated, newer)] == [202, 202, 202]
    # The older version may have been in a (failing) delivery attempt when the newer arrived;
    # it is superseded when that attempt ends, and never sent after that.
    view = wait_for_status(client, older.headers["location"], "superseded")
    assert f"superseded by submission {newer.json()['id']}" in view["error"]
    upstream.mode = "ok"
    wait_for_status(client, newer.headers["location"], "delivered")
    wait_for_status(client, unrelated.headers["location"], "delivered")
    genders = sorted(
        e["resource"]["gender"]
        for bundle in upstream.bundles
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Patient"
    )
    assert genders == ["female", "male"]  # the newer version of one record, and the other
    assert client.get(older.headers["location"], headers=AUTH).json()["status"] == "superseded"


def two_versions() -> tuple[dict[str, Any], dict[str, Any]]:
    """The case, and a later version of it in which the patient's sex was corrected."""
    record = load_case(CASE)
    changed = copy.deepcopy(record)
    changed["patient"]["sex"] = "female"
    return record, changed


def hold_first_transaction(upstream: FakeUpstream) -> tuple[threading.Event, threading.Event]:
    """Hold the upstream's first transaction (version 1's) until ``release`` is set;
    ``in_flight`` is set once it is held."""
    in_flight, release = threading.Event(), threading.Event()

    async def held(request: httpx.Request) -> httpx.Response:
        if not in_flight.is_set():
            in_flight.set()
            deadline = time.monotonic() + 10
            while not release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        return upstream._transaction(request)

    upstream.transaction_route.mock(side_effect=held)
    return in_flight, release


def test_a_version_arriving_during_delivery_waits_for_it(
    client: TestClient, upstream: FakeUpstream
) -> None:
    """While version 1 is being delivered, version 2 is queued (202), not sent alongside."""
    record, changed = two_versions()
    in_flight, release = hold_first_transaction(upstream)
    answers: list[httpx.Response] = []
    first = threading.Thread(
        target=lambda: answers.append(
            client.post("/case-records", content=body(record), headers=HEADERS)
        )
    )
    first.start()
    assert in_flight.wait(10)
    second = client.post("/case-records", content=body(changed), headers=HEADERS)
    release.set()
    first.join(10)
    assert (answers[0].status_code, second.status_code) == (201, 202), second.text
    assert second.json()["attempts"] == 0
    wait_for_status(client, second.headers["location"], "delivered")
    genders = [
        e["resource"]["gender"]
        for bundle in upstream.bundles
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Patient"
    ]
    assert genders == ["male", "female"]  # one at a time, in the order they were accepted


def test_a_waiting_version_is_sent_as_soon_as_the_one_before_is_delivered(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """The delivery of version 1 wakes the worker for version 2, which waited for it: with a
    30 s poll, version 2 is delivered well before the poll would have found it."""
    record, changed = two_versions()
    in_flight, release = hold_first_transaction(upstream)
    with running(make_settings(tmp_path, poll_seconds=30.0)) as client:
        first = threading.Thread(
            target=lambda: client.post("/case-records", content=body(record), headers=HEADERS)
        )
        first.start()
        assert in_flight.wait(10)
        second = client.post("/case-records", content=body(changed), headers=HEADERS)
        assert second.status_code == 202
        release.set()
        first.join(10)
        wait_for_status(client, second.headers["location"], "delivered", timeout=5.0)


def test_a_delivery_with_nothing_waiting_leaves_the_worker_asleep(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """A synchronous delivery that no later version waits for does not wake the delivery
    loop (a claim, a supersede scan and a due-time query for nothing, on every request)."""
    with running(make_settings(tmp_path, poll_seconds=30.0)) as client:
        outbox = client.app.state.gateway.outbox  # type: ignore[attr-defined]
        claims: list[float] = []
        original = outbox.claim

        def counted(**kwargs: Any) -> Any:
            claims.append(time.monotonic())
            return original(**kwargs)

        outbox.claim = counted
        time.sleep(0.2)  # the loop's first look at start-up is over
        claims.clear()
        for case in (CASE, "caruso2022-02"):
            answer = client.post("/case-records", content=body(load_case(case)), headers=HEADERS)
            assert answer.status_code == 201, answer.text
        time.sleep(0.3)
        assert claims == []
