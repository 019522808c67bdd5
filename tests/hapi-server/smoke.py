#!/usr/bin/env python3
"""Smoke test of a running local HAPI FHIR server (stdlib only).

    tests/hapi-server/hapi.sh start
    python3 tests/hapi-server/smoke.py [BASE_URL]     # default http://127.0.0.1:8089/fhir
    tests/hapi-server/hapi.sh stop

Checks: metadata; a transaction of conditional creates (Patient with a US Core race
extension and an mCODE meta.profile, SNOMED Condition, LOINC Observation) succeeds and
repeating it creates nothing new; invalid resources are rejected; $validate (type and
instance level); Patient/$everything; paging through `next` links; 10 concurrent
identical conditional-create transactions store one resource each. Every run uses
fresh identifiers, so it can run against a server that already holds data.
Named smoke.py (not *_test.py) so that pytest does not collect it.
"""

from __future__ import annotations

import copy
import json
import sys
import threading
import traceback
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

BASE = (sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8089/fhir").rstrip("/")
RUN = uuid.uuid4().hex[:10]
FHIR_JSON = "application/fhir+json"


def call(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    if not url.startswith("http"):
        url = f"{BASE}/{url}"
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {"Accept": FHIR_JSON, "Cache-Control": "no-cache"}
    if data is not None:
        hdrs["Content-Type"] = FHIR_JSON
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.load(resp), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err), dict(err.headers)


def errors(outcome: dict[str, Any]) -> list[str]:
    return [
        i.get("diagnostics", "")
        for i in outcome.get("issue", [])
        if i.get("severity") in ("error", "fatal")
    ]


def case_bundle(tag: str) -> dict[str, Any]:
    uuids = [f"urn:uuid:{uuid.uuid4()}" for _ in range(3)]
    patient = {
        "resourceType": "Patient",
        "meta": {
            "profile": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-cancer-patient"]
        },
        "extension": [
            {
                "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
                "extension": [
                    {
                        "url": "ombCategory",
                        "valueCoding": {
                            "system": "urn:oid:2.16.840.1.113883.6.238",
                            "code": "2106-3",
                            "display": "White",
                        },
                    },
                    {"url": "text", "valueString": "White"},
                ],
            }
        ],
        "identifier": [{"system": "urn:example:mrn", "value": f"{tag}-mrn"}],
        "name": [{"family": f"Smoke{tag}", "given": ["Jane"]}],
        "gender": "female",
        "birthDate": "1961-04-12",
    }
    condition = {
        "resourceType": "Condition",
        "identifier": [{"system": "urn:example:cond", "value": f"{tag}-cond"}],
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "118618005"},
                {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C84.00"},
            ]
        },
        "subject": {"reference": uuids[0]},
    }
    observation = {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:example:obs", "value": f"{tag}-obs"}],
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "26464-8"}]},
        "subject": {"reference": uuids[0]},
        "valueQuantity": {"value": 7.2, "system": "http://unitsofmeasure.org", "code": "10*3/uL"},
    }
    entries = []
    for full_url, res in zip(uuids, (patient, condition, observation), strict=True):
        ident = res["identifier"][0]
        entries.append(
            {
                "fullUrl": full_url,
                "resource": res,
                "request": {
                    "method": "POST",
                    "url": res["resourceType"],
                    "ifNoneExist": f"identifier={ident['system']}|{ident['value']}",
                },
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def locations(bundle: dict[str, Any]) -> list[str]:
    return [e["response"]["location"].split("/_history")[0] for e in bundle["entry"]]


def count(query: str) -> int:
    status, body, _ = call("GET", f"{query}&_summary=count")
    assert status == 200, status
    return int(body["total"])


STATE: dict[str, Any] = {}


def t_metadata() -> None:
    status, body, _ = call("GET", "metadata")
    assert status == 200 and body["fhirVersion"] == "4.0.1", (status, body.get("fhirVersion"))


def t_transaction_conditional_create() -> None:
    bundle = case_bundle(RUN)
    status, out, _ = call("POST", BASE, bundle)
    assert status == 200, (status, errors(out))
    assert [e["response"]["status"][:3] for e in out["entry"]] == ["201"] * 3, out
    STATE["bundle"], STATE["locs"] = bundle, locations(out)
    status, again, _ = call("POST", BASE, bundle)
    assert status == 200, (status, errors(again))
    assert [e["response"]["status"][:3] for e in again["entry"]] == ["200"] * 3, again
    assert locations(again) == STATE["locs"], (locations(again), STATE["locs"])
    assert count(f"Patient?identifier=urn:example:mrn|{RUN}-mrn") == 1


def t_invalid_rejected() -> None:
    bad = copy.deepcopy(STATE["bundle"]["entry"][0]["resource"])
    bad["gender"] = "banana"
    del bad["identifier"]
    status, out, _ = call("POST", "Patient", bad)
    assert status in (400, 422) and out["resourceType"] == "OperationOutcome", status
    assert errors(out), out
    txn = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": bad, "request": {"method": "POST", "url": "Patient"}}],
    }
    status, out, _ = call("POST", BASE, txn)
    assert status in (400, 422) and errors(out), status
    status, out, _ = call("POST", "Observation", {"resourceType": "Observation", "code": {}})
    assert status in (400, 422) and errors(out), status  # status 1..1 missing


def t_validate() -> None:
    patient = STATE["bundle"]["entry"][0]["resource"]
    status, out, _ = call("POST", "Patient/$validate", patient)
    assert status == 200 and not errors(out), (status, errors(out))
    for loc in STATE["locs"]:
        status, out, _ = call("GET", f"{loc}/$validate")
        assert status == 200 and not errors(out), (loc, status, errors(out))


def t_everything() -> None:
    status, out, _ = call("GET", f"{STATE['locs'][0]}/$everything")
    assert status == 200, status
    got = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in out["entry"]}
    assert set(STATE["locs"]) <= got, (got, STATE["locs"])


def t_paging() -> None:
    family = f"Page{RUN}"
    for i in range(5):
        patient = {"resourceType": "Patient", "name": [{"family": family, "given": [str(i)]}]}
        status, _, _ = call("POST", "Patient", patient)
        assert status == 201, status
    url, ids, pages = f"{BASE}/Patient?family={family}&_count=2", [], 0
    while url and pages < 10:
        status, out, _ = call("GET", url)
        assert status == 200, status
        pages += 1
        ids += [e["resource"]["id"] for e in out.get("entry", [])]
        url = next((lnk["url"] for lnk in out.get("link", []) if lnk["relation"] == "next"), None)
    assert pages == 3 and len(set(ids)) == 5, (pages, ids)


def race(bundle: dict[str, Any], headers: dict[str, str], n: int = 10) -> list[int]:
    """POST the same transaction from n threads released at once; return the statuses."""
    statuses: list[int] = []
    barrier = threading.Barrier(n)

    def post() -> None:
        barrier.wait()
        statuses.append(call("POST", BASE, bundle, headers)[0])

    threads = [threading.Thread(target=post) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(statuses)


def t_concurrent_conditional_creates() -> None:
    for retry in (False, True):
        tag = f"{RUN}-conc{int(retry)}"
        headers = {"X-Retry-On-Version-Conflict": "retry; max-retries=10"} if retry else {}
        statuses = race(case_bundle(tag), headers)
        stored = [
            count(f"Patient?identifier=urn:example:mrn|{tag}-mrn"),
            count(f"Condition?identifier=urn:example:cond|{tag}-cond"),
            count(f"Observation?identifier=urn:example:obs|{tag}-obs"),
        ]
        print(f"    concurrent x10 (retry header: {retry}): HTTP {statuses}, stored {stored}")
        assert stored == [1, 1, 1], stored
        assert set(statuses) <= {200, 409}, statuses
        if retry:
            assert set(statuses) == {200}, statuses


TESTS: list[Callable[[], None]] = [
    t_metadata,
    t_transaction_conditional_create,
    t_invalid_rejected,
    t_validate,
    t_everything,
    t_paging,
    t_concurrent_conditional_creates,
]


def main() -> int:
    passed = failed = 0
    for test in TESTS:
        try:
            test()
            passed += 1
            print(f"PASS {test.__name__}")
        except Exception:
            failed += 1
            print(f"FAIL {test.__name__}")
            traceback.print_exc()
    print(f"smoke: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
