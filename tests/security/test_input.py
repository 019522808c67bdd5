"""Rows 5 and 6 (medium): a schema-valid record answered 500; NaN, Infinity and 1e400 were
accepted (``valueQuantity.value: null`` on ``$convert``; a failed row keeping the Bundle on push).

Both are fixed in the record layer (date window in the validator; non-finite numbers refused by
the loader with their path) on the speed branch; the case-record tests flip when it is merged.
A FHIR Bundle with a non-finite number is already refused here (the fhir.resources validation
of ``POST /fhir`` refuses it) and never reaches the upstream.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from adapter.gateway.clients import Client, server_id
from tests.security.conftest import EHR_A, Gateway, record


def _far_future_record() -> bytes:
    data = record("caruso2022-02")
    data["treatments"][1]["start"] = "9999-12-20"
    data["treatments"][1].pop("end", None)
    return json.dumps(data).encode()


@pytest.mark.parametrize("path", ["/case-records/$convert", "/case-records"])
def test_a_date_out_of_the_window_is_refused_not_a_500(gateway: Gateway, path: str) -> None:
    with gateway.client() as client:
        response = client.post(path, content=_far_future_record(), headers=EHR_A.headers())
    assert response.status_code == 422, response.text
    expressions = {e for i in response.json()["issue"] for e in i.get("expression", [])}
    assert any(e.startswith("$.treatments[1]") for e in expressions), expressions


def _with_value(literal: str) -> bytes:
    data = record("caruso2022-02")
    data["observations"][0]["value"] = 1.5
    return json.dumps(data).replace('"value": 1.5', f'"value": {literal}', 1).encode()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused_with_their_path(gateway: Gateway, literal: str) -> None:
    with gateway.client() as client:
        response = client.post(
            "/case-records/$convert", content=_with_value(literal), headers=EHR_A.headers()
        )
    assert response.status_code in (400, 422), response.text
    expressions = {e for i in response.json()["issue"] for e in i.get("expression", [])}
    assert "$.observations[0].value" in expressions


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e400"])
def test_non_finite_numbers_in_a_bundle_never_reach_the_upstream(
    gateway: Gateway, hapi: httpx.Client, literal: str
) -> None:
    observation_id = server_id(
        Client(EHR_A.client, frozenset(), EHR_A.namespace), "Observation", uuid.uuid4().hex
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": observation_id,
                    "status": "final",
                    "code": {"text": "white cells"},
                    "valueQuantity": {"value": "__VALUE__"},
                },
                "request": {"method": "PUT", "url": f"Observation/{observation_id}"},
            }
        ],
    }
    body = json.dumps(bundle).replace('"__VALUE__"', literal).encode()
    with gateway.client() as client:
        response = client.post("/fhir", content=body, headers=EHR_A.headers())
    assert response.status_code in (400, 422), response.text
    assert hapi.get(f"Observation/{observation_id}").status_code in (404, 410)
