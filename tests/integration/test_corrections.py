"""Against the local HAPI: a corrected record leaves the server equal to it (issue 12, item 1).

The scenario of the issue on ``caruso2022-05`` (five adverse events): push the record, then a
correction with the patient's sex and two AE grades changed and one AE removed. HAPI must
then hold exactly the corrected record (every resource equal to the corrected bundle's, the
removed AE gone), with a new version only where something changed; an unchanged resend
versions nothing; ten concurrent pushes leave one of each resource; ``pull`` gives the
corrected record back. Each test uses its own namespace, so counts are exact on a shared
server. The same through the gateway's ``POST /case-records`` is at the end.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from adapter.fhir.client import FhirClient
from adapter.fhir.errors import OperationOutcomeError
from adapter.gateway.main import create_app
from adapter.mapping import ConversionOptions, convert_record
from adapter.mapping.context import DEFAULT_NAMESPACE
from adapter.push import PushResult, fhir_client, push_bundle
from adapter.reconcile import RecordKey, record_key, record_state, state_request
from adapter.record.validate import validate_record
from adapter.reverse import pull_case_record
from adapter.reverse.compare import carried, differences
from tests.conftest import load_case
from tests.integration.conftest import Target
from tests.integration.test_gateway_integration import (
    HEADERS,
    SERVER_URL,
    TcpProxy,
    gateway_settings,
)
from tests.integration.test_gateway_integration import (
    proxy as proxy,  # a fixture, used by the gateway tests below
)

pytestmark = pytest.mark.integration

CASE = "caruso2022-05"  # five adverse events, none referenced by another part of the record
AUTH = {"Authorization": HEADERS["Authorization"]}


def corrected(record: dict[str, Any]) -> dict[str, Any]:
    """The issue's correction: sex and two AE grades changed, the last AE removed."""
    fixed = copy.deepcopy(record)
    fixed["patient"]["sex"] = "female" if record["patient"]["sex"] == "male" else "male"
    fixed["adverse_events"][0]["grade"] = 2
    fixed["adverse_events"][1]["grade"] = 3
    del fixed["adverse_events"][-1]
    assert validate_record(fixed) == []
    return fixed


def fresh(target: Target) -> tuple[dict[str, Any], ConversionOptions]:
    """The example under its own namespace: this test's resources and nobody else's."""
    namespace = f"{target.namespace}/t-{uuid.uuid4().hex[:8]}"
    return load_case(CASE), ConversionOptions(namespace=namespace)


def bundle_of(record: dict[str, Any], options: ConversionOptions) -> dict[str, Any]:
    return convert_record(record, options).bundle


def key_of(bundle: dict[str, Any]) -> RecordKey:
    key = record_key(bundle)
    assert key is not None
    return key


def server_state(client: FhirClient, bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What HAPI holds for the record: ``Type/id`` → resource (Provenance and its targets)."""
    key = key_of(bundle)
    state = record_state(key, client.batch(state_request(key)))
    assert state.provenance is not None
    return {f"Provenance/{key.provenance_id}": state.provenance, **state.targets}


def versions(state: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {reference: r["meta"]["versionId"] for reference, r in state.items()}


def _identity(resource: dict[str, Any]) -> str:
    if resource["resourceType"] == "Provenance":
        return "Provenance"
    identifier = resource["identifier"]
    first = identifier[0] if isinstance(identifier, list) else identifier
    return f"{resource['resourceType']}:{first['system']}|{first['value']}"


def _resolve(node: Any, urls: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            k: (urls.get(v, v) if k == "reference" else _resolve(v, urls)) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_resolve(item, urls) for item in node]
    return node


def assert_server_equals(bundle: dict[str, Any], state: dict[str, dict[str, Any]]) -> None:
    """Every resource of the bundle is on the server with exactly its content, and nothing
    else of the record is: references compared after resolving the bundle's urn:uuids."""
    on_server = {_identity(r): (ref, r) for ref, r in state.items()}
    assert len(on_server) == len(state) == len(bundle["entry"])
    urls = {e["fullUrl"]: on_server[_identity(e["resource"])][0] for e in bundle["entry"]}
    for entry in bundle["entry"]:
        reference, stored = on_server[_identity(entry["resource"])]
        sent = _resolve(entry["resource"], urls)
        strip = ("id", "meta", "text")
        assert {k: v for k, v in stored.items() if k not in strip} == {
            k: v for k, v in sent.items() if k not in strip
        }, reference


def gateway_provenances(view: dict[str, Any]) -> list[str]:
    """Ids of the gateway Provenances (``gw-`` + content digest) a delivery wrote."""
    found = []
    for entry in view.get("references") or []:
        kind, _, rest = str(entry["reference"]).partition("/")
        if kind == "Provenance" and rest.startswith("gw-"):
            found.append(rest.split("/")[0])
    return found


def gone(client: FhirClient, reference: str) -> bool:
    kind, resource_id = reference.split("/")
    with pytest.raises(OperationOutcomeError) as raised:
        client.read(kind, resource_id)
    return raised.value.status_code == 410


# -- the scenario, pushed with push_bundle ---------------------------------------------


def test_correction_leaves_hapi_equal_to_the_corrected_record(target: Target) -> None:
    original, options = fresh(target)
    fixed = corrected(original)
    client = target.client
    first = push_bundle(client, bundle_of(original, options))
    assert first.created == len(first.references) == 48
    before = server_state(client, bundle_of(original, options))
    assert_server_equals(bundle_of(original, options), before)

    result = push_bundle(client, bundle_of(fixed, options))
    after = server_state(client, bundle_of(fixed, options))
    assert_server_equals(bundle_of(fixed, options), after)

    [removed] = result.removed
    assert removed.startswith("AdverseEvent/") and removed not in after and gone(client, removed)
    old, new = versions(before), versions(after)
    changed = sorted(ref for ref in new if new[ref] != old[ref])
    assert sorted(ref.split("/")[0] for ref in changed) == [
        "AdverseEvent",
        "AdverseEvent",
        "Patient",
        "Provenance",
    ]
    assert all((old[ref], new[ref]) == ("1", "2") for ref in changed)
    assert all(new[ref] == "1" for ref in new if ref not in changed)
    assert (result.created, result.updated) == (0, 4)
    print(
        f"correction: {len(new)} resources, versions 1→2 on {', '.join(changed)}; "
        f"{len(new) - len(changed)} unchanged at 1; removed {removed} (410 Gone)"
    )

    pulled = pull_case_record(client, original["record_id"], options.namespace)
    assert validate_record(pulled) == []
    assert differences(carried(fixed), carried(pulled)) == []


def test_unchanged_resend_versions_nothing(target: Target) -> None:
    record, options = fresh(target)
    client = target.client
    push_bundle(client, bundle_of(record, options))
    push_bundle(client, bundle_of(corrected(record), options))
    before = versions(server_state(client, bundle_of(corrected(record), options)))
    result = push_bundle(client, bundle_of(corrected(record), options))
    after = versions(server_state(client, bundle_of(corrected(record), options)))
    assert after == before
    assert (result.created, result.updated, result.removed) == (0, 0, [])
    print(f"unchanged resend: {len(after)} resources, versions {sorted(set(after.values()))}")


def test_resend_without_recorded_at_versions_nothing(target: Target) -> None:
    record, _ = fresh(target)
    record.pop("recorded_at", None)
    namespace = f"{target.namespace}/t-{uuid.uuid4().hex[:8]}"
    client = target.client
    first = ConversionOptions(namespace=namespace, recorded="2030-01-01T00:00:00Z")
    later = ConversionOptions(namespace=namespace, recorded="2030-02-01T00:00:00Z")
    push_bundle(client, bundle_of(record, first))
    before = versions(server_state(client, bundle_of(record, first)))
    push_bundle(client, bundle_of(record, later))
    assert versions(server_state(client, bundle_of(record, later))) == before


def _count(client: FhirClient, kind: str, params: dict[str, str]) -> int:
    page = client.search_bundles(kind, {**params, "_summary": "count"}, no_cache=True)
    return int(next(iter(page)).get("total", 0))


def one_of_each(client: FhirClient, bundle: dict[str, Any], patient_id: str) -> dict[str, int]:
    """How many resources of each type the record's Patient has (one Patient per record_id)."""
    key = key_of(bundle)
    counts = {"Patient": _count(client, "Patient", {"identifier": key.label})}
    for kind in (
        "Condition",
        "Observation",
        "MedicationRequest",
        "MedicationAdministration",
        "Procedure",
        "AdverseEvent",
    ):
        counts[kind] = _count(client, kind, {"subject": f"Patient/{patient_id}"})
    return counts


def expected_counts(bundle: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in bundle["entry"]:
        kind = entry["resource"]["resourceType"]
        if kind != "Provenance":
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def _push_concurrently(target: Target, bundle: dict[str, Any]) -> list[PushResult]:
    def push_once(_: int) -> PushResult:
        with fhir_client(target.base_url) as client:
            return push_bundle(client, bundle)

    with ThreadPoolExecutor(max_workers=10) as pool:
        return list(pool.map(push_once, range(10)))


def test_ten_concurrent_pushes_of_a_new_record_leave_one_of_each(target: Target) -> None:
    record, options = fresh(target)
    bundle = bundle_of(record, options)
    results = _push_concurrently(target, bundle)
    references = {tuple(sorted(r.references)) for r in results}
    assert len(references) == 1
    assert sum(r.created for r in results) == len(bundle["entry"])
    state = server_state(target.client, bundle)
    assert_server_equals(bundle, state)
    assert set(versions(state).values()) == {"1"}
    patient = next(ref for ref in state if ref.startswith("Patient/")).split("/")[1]
    counts = one_of_each(target.client, bundle, patient)
    assert {k: v for k, v in counts.items() if v} == expected_counts(bundle)
    print(f"10 concurrent pushes: plans per push {sorted(r.plans for r in results)}; {counts}")


def test_ten_concurrent_corrections_apply_once(target: Target) -> None:
    record, options = fresh(target)
    push_bundle(target.client, bundle_of(record, options))
    before = versions(server_state(target.client, bundle_of(record, options)))
    bundle = bundle_of(corrected(record), options)
    results = _push_concurrently(target, bundle)
    state = server_state(target.client, bundle)
    assert_server_equals(bundle, state)
    after = versions(state)
    # Whoever won applied the correction; everyone else then found nothing left to do.
    assert sorted(after[ref] for ref in after if after[ref] != before[ref]) == ["2"] * 4
    assert sum(len(r.removed) for r in results) == 1
    patient = next(ref for ref in state if ref.startswith("Patient/")).split("/")[1]
    counts = one_of_each(target.client, bundle, patient)
    assert {k: v for k, v in counts.items() if v} == expected_counts(bundle)


# -- the same through the gateway's POST /case-records -----------------------------------------


@pytest.fixture(scope="module")
def hapi() -> Iterator[FhirClient]:
    """The local HAPI the gateway delivers to (through each test's TCP proxy)."""
    assert SERVER_URL
    with fhir_client(SERVER_URL) as client:
        yield client


def gateway_record(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


def _wait(client: TestClient, location: str, wanted: str, timeout: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        view = client.get(location, headers=AUTH).json()
        if view["status"] == wanted:
            return view
        assert view["status"] in ("queued", "delivered", "superseded"), view
        time.sleep(0.2)
    raise AssertionError(f"never {wanted}: {view}")


def gateway_options() -> ConversionOptions:
    return ConversionOptions(namespace=DEFAULT_NAMESPACE)


def test_gateway_correction_leaves_hapi_equal_to_the_corrected_record(
    tmp_path: Path,
    proxy: TcpProxy,
    hapi: FhirClient,
) -> None:
    original = load_case(CASE)
    original["record_id"] = f"gwfix-{uuid.uuid4().hex[:16]}"
    fixed = corrected(original)
    options = gateway_options()
    with TestClient(create_app(gateway_settings(tmp_path, proxy))) as client:
        first = client.post("/case-records", content=gateway_record(original), headers=HEADERS)
        assert first.status_code == 201, first.text
        before = versions(server_state(hapi, bundle_of(original, options)))
        second = client.post("/case-records", content=gateway_record(fixed), headers=HEADERS)
        assert second.status_code == 201, second.text
        after_state = server_state(hapi, bundle_of(fixed, options))
        third = client.post("/case-records", content=gateway_record(fixed), headers=HEADERS)
        assert third.status_code == 201, third.text
        response = client.get(f"/patients/{original['record_id']}/case-record", headers=AUTH)
    assert_server_equals(bundle_of(fixed, options), after_state)
    after = versions(after_state)
    removed = [r for r in second.json()["references"] if r["status"].startswith("204")]
    assert [r["reference"].split("/")[0] for r in removed] == ["AdverseEvent"]
    assert gone(hapi, removed[0]["reference"])
    changed = sorted(ref.split("/")[0] for ref in after if after[ref] != before.get(ref))
    assert changed == ["AdverseEvent", "AdverseEvent", "Patient", "Provenance"]
    # The unchanged resend: nothing of the record got a new version.
    assert versions(server_state(hapi, bundle_of(fixed, options))) == after
    # The gateway's audit Provenance of each submission points at the record's Provenance.
    [audit_id] = gateway_provenances(second.json())
    audit = hapi.read("Provenance", audit_id)
    manifest = f"Provenance/{key_of(bundle_of(fixed, options)).provenance_id}"
    assert audit["target"] == [{"reference": manifest}]
    assert response.status_code == 200, response.text
    assert differences(carried(fixed), carried(response.json())) == []


def test_gateway_delivers_only_the_newest_of_queued_versions(
    tmp_path: Path,
    proxy: TcpProxy,
    hapi: FhirClient,
) -> None:
    """Upstream down: version 1 then version 2 are queued; when it is back, version 1 is
    superseded (never sent) and version 2 is delivered, planned against HAPI's state then."""
    original = load_case(CASE)
    original["record_id"] = f"gwq-{uuid.uuid4().hex[:16]}"
    options = gateway_options()
    with TestClient(create_app(gateway_settings(tmp_path, proxy))) as client:
        first = client.post("/case-records", content=gateway_record(original), headers=HEADERS)
        assert first.status_code == 201, first.text
        proxy.stop()
        fixed = corrected(original)
        older = copy.deepcopy(fixed)
        older["patient"]["sex"] = original["patient"]["sex"]  # an intermediate version
        queued = [
            client.post("/case-records", content=gateway_record(version), headers=HEADERS)
            for version in (older, fixed)
        ]
        assert [r.status_code for r in queued] == [202, 202]
        proxy.start()
        newest = _wait(client, queued[1].headers["location"], "delivered")
        superseded = client.get(queued[0].headers["location"], headers=AUTH).json()
    assert superseded["status"] == "superseded"
    assert queued[1].json()["id"] in superseded["error"]
    state = server_state(hapi, bundle_of(fixed, options))
    assert_server_equals(bundle_of(fixed, options), state)
    assert [r["status"] for r in newest["references"]].count("204 No Content") == 1
    # One gateway Provenance for the first delivery and one for the newest version; the
    # superseded version was never sent, so none for it.
    [newest_audit] = gateway_provenances(newest)
    manifest = f"Provenance/{key_of(bundle_of(fixed, options)).provenance_id}"
    audits = {
        str(r["id"])
        for r in hapi.search("Provenance", {"target": manifest}, no_cache=True)
        if str(r["id"]).startswith("gw-")
    }
    assert newest_audit in audits
    assert len(audits) == 2, audits


def test_gateway_ten_concurrent_pushes_leave_one_of_each(
    tmp_path: Path,
    proxy: TcpProxy,
    hapi: FhirClient,
) -> None:
    record = load_case(CASE)
    record["record_id"] = f"gwrace-{uuid.uuid4().hex[:16]}"
    body = gateway_record(record)
    options = gateway_options()
    with TestClient(create_app(gateway_settings(tmp_path, proxy))) as client:

        def post(_: int) -> httpx.Response:
            return client.post("/case-records", content=body, headers=HEADERS)

        with ThreadPoolExecutor(max_workers=10) as pool:
            responses = list(pool.map(post, range(10)))
        assert all(r.status_code in (201, 202) for r in responses), [r.text for r in responses]
        for response in responses:
            view = client.get(response.headers["location"], headers=AUTH).json()
            if view["status"] != "superseded":
                _wait(client, response.headers["location"], "delivered")
    bundle = bundle_of(record, options)
    state = server_state(hapi, bundle)
    assert_server_equals(bundle, state)
    assert set(versions(state).values()) == {"1"}
    patient = next(ref for ref in state if ref.startswith("Patient/")).split("/")[1]
    counts = one_of_each(hapi, bundle, patient)
    assert {k: v for k, v in counts.items() if v} == expected_counts(bundle)
