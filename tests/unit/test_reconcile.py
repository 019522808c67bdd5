"""Corrections: the bundle's request shape, the removal plan, and push_bundle's re-planning.

The pure planner is tested on hand-built server states; ``push_bundle`` against a small
respx-backed FHIR server that keeps versions the way HAPI does (a PUT whose content did not
change keeps its version, ``ifMatch`` on a stale version is a 409, deletes are remembered).
What HAPI itself does is proven by tests/integration/test_corrections.py.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import httpx
import pytest
import respx
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.fhir.errors import FhirError, OperationOutcomeError
from adapter.mapping import ConversionOptions, convert_record
from adapter.mapping.bundle import conditional_url
from adapter.push import MAX_PLANS, fhir_client, push_bundle
from adapter.reconcile import (
    RecordState,
    content_addressed_provenances,
    manifest_full_url,
    plan_transaction,
    record_key,
    record_state,
    state_request,
)
from tests.conftest import load_case

BASE = "http://fhir.test/r4"
NAMESPACE = "https://registry.example.org"
OPTIONS = ConversionOptions(namespace=NAMESPACE)


def bundle_of(record: dict[str, Any], **options: Any) -> dict[str, Any]:
    return convert_record(record, ConversionOptions(namespace=NAMESPACE, **options)).bundle


def corrected(record: dict[str, Any]) -> dict[str, Any]:
    """The issue's correction: the patient's sex and two AE grades changed, one AE removed."""
    fixed = copy.deepcopy(record)
    fixed["patient"]["sex"] = "female" if record["patient"]["sex"] == "male" else "male"
    fixed["adverse_events"][0]["grade"] = 2
    fixed["adverse_events"][1]["grade"] = 3
    del fixed["adverse_events"][-1]
    return fixed


# -- the bundle's shape ------------------------------------------------------------------------


def test_every_entry_is_an_update_the_server_versions(case_name: str) -> None:
    bundle = convert_record(load_case(case_name), OPTIONS).bundle
    for entry in bundle["entry"]:
        resource, request = entry["resource"], entry["request"]
        kind = resource["resourceType"]
        assert request["method"] == "PUT" and "ifNoneExist" not in request
        if kind in ("Provenance", "AdverseEvent"):
            assert request["url"] == f"{kind}/{resource['id']}"
            continue
        identifier = resource["identifier"][0]
        path, _, query = request["url"].partition("?")
        assert path == kind and "id" not in resource
        assert parse_qs(query) == {"identifier": [f"{identifier['system']}|{identifier['value']}"]}


def test_conditional_url_escapes_what_would_change_the_search() -> None:
    url = conditional_url("Patient", "https://h.example/a&b=c#x", "v|1,2$\\")
    path, _, query = url.partition("?")
    assert path == "Patient" and "&" not in query and "#" not in query
    assert unquote(query) == "identifier=https://h.example/a&b=c#x|v\\|1\\,2\\$\\\\"
    plain = conditional_url("Condition", f"{NAMESPACE}/fhir/identifier/resource", "r-1/x/y")
    assert plain == f"Condition?identifier={NAMESPACE}/fhir/identifier/resource|r-1/x/y"


def test_record_key_names_the_record_and_its_manifest() -> None:
    bundle = bundle_of(load_case("caruso2022-05"))
    key = record_key(bundle)
    assert key is not None and key.record_id == "caruso2022-05"
    assert key.namespace == NAMESPACE
    assert key.label == f"{NAMESPACE}/fhir/identifier/case-record|caruso2022-05"
    [provenance] = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Provenance"]
    assert provenance["resource"]["id"] == key.provenance_id
    assert manifest_full_url(bundle, key) == provenance["fullUrl"]


def test_a_bundle_the_adapter_did_not_make_has_no_record_key() -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.3", "value": "42"}],
    }
    ehr = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": patient, "request": {"method": "POST", "url": "Patient"}}],
    }
    assert record_key(ehr) is None
    # A Patient that looks like ours without the record's Provenance is not one of ours.
    bundle = bundle_of(load_case("caruso2022-05"))
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Provenance"]
    assert record_key(bundle) is None


def test_state_is_read_without_the_record_id_in_any_url() -> None:
    key = record_key(bundle_of(load_case("caruso2022-05")))
    assert key is not None
    request = state_request(key)
    assert request["type"] == "batch"
    [entry] = request["entry"]
    assert entry["request"] == {
        "method": "GET",
        "url": f"Provenance?_id={key.provenance_id}&_include=Provenance:target",
    }


def test_a_content_addressed_provenance_is_asked_for_in_the_same_search() -> None:
    """The gateway's Provenance (a digest id) is found by the state read, and left out of the
    plan when the server holds it: an unchanged resend versions nothing, at no extra request."""
    bundle = bundle_of(load_case("caruso2022-05"))
    key = record_key(bundle)
    assert key is not None
    assert content_addressed_provenances(bundle, key) == ()  # the record's own is not one
    gateway = {"resourceType": "Provenance", "id": "gw-" + "a" * 40, "recorded": "2026-01-01"}
    bundle["entry"].append(
        {"resource": gateway, "request": {"method": "PUT", "url": f"Provenance/{gateway['id']}"}}
    )
    also = content_addressed_provenances(bundle, key)
    assert also == (gateway["id"],)
    [entry] = state_request(key, also)["entry"]
    assert entry["request"]["url"] == (
        f"Provenance?_id={key.provenance_id},{gateway['id']}&_include=Provenance:target"
    )

    def answer(*resources: dict[str, Any]) -> dict[str, Any]:
        searchset = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
        }
        return {
            "resourceType": "Bundle",
            "type": "batch-response",
            "entry": [{"resource": searchset, "response": {"status": "200 OK"}}],
        }

    held = record_state(key, answer(dict(gateway, meta={"versionId": "1"})), also)
    assert held.present == {gateway["id"]} and held.targets == {} and held.provenance is None
    plan = plan_transaction(bundle, key, held)
    assert all(e.get("resource", {}).get("id") != gateway["id"] for e in plan.bundle["entry"])
    assert len(plan.bundle["entry"]) == len(bundle["entry"]) - 1
    assert bundle["entry"][-1]["resource"] is gateway  # the input bundle is not modified

    absent = record_state(key, answer(), also)
    assert absent.present == set()
    assert plan_transaction(bundle, key, absent).bundle["entry"][-1]["resource"] == gateway
    # Without ``also`` a Provenance of another id is an ordinary target, as before.
    assert "Provenance/" + gateway["id"] in record_state(key, answer(gateway)).targets


# -- a fake server with HAPI's versioning ------------------------------------------------------


class VersioningServer:
    """Enough of a FHIR server for push_bundle: transactions, one batch search, versions."""

    def __init__(self) -> None:
        self.resources: dict[str, dict[str, Any]] = {}
        self.deleted: set[str] = set()
        self.next_id = 1
        self.transactions: list[dict[str, Any]] = []
        self.conflicts_to_inject = 0

    # helpers ----------------------------------------------------------------
    def _match(self, url: str) -> str | None:
        kind, _, query = url.partition("?")
        token = parse_qs(query)["identifier"][0]
        for reference, resource in self.resources.items():
            if reference.split("/")[0] != kind:
                continue
            for identifier in resource.get("identifier") or []:
                if f"{identifier['system']}|{identifier['value']}" == token:
                    return reference
        return None

    def _store(self, reference: str, body: dict[str, Any]) -> tuple[str, str]:
        kind, resource_id = reference.split("/")
        old = self.resources.get(reference)
        content = {k: v for k, v in body.items() if k not in ("id", "meta")}
        if old is not None:
            if {k: v for k, v in old.items() if k not in ("id", "meta")} == content:
                return "200 OK", old["meta"]["versionId"]
            version = str(int(old["meta"]["versionId"]) + 1)
            status = "200 OK"
        else:
            version, status = "1", "201 Created"
        self.resources[reference] = {
            **content,
            "resourceType": kind,
            "id": resource_id,
            "meta": {"versionId": version},
        }
        return status, version

    # request handling ------------------------------------------------------------
    def handle(self, request: httpx.Request) -> httpx.Response:
        assert "caruso" not in str(request.url)  # no record id in any URL
        bundle = json.loads(request.content)
        if bundle["type"] == "batch":
            return self._search(bundle["entry"][0]["request"]["url"])
        self.transactions.append(bundle)
        if self.conflicts_to_inject:
            self.conflicts_to_inject -= 1
            return outcome(409, "HAPI-0989: not the current version")
        return self._transaction(bundle)

    def _search(self, url: str) -> httpx.Response:
        params = parse_qs(urlsplit(url).query)
        found: list[dict[str, Any]] = []
        provenance = self.resources.get(f"Provenance/{params['_id'][0]}")
        if provenance is not None:
            found.append({"resource": provenance, "search": {"mode": "match"}})
            for target in provenance["target"]:
                resource = self.resources.get(target["reference"])
                if resource is not None:
                    found.append({"resource": resource, "search": {"mode": "include"}})
        searchset = {"resourceType": "Bundle", "type": "searchset", "entry": found}
        return fhir_json(
            {
                "resourceType": "Bundle",
                "type": "batch-response",
                "entry": [{"resource": searchset, "response": {"status": "200 OK"}}],
            }
        )

    def _transaction(self, bundle: dict[str, Any]) -> httpx.Response:
        resolved: dict[str, str] = {}
        plans: list[tuple[int, str, dict[str, Any] | None]] = []
        for index, entry in enumerate(bundle["entry"]):
            request = entry["request"]
            if request["method"] == "DELETE":
                plans.append((index, request["url"], None))
                continue
            url = request["url"]
            if "?" in url:
                reference = self._match(url)
                if reference is None:
                    reference = f"{url.split('?')[0]}/{self.next_id}"
                    self.next_id += 1
            else:
                reference = url
                current = self.resources.get(reference)
                if "ifMatch" in request and (
                    current is None or request["ifMatch"] != f'W/"{current["meta"]["versionId"]}"'
                ):
                    return outcome(409, "HAPI-0989: not the current version")
            resolved[entry["fullUrl"]] = reference
            plans.append((index, reference, entry["resource"]))
        answers: list[dict[str, Any]] = [{} for _ in bundle["entry"]]
        for index, reference, resource in plans:
            if resource is None:
                self.resources.pop(reference, None)
                self.deleted.add(reference)
                answers[index] = {"response": {"status": "204 No Content", "location": reference}}
                continue
            body = json.loads(json.dumps(resource))
            for target in body.get("target") or []:
                target["reference"] = resolved.get(target["reference"], target["reference"])
            status, version = self._store(reference, body)
            location = f"{reference}/_history/{version}"
            answers[index] = {"response": {"status": status, "location": location}}
        return fhir_json(
            {"resourceType": "Bundle", "type": "transaction-response", "entry": answers}
        )

    def versions(self) -> dict[str, str]:
        return {ref: r["meta"]["versionId"] for ref, r in self.resources.items()}

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [r for ref, r in self.resources.items() if ref.startswith(f"{kind}/")]


def fhir_json(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=body, headers={"Content-Type": "application/fhir+json"})


def outcome(status: int, diagnostics: str) -> httpx.Response:
    issue = {"severity": "error", "code": "conflict", "diagnostics": diagnostics}
    return httpx.Response(
        status,
        json={"resourceType": "OperationOutcome", "issue": [issue]},
        headers={"Content-Type": "application/fhir+json"},
    )


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[VersioningServer]:
    monkeypatch.setattr("adapter.push._replan_delay", lambda: 0.0)
    fake = VersioningServer()
    with respx.mock(assert_all_called=False) as router:
        router.post(BASE).mock(side_effect=fake.handle)
        yield fake


# -- push_bundle: corrections, resends, races --------------------------------------------------


def test_correction_updates_what_changed_and_deletes_the_dropped_event(
    server: VersioningServer,
) -> None:
    original = load_case("caruso2022-05")
    with fhir_client(BASE) as client:
        first = push_bundle(client, bundle_of(original))
        assert first.created == len(first.references) == len(server.resources)
        before = server.versions()
        result = push_bundle(client, bundle_of(corrected(original)))
    after = server.versions()
    [removed] = result.removed
    assert removed.startswith("AdverseEvent/") and removed in server.deleted
    assert removed not in after and len(server.of_type("AdverseEvent")) == 4
    changed = {ref for ref in after if after[ref] != before.get(ref)}
    kinds = sorted(ref.split("/")[0] for ref in changed)
    # The Patient (sex), two AdverseEvents (grades) and the Provenance (one target fewer).
    assert kinds == ["AdverseEvent", "AdverseEvent", "Patient", "Provenance"]
    assert result.updated == 4 and result.created == 0
    assert all(after[ref] == "2" for ref in changed)
    [patient] = server.of_type("Patient")
    assert patient["gender"] == "female"
    # The transaction was a compare-and-swap on the manifest read just before.
    sent = server.transactions[-1]["entry"]
    [manifest] = [e for e in sent if e.get("resource", {}).get("resourceType") == "Provenance"]
    assert manifest["request"]["ifMatch"] == 'W/"1"'
    assert [e["request"] for e in sent if e["request"]["method"] == "DELETE"] == [
        {"method": "DELETE", "url": removed}
    ]


def test_unchanged_resend_versions_nothing(server: VersioningServer) -> None:
    record = load_case("caruso2022-05")
    with fhir_client(BASE) as client:
        push_bundle(client, bundle_of(record))
        before = server.versions()
        result = push_bundle(client, bundle_of(record))
    assert server.versions() == before
    assert result.created == result.updated == 0 and result.removed == []


def test_resend_of_a_record_without_recorded_at_keeps_the_first_recorded_time(
    server: VersioningServer,
) -> None:
    record = load_case("caruso2022-05")
    record.pop("recorded_at", None)
    with fhir_client(BASE) as client:
        push_bundle(client, bundle_of(record, recorded="2030-01-01T00:00:00Z"))
        before = server.versions()
        push_bundle(client, bundle_of(record, recorded="2030-06-01T00:00:00Z"))
        assert server.versions() == before  # the conversion time alone is no change
        [provenance] = server.of_type("Provenance")
        assert provenance["recorded"] == "2030-01-01T00:00:00Z"
        # A real change of what the Provenance says (one target fewer) takes the new time.
        push_bundle(client, bundle_of(corrected(record), recorded="2030-07-01T00:00:00Z"))
    [provenance] = server.of_type("Provenance")
    assert provenance["recorded"] == "2030-07-01T00:00:00Z"


def test_a_lost_race_is_replanned_from_a_fresh_read(server: VersioningServer) -> None:
    record = load_case("caruso2022-05")
    with fhir_client(BASE) as client:
        push_bundle(client, bundle_of(record))
        server.conflicts_to_inject = 2
        result = push_bundle(client, bundle_of(corrected(record)))
    assert result.plans == 3 and len(result.removed) == 1
    assert len(server.of_type("AdverseEvent")) == 4


def test_a_conflict_that_does_not_clear_is_reported(server: VersioningServer) -> None:
    with fhir_client(BASE) as client:
        server.conflicts_to_inject = MAX_PLANS
        with pytest.raises(OperationOutcomeError) as raised:
            push_bundle(client, bundle_of(load_case("caruso2022-05")))
    assert raised.value.status_code == 409
    assert len(server.transactions) == MAX_PLANS and server.resources == {}


def test_a_refusal_is_not_replanned() -> None:
    server = VersioningServer()

    def refuse(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["type"] == "batch":
            return server.handle(request)
        server.transactions.append({})
        return outcome(422, "Patient.gender: invalid")

    with respx.mock() as router:
        router.post(BASE).mock(side_effect=refuse)
        with fhir_client(BASE) as client, pytest.raises(OperationOutcomeError) as raised:
            push_bundle(client, bundle_of(load_case("caruso2022-05")))
    assert raised.value.status_code == 422 and len(server.transactions) == 1


def test_a_refused_state_read_is_reported() -> None:
    refused = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [
            {
                "response": {
                    "status": "403 Forbidden",
                    "outcome": {
                        "resourceType": "OperationOutcome",
                        "issue": [{"severity": "error", "code": "forbidden"}],
                    },
                }
            }
        ],
    }
    with respx.mock() as router:
        route = router.post(BASE).mock(return_value=fhir_json(refused))
        with fhir_client(BASE) as client, pytest.raises(OperationOutcomeError) as raised:
            push_bundle(client, bundle_of(load_case("caruso2022-05")))
    assert raised.value.status_code == 403 and route.call_count == 1


def test_a_bundle_that_is_not_a_record_is_sent_as_it_is() -> None:
    ehr = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:1",
                "resource": {"resourceType": "Patient", "id": "p1"},
                "request": {"method": "PUT", "url": "Patient/p1"},
            }
        ],
    }
    answer = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [{"response": {"status": "201 Created", "location": "Patient/p1/_history/1"}}],
    }
    with respx.mock() as router:
        route = router.post(BASE).mock(return_value=fhir_json(answer))
        with fhir_client(BASE) as client:
            result = push_bundle(client, ehr)
    assert route.call_count == 1 and json.loads(route.calls[0].request.content) == ehr
    assert result.references == ["Patient/p1"] and result.created == 1


# -- the planner on hand-made states -----------------------------------------------------------


def server_state(bundle: dict[str, Any], version: str = "3") -> RecordState:
    """What a server holds after applying ``bundle``: ids 1..n, targets resolved."""
    ids = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{n}" for n, e in enumerate(bundle["entry"])
    }
    state = RecordState()
    for entry in bundle["entry"]:
        resource = copy.deepcopy(entry["resource"])
        reference = ids[entry["fullUrl"]]
        if resource["resourceType"] == "Provenance":
            reference = f"Provenance/{resource['id']}"
            for target in resource["target"]:
                target["reference"] = ids[target["reference"]]
            resource["meta"] = {"versionId": version}
            state.provenance = resource
        else:
            resource["id"] = reference.split("/")[1]
            resource["meta"] = {"versionId": "1"}
            state.targets[reference] = resource
    return state


def test_plan_deletes_only_resources_of_this_record_it_no_longer_produces() -> None:
    original = load_case("caruso2022-05")
    state = server_state(bundle_of(original))
    assert state.provenance is not None
    # The manifest also points at something that is not this record's (another record's
    # resource, a trial): never touched.
    foreign = {
        "resourceType": "Observation",
        "id": "99",
        "identifier": [{"system": f"{NAMESPACE}/fhir/identifier/resource", "value": "other/x"}],
    }
    state.targets["Observation/99"] = foreign
    state.provenance["target"].append({"reference": "Observation/99"})
    new = bundle_of(corrected(original))
    key = record_key(new)
    assert key is not None
    plan = plan_transaction(new, key, state)
    dropped = [
        ref
        for ref, r in state.targets.items()
        if r["resourceType"] == "AdverseEvent" and r["identifier"]["value"].endswith("/ae5")
    ]
    assert list(plan.removed) == dropped
    deletes = [e for e in plan.bundle["entry"] if e["request"]["method"] == "DELETE"]
    assert deletes == [{"request": {"method": "DELETE", "url": dropped[0]}}]
    assert plan.bundle["entry"][: len(new["entry"])][-1]["request"]["ifMatch"] == 'W/"3"'


def test_plan_on_a_new_record_sends_the_bundle_unchanged() -> None:
    bundle = bundle_of(load_case("caruso2022-05"))
    key = record_key(bundle)
    assert key is not None
    plan = plan_transaction(bundle, key, RecordState())
    assert plan.bundle == bundle and plan.removed == ()


def test_plan_leaves_its_input_alone() -> None:
    original = load_case("caruso2022-05")
    new = bundle_of(corrected(original))
    snapshot = copy.deepcopy(new)
    key = record_key(new)
    assert key is not None
    plan_transaction(new, key, server_state(bundle_of(original)))
    assert new == snapshot


def test_record_state_reads_matches_and_includes_and_refuses_a_partial_page() -> None:
    bundle = bundle_of(load_case("caruso2022-05"))
    key = record_key(bundle)
    assert key is not None
    provenance = {"resourceType": "Provenance", "id": key.provenance_id, "meta": {"versionId": "7"}}
    patient = {"resourceType": "Patient", "id": "5"}
    warning = {"resourceType": "OperationOutcome", "issue": []}
    searchset: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": provenance, "search": {"mode": "match"}},
            {"resource": patient, "search": {"mode": "include"}},
            {"resource": warning, "search": {"mode": "outcome"}},
        ],
    }
    answer = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [{"resource": searchset, "response": {"status": "200 OK"}}],
    }
    state = record_state(key, answer)
    assert state.version == "7" and list(state.targets) == ["Patient/5"]
    searchset["link"] = [{"relation": "next", "url": "http://x/?_getpages=1"}]
    with pytest.raises(FhirError, match="one search page"):
        record_state(key, answer)


@settings(max_examples=500, deadline=None)
@given(
    system=st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    value=st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
)
def test_conditional_url_shortcut_writes_what_the_escaping_would(system: str, value: str) -> None:
    """The literal fast path gives exactly the text the full escaping gives, for any input."""
    token = f"{system.translate(_ESCAPES)}|{value.translate(_ESCAPES)}"
    assert conditional_url("Observation", system, value) == (
        f"Observation?identifier={quote(token, safe=':/|-._~')}"
    )


_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", "$": "\\$", "|": "\\|"})
