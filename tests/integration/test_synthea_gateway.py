"""Real EHR traffic through the gateway: Synthea bundles pushed to the local HAPI (issue #12).

The bundles come from Synthea 3.3.0 (``tests/synthea/synthea.sh generate oncology``, run and
cached by scripts/test.sh, which exports ``FHIR_TEST_SYNTHEA_DIR``): a hospital batch and a
practitioner batch (conditional creates on Synthea's and NPI identifiers), then five patient
transactions of plain POSTs with ``urn:uuid`` references and conditional references to the
hospital's resources. Nothing in them was written for this project.

Synthea puts one Provenance in each patient transaction. Authorization rules 6-7 refuse (403) a
client's Provenance (the gateway writes its own), so the first test shows the unmodified
bundle refused, located at that entry; the others push the bundles without it, which is
what a sender does (in Synthea: ``--exporter.fhir.excluded_resources=Provenance``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from adapter.gateway.clients import Client, server_id
from adapter.gateway.main import create_app
from adapter.mapping.context import DEFAULT_NAMESPACE
from tests.integration.test_gateway_integration import (
    SERVER_URL,
    TcpProxy,
    gateway_settings,
)

SYNTHEA_DIR = os.environ.get("FHIR_TEST_SYNTHEA_DIR")
if not SYNTHEA_DIR:
    pytest.skip(
        "FHIR_TEST_SYNTHEA_DIR is not set (scripts/test.sh sets it)", allow_module_level=True
    )

pytestmark = pytest.mark.integration

# The sending system, configured as a hospital would configure its EHR (docs/authorization.md):
# it owns Synthea's identifier system (its organisations and locations) and the NPI system
# (its practitioner directory), so its conditional writes and references on them are its own.
SYNTHEA_SYSTEM = "https://github.com/synthetichealth/synthea"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
CLIENT = Client(
    "synthea",
    frozenset({"read", "write"}),
    DEFAULT_NAMESPACE,
    identifier_systems=(SYNTHEA_SYSTEM, NPI_SYSTEM),
)
SYNTHEA_KEY = secrets.token_urlsafe(32)
HEADERS = {"Authorization": f"Bearer {SYNTHEA_KEY}", "Content-Type": "application/fhir+json"}


def clients_file(tmp_path: Path) -> str:
    """A FHIR_ADAPTER_CLIENTS file with :data:`CLIENT` and the digest of its key."""
    path = tmp_path / "clients.json"
    entry = {
        "id": CLIENT.id,
        "scopes": sorted(CLIENT.scopes),
        "namespace": CLIENT.namespace,
        "identifier_systems": list(CLIENT.identifier_systems),
        "api_keys": [f"sha256:{hashlib.sha256(SYNTHEA_KEY.encode()).hexdigest()}"],
    }
    path.write_text(json.dumps({"clients": [entry]}), encoding="utf-8")
    return str(path)


NO_CACHE = {"Cache-Control": "no-cache"}
PATIENTS_TWICE = 3  # of the set's 5: each push costs HAPI seconds (it validates every resource)


def _load(path: Path) -> dict[str, Any]:
    bundle: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return bundle


def _without_provenance(bundle: dict[str, Any]) -> dict[str, Any]:
    kept = copy.deepcopy(bundle)
    kept["entry"] = [e for e in kept["entry"] if e["resource"]["resourceType"] != "Provenance"]
    return kept


class Synthea:
    """The generated set: infrastructure batches first, then the patients."""

    def __init__(self, directory: Path) -> None:
        files = sorted((directory / "fhir").glob("*.json"))
        self.hospital = [_load(p) for p in files if p.name.startswith("hospitalInformation")]
        self.practitioners = [
            _load(p) for p in files if p.name.startswith("practitionerInformation")
        ]
        self.patients_as_generated = [
            _load(p)
            for p in files
            if not p.name.startswith(("hospitalInformation", "practitionerInformation"))
        ]
        self.patients = [_without_provenance(b) for b in self.patients_as_generated]

    def in_order(self, patients: int) -> list[dict[str, Any]]:
        """The infrastructure batches, then the first ``patients`` patient transactions."""
        return [*self.hospital, *self.practitioners, *self.patients[:patients]]


@pytest.fixture(scope="module")
def synthea() -> Synthea:
    assert SYNTHEA_DIR
    data = Synthea(Path(SYNTHEA_DIR))
    assert data.hospital and data.practitioners and len(data.patients) >= 3
    return data


@pytest.fixture(scope="module")
def hapi() -> Iterator[httpx.Client]:
    assert SERVER_URL
    with httpx.Client(base_url=SERVER_URL.rstrip("/") + "/", timeout=120.0) as client:
        yield client


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[TestClient]:
    assert SERVER_URL
    target = httpx.URL(SERVER_URL)
    proxy = TcpProxy(target.host, target.port or 80)
    proxy.start()
    # A patient transaction of ~500 entries takes HAPI several seconds on a loaded machine.
    settings = gateway_settings(
        tmp_path,
        proxy,
        sync_timeout=120.0,
        upstream_timeout=120.0,
        api_keys=(),
        clients_file=clients_file(tmp_path),
    )
    try:
        with TestClient(create_app(settings)) as client:
            yield client
    finally:
        proxy.stop()


def counts(hapi: httpx.Client, types: set[str]) -> dict[str, int]:
    found = {}
    for resource_type in sorted(types):
        response = hapi.get(resource_type, params={"_summary": "count"}, headers=NO_CACHE)
        response.raise_for_status()
        found[resource_type] = int(response.json()["total"])
    return found


def push(gateway: TestClient, bundle: dict[str, Any]) -> dict[str, Any]:
    response = gateway.post("/fhir", json=bundle, headers=HEADERS)
    assert response.status_code == 201, response.text[:2000]
    view: dict[str, Any] = response.json()
    failed = [r for r in view["references"] if not r["status"].startswith("2")]
    assert not failed, failed[:5]
    return view


def version(hapi: httpx.Client, reference: str) -> int:
    response = hapi.get(reference, headers=NO_CACHE)
    response.raise_for_status()
    return int(response.json()["meta"]["versionId"])


def types_in(bundles: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["resource"]["resourceType"] for b in bundles for e in b["entry"])


def test_synthea_bundle_as_generated_is_refused_for_its_provenance(
    gateway: TestClient, synthea: Synthea, hapi: httpx.Client
) -> None:
    bundle = synthea.patients_as_generated[0]
    [index] = [
        i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Provenance"
    ]
    before = counts(hapi, {"Patient"})
    response = gateway.post("/fhir", json=bundle, headers=HEADERS)
    assert response.status_code == 403, response.text[:2000]
    [issue] = response.json()["issue"]
    assert issue["expression"] == [f"Bundle.entry[{index}].resource.resourceType"]
    assert "audit forgery" in issue["diagnostics"]
    assert counts(hapi, {"Patient"}) == before


def test_synthea_pushed_twice_leaves_counts_and_versions_unchanged(
    gateway: TestClient, synthea: Synthea, hapi: httpx.Client
) -> None:
    pushed = synthea.in_order(PATIENTS_TWICE)
    expected = types_in(pushed)
    types = {*expected, "Provenance"}
    before = counts(hapi, types)
    first = [push(gateway, bundle) for bundle in pushed]
    after_first = counts(hapi, types)
    second = [push(gateway, bundle) for bundle in pushed]
    after_second = counts(hapi, types)

    assert after_second == after_first
    # Every patient resource is new on a fresh server (0 if this server saw them before);
    # Organization, Location and Practitioner are matched on their identifiers.
    for resource_type, number in expected.items():
        assert after_first[resource_type] - before[resource_type] in (0, number), resource_type
    # One gateway Provenance per Bundle the first time, none the second.
    assert after_first["Provenance"] - before["Provenance"] in (0, len(first))
    # The second delivery changed nothing: every resource kept its version.
    first_refs = [r["reference"] for view in first for r in view["references"]]
    second_refs = [r["reference"] for view in second for r in view["references"]]
    assert set(second_refs) <= set(first_refs)
    patients = [r for r in second_refs if r.startswith("Patient/")]
    assert len(patients) == PATIENTS_TWICE
    for reference in patients:
        assert reference.split("/")[1].startswith(f"{CLIENT.id}-")
        assert version(hapi, reference) == 1 or after_first == before  # rerun on a used server


def test_changed_observation_value_updates_one_resource_once(
    gateway: TestClient, synthea: Synthea, hapi: httpx.Client
) -> None:
    for bundle in [*synthea.hospital, *synthea.practitioners]:
        push(gateway, bundle)
    bundle = synthea.patients[1]
    push(gateway, bundle)
    [index, other] = [
        i
        for i, e in enumerate(bundle["entry"])
        if e["resource"]["resourceType"] == "Observation" and "valueQuantity" in e["resource"]
    ][:2]
    changed = copy.deepcopy(bundle)
    quantity = changed["entry"][index]["resource"]["valueQuantity"]
    # A value this run alone sends, so the content (and its Provenance) is new on any server.
    quantity["value"] = round(float(quantity["value"]) + 1 + secrets.randbelow(10**6) / 1e4, 4)
    reference = f"Observation/{server_id(CLIENT, 'Observation', bundle['entry'][index]['fullUrl'])}"
    untouched = f"Observation/{server_id(CLIENT, 'Observation', bundle['entry'][other]['fullUrl'])}"
    versions = (version(hapi, reference), version(hapi, untouched))
    provenances = counts(hapi, {"Provenance"})

    push(gateway, changed)

    observation = hapi.get(reference, headers=NO_CACHE).json()
    assert observation["valueQuantity"]["value"] == quantity["value"]
    assert version(hapi, reference) == versions[0] + 1
    assert version(hapi, untouched) == versions[1]
    # New content, so its own Provenance: exactly one more.
    assert counts(hapi, {"Provenance"})["Provenance"] == provenances["Provenance"] + 1
    push(gateway, changed)
    assert version(hapi, reference) == versions[0] + 1


def test_broken_synthea_bundles_are_422_with_entry_and_path(
    gateway: TestClient, synthea: Synthea, hapi: httpx.Client
) -> None:
    bundle = copy.deepcopy(synthea.patients[2])
    observations = [
        i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Observation"
    ]
    encounter = next(
        i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Encounter"
    )
    no_code, bad_date, dangling = observations[:3]
    del bundle["entry"][no_code]["resource"]["code"]
    bundle["entry"][bad_date]["resource"]["effectiveDateTime"] = "2020-13-45"
    bundle["entry"][dangling]["resource"]["subject"]["reference"] = "urn:uuid:not-in-this-bundle"
    before = counts(hapi, {"Patient", "Observation"})

    # References are checked while normalising, before the models: the dangling one first.
    response = gateway.post("/fhir", json=bundle, headers=HEADERS)
    assert response.status_code == 422, response.text[:2000]
    assert [i["expression"] for i in response.json()["issue"]] == [
        [f"Bundle.entry[{dangling}].resource.subject.reference"]
    ]

    bundle["entry"][dangling]["resource"]["subject"] = copy.deepcopy(
        synthea.patients[2]["entry"][dangling]["resource"]["subject"]
    )
    del bundle["entry"][encounter]["fullUrl"]
    response = gateway.post("/fhir", json=bundle, headers=HEADERS)
    assert response.status_code == 422, response.text[:2000]
    expressions = {e for i in response.json()["issue"] for e in i.get("expression", [])}
    assert f"Bundle.entry[{encounter}]" in expressions

    bundle["entry"][encounter]["fullUrl"] = synthea.patients[2]["entry"][encounter]["fullUrl"]
    response = gateway.post("/fhir", json=bundle, headers=HEADERS)
    assert response.status_code == 422, response.text[:2000]
    expressions = {e for i in response.json()["issue"] for e in i.get("expression", [])}
    assert f"Bundle.entry[{no_code}].resource.code" in expressions
    assert any(e.startswith(f"Bundle.entry[{bad_date}].resource.effective") for e in expressions)
    assert counts(hapi, {"Patient", "Observation"}) == before
