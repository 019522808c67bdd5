"""Unit tests for FhirClient / AsyncFhirClient against respx-mocked servers (no network)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx

from adapter.fhir import (
    AsyncFhirClient,
    FhirClient,
    FhirError,
    FhirTransportError,
    OperationOutcomeError,
    RetryPolicy,
    outcome_from_response,
)

BASE = "https://fhir.example.org/r4"
FHIR_JSON = "application/fhir+json"
PATIENT = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "42"}]}


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock_router:
        yield mock_router


def fhir(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"Content-Type": FHIR_JSON, **(headers or {})},
    )


def outcome(code: str, diagnostics: str, expression: list[str] | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression is not None:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def make_client(policy: RetryPolicy | None = None, **kwargs: Any) -> tuple[FhirClient, list[float]]:
    sleeps: list[float] = []
    client = FhirClient(
        BASE, retry=policy or RetryPolicy(jitter=False), sleep=sleeps.append, **kwargs
    )
    return client, sleeps


def make_async_client(
    policy: RetryPolicy | None = None,
) -> tuple[AsyncFhirClient, list[float]]:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    client = AsyncFhirClient(BASE, retry=policy or RetryPolicy(jitter=False), sleep=fake_sleep)
    return client, sleeps


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content)


# -- paging --------------------------------------------------------------------------


def _searchset(ids: list[str], next_url: str | None, extra: list[Any] | None = None) -> Any:
    links = [{"relation": "self", "url": f"{BASE}/Patient"}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    entries = [
        {"resource": {"resourceType": "Patient", "id": i}, "search": {"mode": "match"}} for i in ids
    ]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": entries + (extra or []),
    }


PAGE2 = f"{BASE}?_getpages=abc&_getpagesoffset=2"
PAGE3 = f"{BASE}/Patient?family=Doe&_page=3"


def _mount_three_pages(router: respx.MockRouter) -> list[httpx.Request]:
    """Page 1 links absolutely to page 2; page 2 links to page 3 with a relative URL."""
    seen: list[httpx.Request] = []
    include = {
        "resource": {"resourceType": "Organization", "id": "org"},
        "search": {"mode": "include"},
    }
    warning = {
        "resource": outcome("informational", "search truncated"),
        "search": {"mode": "outcome"},
    }
    pages = {
        f"{BASE}/Patient?family=Doe&_count=2": _searchset(["p1", "p2"], PAGE2, [warning]),
        PAGE2: _searchset(["p3", "p4"], "Patient?family=Doe&_page=3", [include]),
        PAGE3: _searchset(["p5"], None),
    }

    def serve(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return fhir(200, pages[str(request.url)])

    router.get(url__startswith=BASE).mock(side_effect=serve)
    return seen


EXPECTED_IDS = ["p1", "p2", "p3", "p4", "org", "p5"]


def test_search_follows_next_across_three_pages(router: respx.MockRouter) -> None:
    seen = _mount_three_pages(router)
    client, _ = make_client()
    with client:
        resources = list(client.search("Patient", {"family": "Doe", "_count": 2}))
    assert [r["id"] for r in resources] == EXPECTED_IDS
    assert [str(r.url) for r in seen][1:] == [PAGE2, PAGE3]
    assert all(r.headers["Accept"] == FHIR_JSON for r in seen)


def test_async_search_follows_next_across_three_pages(router: respx.MockRouter) -> None:
    seen = _mount_three_pages(router)

    async def run() -> list[dict[str, Any]]:
        client, _ = make_async_client()
        async with client:
            return [r async for r in client.search("Patient", {"family": "Doe", "_count": 2})]

    assert [r["id"] for r in asyncio.run(run())] == EXPECTED_IDS
    assert len(seen) == 3


def test_search_bundles_yields_raw_pages_with_no_cache(router: respx.MockRouter) -> None:
    seen = _mount_three_pages(router)
    client, _ = make_client()
    bundles = list(
        client.search_bundles("Patient", [("family", "Doe"), ("_count", 2)], no_cache=True)
    )
    assert [b["type"] for b in bundles] == ["searchset"] * 3
    assert len(bundles[0]["entry"]) == 3  # raw page keeps the outcome entry
    assert [r.headers.get("Cache-Control") for r in seen] == ["no-cache"] * 3


def test_async_search_bundles(router: respx.MockRouter) -> None:
    _mount_three_pages(router)

    async def run() -> int:
        client, _ = make_async_client()
        async with client:
            pages = client.search_bundles("Patient", {"family": "Doe", "_count": 2})
            return len([b async for b in pages])

    assert asyncio.run(run()) == 3


def test_search_without_no_cache_sends_no_cache_control(router: respx.MockRouter) -> None:
    route = router.get(f"{BASE}/Patient").mock(return_value=fhir(200, _searchset([], None)))
    client, _ = make_client()
    assert list(client.search("Patient", None)) == []
    assert "Cache-Control" not in route.calls.last.request.headers


def test_search_params_keep_repeats_and_render_fhir_booleans(router: respx.MockRouter) -> None:
    route = router.get(url__startswith=f"{BASE}/Observation").mock(
        return_value=fhir(200, _searchset([], None))
    )
    client, _ = make_client()
    list(client.search("Observation", {"date": ["ge2020", "le2021"], "_summary": False}))
    params = route.calls.last.request.url.params
    assert params.get_list("date") == ["ge2020", "le2021"]
    assert params["_summary"] == "false"


def test_next_link_on_a_foreign_origin_is_pinned_to_the_base(router: respx.MockRouter) -> None:
    foreign_next = "http://hapi-internal:8080/r4?_getpages=xyz"
    router.get(f"{BASE}/Patient").mock(return_value=fhir(200, _searchset(["a"], foreign_next)))
    pinned = router.get(f"{BASE}?_getpages=xyz").mock(
        return_value=fhir(200, _searchset(["b"], None))
    )
    client, _ = make_client()
    assert [r["id"] for r in client.search("Patient", {})] == ["a", "b"]
    assert pinned.call_count == 1


def test_paging_loop_is_detected(router: respx.MockRouter) -> None:
    router.get(f"{BASE}/Patient").mock(return_value=fhir(200, _searchset(["a"], PAGE2)))
    router.get(PAGE2).mock(return_value=fhir(200, _searchset(["b"], PAGE2)))
    client, _ = make_client()
    with pytest.raises(FhirError, match="paging loop"):
        list(client.search("Patient", {}))


def test_everything_follows_next(router: respx.MockRouter) -> None:
    first = router.get(f"{BASE}/Patient/p1/$everything").mock(
        return_value=fhir(200, _searchset(["p1"], PAGE2))
    )
    router.get(PAGE2).mock(return_value=fhir(200, _searchset(["x"], None)))
    client, _ = make_client()
    assert [r["id"] for r in client.everything("p1")] == ["p1", "x"]
    assert first.call_count == 1


def test_async_everything_follows_next(router: respx.MockRouter) -> None:
    router.get(f"{BASE}/Patient/p1/$everything").mock(
        return_value=fhir(200, _searchset(["p1"], PAGE2))
    )
    router.get(PAGE2).mock(return_value=fhir(200, _searchset(["x"], None)))

    async def run() -> list[str]:
        client, _ = make_async_client()
        async with client:
            return [r["id"] async for r in client.everything("p1")]

    assert asyncio.run(run()) == ["p1", "x"]


# -- simple interactions ----------------------------------------------------------


def test_capabilities_and_read(router: respx.MockRouter) -> None:
    router.get(f"{BASE}/metadata").mock(
        return_value=fhir(200, {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"})
    )
    read = router.get(f"{BASE}/Patient/p-1.a").mock(
        return_value=fhir(200, {"resourceType": "Patient", "id": "p-1.a"})
    )
    client, _ = make_client()
    assert client.capabilities()["fhirVersion"] == "4.0.1"
    assert client.read("Patient", "p-1.a")["id"] == "p-1.a"
    assert read.calls.last.request.headers["Accept"] == FHIR_JSON


@pytest.mark.parametrize(
    ("resource_type", "resource_id"),
    [("Patient", "../metadata"), ("Patient", ".."), ("patient", "1"), ("Patient/x", "1")],
)
def test_read_rejects_path_injection(resource_type: str, resource_id: str) -> None:
    client, _ = make_client()
    with pytest.raises(ValueError, match="invalid FHIR"):
        client.read(resource_type, resource_id)


def test_create_sends_fhir_json_and_conditional_header(router: respx.MockRouter) -> None:
    route = router.post(f"{BASE}/Patient").mock(return_value=fhir(201, {**PATIENT, "id": "new"}))
    client, _ = make_client()
    created = client.create(PATIENT, if_none_exist="?identifier=urn:mrn|42")
    request = route.calls.last.request
    assert created["id"] == "new"
    assert request.headers["Content-Type"] == FHIR_JSON
    assert request.headers["Accept"] == FHIR_JSON
    assert request.headers["If-None-Exist"] == "identifier=urn:mrn|42"
    assert body_of(request) == PATIENT


def test_create_without_body_falls_back_to_location(router: respx.MockRouter) -> None:
    router.post(f"{BASE}/Patient").mock(
        return_value=httpx.Response(201, headers={"Location": f"{BASE}/Patient/77/_history/3"})
    )
    client, _ = make_client()
    assert client.create(PATIENT) == {
        "resourceType": "Patient",
        "id": "77",
        "meta": {"versionId": "3"},
    }


def test_update_puts_to_type_and_id(router: respx.MockRouter) -> None:
    route = router.put(f"{BASE}/Patient/abc").mock(return_value=fhir(200, {**PATIENT, "id": "abc"}))
    client, _ = make_client()
    assert client.update({**PATIENT, "id": "abc"})["id"] == "abc"
    assert route.call_count == 1
    with pytest.raises(ValueError, match="id"):
        client.update(PATIENT)


def test_transaction_posts_to_base_with_a_long_read_timeout(router: respx.MockRouter) -> None:
    route = router.post(BASE).mock(
        return_value=fhir(200, {"resourceType": "Bundle", "type": "transaction-response"})
    )
    client, _ = make_client(timeout=5.0)
    bundle = {"resourceType": "Bundle", "entry": []}
    assert client.transaction(bundle)["type"] == "transaction-response"
    request = route.calls.last.request
    assert body_of(request)["type"] == "transaction"
    assert request.extensions["timeout"]["read"] == 60.0
    assert request.extensions["timeout"]["connect"] == 5.0
    with pytest.raises(ValueError, match="expected 'transaction'"):
        client.transaction({"resourceType": "Bundle", "type": "batch"})


def test_batch_posts_a_batch_bundle(router: respx.MockRouter) -> None:
    route = router.post(BASE).mock(
        return_value=fhir(200, {"resourceType": "Bundle", "type": "batch-response"})
    )
    client, _ = make_client()
    assert client.batch({"resourceType": "Bundle", "type": "batch"})["type"] == "batch-response"
    assert body_of(route.calls.last.request)["type"] == "batch"


def test_default_timeouts() -> None:
    client, _ = make_client()
    request = client._http.build_request("GET", f"{BASE}/metadata")
    assert request.extensions["timeout"] == {
        "connect": 10.0,
        "read": 30.0,
        "write": 30.0,
        "pool": 30.0,
    }


def test_async_create_update_read_capabilities(router: respx.MockRouter) -> None:
    router.post(f"{BASE}/Patient").mock(return_value=fhir(201, {**PATIENT, "id": "n"}))
    router.put(f"{BASE}/Patient/n").mock(return_value=fhir(200, {**PATIENT, "id": "n"}))
    router.get(f"{BASE}/Patient/n").mock(return_value=fhir(200, {**PATIENT, "id": "n"}))
    router.get(f"{BASE}/metadata").mock(return_value=fhir(200, {"fhirVersion": "4.0.1"}))
    router.post(BASE).mock(return_value=fhir(200, {"type": "batch-response"}))

    async def run() -> list[Any]:
        client, _ = make_async_client()
        async with client:
            return [
                (await client.create(PATIENT))["id"],
                (await client.update({**PATIENT, "id": "n"}))["id"],
                (await client.read("Patient", "n"))["id"],
                (await client.capabilities())["fhirVersion"],
                (await client.batch({"resourceType": "Bundle", "type": "batch"}))["type"],
            ]

    assert asyncio.run(run()) == ["n", "n", "n", "4.0.1", "batch-response"]


# -- retries ---------------------------------------------------------------------------


def test_429_then_200_is_retried_even_for_a_plain_create(router: respx.MockRouter) -> None:
    route = router.post(f"{BASE}/Patient").mock(
        side_effect=[fhir(429, outcome("throttled", "slow down")), fhir(201, {"id": "1"})]
    )
    client, sleeps = make_client()
    assert client.create(PATIENT)["id"] == "1"
    assert route.call_count == 2
    assert sleeps == [0.5]


def test_503_on_get_is_retried(router: respx.MockRouter) -> None:
    route = router.get(f"{BASE}/Patient/1").mock(
        side_effect=[httpx.Response(503), httpx.Response(503), fhir(200, {"id": "1"})]
    )
    client, sleeps = make_client()
    assert client.read("Patient", "1")["id"] == "1"
    assert route.call_count == 3
    assert sleeps == [0.5, 1.0]


def test_503_on_plain_create_is_not_retried(router: respx.MockRouter) -> None:
    route = router.post(f"{BASE}/Patient").mock(
        side_effect=[httpx.Response(503), fhir(201, {"id": "dup"})]
    )
    client, sleeps = make_client()
    with pytest.raises(OperationOutcomeError) as info:
        client.create(PATIENT)
    assert info.value.status_code == 503
    assert route.call_count == 1
    assert sleeps == []


def test_503_on_plain_create_is_retried_when_caller_forces_idempotent(
    router: respx.MockRouter,
) -> None:
    route = router.post(f"{BASE}/Patient").mock(
        side_effect=[httpx.Response(503), fhir(201, {"id": "1"})]
    )
    client, _ = make_client()
    assert client.create(PATIENT, idempotent=True)["id"] == "1"
    assert route.call_count == 2


def test_503_on_conditional_create_is_retried(router: respx.MockRouter) -> None:
    route = router.post(f"{BASE}/Patient").mock(
        side_effect=[httpx.Response(503), fhir(200, {"id": "existing"})]
    )
    client, sleeps = make_client()
    assert client.create(PATIENT, if_none_exist="identifier=urn:mrn|42")["id"] == "existing"
    assert route.call_count == 2
    assert sleeps == [0.5]
    assert all(c.request.headers["If-None-Exist"] for c in route.calls)


def _transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": PATIENT, "request": request} for request in entries],
    }


def test_502_on_transaction_of_conditional_creates_is_retried(router: respx.MockRouter) -> None:
    route = router.post(BASE).mock(
        side_effect=[httpx.Response(502), fhir(200, {"type": "transaction-response"})]
    )
    client, sleeps = make_client()
    bundle = _transaction(
        {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|42"},
        {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|43"},
    )
    assert client.transaction(bundle)["type"] == "transaction-response"
    assert route.call_count == 2
    assert sleeps == [0.5]


def test_502_on_transaction_with_a_plain_post_is_not_retried(router: respx.MockRouter) -> None:
    route = router.post(BASE).mock(
        side_effect=[httpx.Response(502), fhir(200, {"type": "transaction-response"})]
    )
    client, sleeps = make_client()
    bundle = _transaction(
        {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|42"},
        {"method": "POST", "url": "Patient"},
    )
    with pytest.raises(OperationOutcomeError) as info:
        client.transaction(bundle)
    assert info.value.status_code == 502
    assert route.call_count == 1
    assert sleeps == []


def test_connect_error_is_retried_then_raises_transport_error(router: respx.MockRouter) -> None:
    route = router.post(f"{BASE}/Patient").mock(side_effect=httpx.ConnectError("refused"))
    client, sleeps = make_client(RetryPolicy(max_attempts=3, jitter=False))
    with pytest.raises(FhirTransportError) as info:
        client.create(PATIENT)  # even a plain create: the request never left
    assert route.call_count == 3
    assert sleeps == [0.5, 1.0]
    assert info.value.attempts == 3
    message = str(info.value)
    assert f"{BASE}/Patient" in message
    assert "3 attempts" in message
    assert "ConnectError" in message and "refused" in message


def test_connect_error_then_success(router: respx.MockRouter) -> None:
    route = router.get(f"{BASE}/Patient/1").mock(
        side_effect=[httpx.ConnectError("refused"), fhir(200, {"id": "1"})]
    )
    client, sleeps = make_client()
    assert client.read("Patient", "1")["id"] == "1"
    assert route.call_count == 2
    assert sleeps == [0.5]


def test_read_timeout_on_plain_post_is_not_retried(router: respx.MockRouter) -> None:
    route = router.post(f"{BASE}/Patient").mock(side_effect=httpx.ReadTimeout("slow"))
    client, sleeps = make_client()
    with pytest.raises(FhirTransportError) as info:
        client.create(PATIENT)
    assert route.call_count == 1
    assert sleeps == []
    assert info.value.attempts == 1
    assert isinstance(info.value.cause, httpx.ReadTimeout)


def test_read_timeout_on_get_is_retried(router: respx.MockRouter) -> None:
    route = router.get(f"{BASE}/Patient/1").mock(
        side_effect=[httpx.ReadTimeout("slow"), fhir(200, {"id": "1"})]
    )
    client, _ = make_client()
    assert client.read("Patient", "1")["id"] == "1"
    assert route.call_count == 2


def test_retries_exhausted_on_status_raise_the_last_outcome(router: respx.MockRouter) -> None:
    route = router.get(f"{BASE}/Patient/1").mock(
        return_value=fhir(503, outcome("transient", "maintenance"))
    )
    client, sleeps = make_client(RetryPolicy(max_attempts=2, jitter=False))
    with pytest.raises(OperationOutcomeError, match="maintenance"):
        client.read("Patient", "1")
    assert route.call_count == 2
    assert sleeps == [0.5]


def test_retry_after_seconds_is_honoured(router: respx.MockRouter) -> None:
    router.get(f"{BASE}/Patient/1").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "7"}), fhir(200, {"id": "1"})]
    )
    client, sleeps = make_client()
    client.read("Patient", "1")
    assert sleeps == [7.0]


def test_retry_after_http_date_is_honoured(router: respx.MockRouter) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    router.get(f"{BASE}/Patient/1").mock(
        side_effect=[httpx.Response(503, headers={"Retry-After": when}), fhir(200, {"id": "1"})]
    )
    client, sleeps = make_client()
    client.read("Patient", "1")
    assert len(sleeps) == 1
    assert 17.0 <= sleeps[0] <= 20.0


def test_backoff_is_bounded_by_backoff_max(router: respx.MockRouter) -> None:
    router.get(f"{BASE}/Patient/1").mock(
        side_effect=[
            httpx.ConnectError("down"),
            httpx.ConnectError("down"),
            httpx.ConnectError("down"),
            httpx.Response(503, headers={"Retry-After": "3600"}),
            fhir(200, {"id": "1"}),
        ]
    )
    policy = RetryPolicy(max_attempts=5, backoff_base=4.0, backoff_max=5.0, jitter=False)
    client, sleeps = make_client(policy)
    client.read("Patient", "1")
    assert sleeps == [4.0, 5.0, 5.0, 5.0]


def test_jittered_backoff_is_bounded_by_backoff_max(router: respx.MockRouter) -> None:
    router.get(f"{BASE}/Patient/1").mock(side_effect=httpx.ConnectError("down"))
    policy = RetryPolicy(max_attempts=8, backoff_base=1.0, backoff_max=2.0)
    client, sleeps = make_client(policy)
    with pytest.raises(FhirTransportError):
        client.read("Patient", "1")
    assert len(sleeps) == 7
    assert all(0.0 <= s <= 2.0 for s in sleeps)


def test_async_retries_share_the_sync_rules(router: respx.MockRouter) -> None:
    get_route = router.get(f"{BASE}/Patient/1").mock(
        side_effect=[httpx.Response(503, headers={"Retry-After": "3"}), fhir(200, {"id": "1"})]
    )
    post_route = router.post(f"{BASE}/Patient").mock(side_effect=[httpx.Response(503)])
    timeout_route = router.post(f"{BASE}/Observation").mock(side_effect=httpx.ReadTimeout("x"))

    async def run() -> list[float]:
        client, sleeps = make_async_client()
        async with client:
            assert (await client.read("Patient", "1"))["id"] == "1"
            with pytest.raises(OperationOutcomeError):
                await client.create(PATIENT)
            with pytest.raises(FhirTransportError):
                await client.create({"resourceType": "Observation"})
        return sleeps

    assert asyncio.run(run()) == [3.0]
    assert (get_route.call_count, post_route.call_count, timeout_route.call_count) == (2, 1, 1)


def test_async_connect_error_exhausts_attempts(router: respx.MockRouter) -> None:
    route = router.get(f"{BASE}/metadata").mock(side_effect=httpx.ConnectError("refused"))

    async def run() -> list[float]:
        client, sleeps = make_async_client(RetryPolicy(max_attempts=3, jitter=False))
        async with client:
            with pytest.raises(FhirTransportError, match="3 attempts"):
                await client.capabilities()
        return sleeps

    assert asyncio.run(run()) == [0.5, 1.0]
    assert route.call_count == 3


# -- error mapping ---------------------------------------------------------------------


def test_operation_outcome_body_maps_to_issues(router: respx.MockRouter) -> None:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "required",
                "diagnostics": "Patient.gender: minimum required = 1",
                "expression": ["Patient.gender"],
            },
            {
                "severity": "warning",
                "code": "code-invalid",
                "details": {"text": "Unknown stage code"},
                "location": ["Condition.stage[0]"],
            },
        ],
    }
    router.post(f"{BASE}/Patient").mock(return_value=fhir(422, body))
    client, _ = make_client()
    with pytest.raises(OperationOutcomeError) as info:
        client.create(PATIENT)
    error = info.value
    assert error.status_code == 422
    assert error.outcome == body
    assert [(i.severity, i.code) for i in error.issues] == [
        ("error", "required"),
        ("warning", "code-invalid"),
    ]
    assert error.issues[0].expression == ["Patient.gender"]
    assert error.issues[1].expression == ["Condition.stage[0]"]
    assert error.issues[1].diagnostics == "Unknown stage code"
    text = str(error)
    assert "HTTP 422" in text
    assert f"POST {BASE}/Patient" in text
    assert "required" in text and "code-invalid" in text
    assert "Patient.gender: minimum required = 1" in text
    assert "Condition.stage[0]" in text
    assert "unknown error" not in text.lower()


def test_html_500_body_is_synthesized_into_an_outcome(router: respx.MockRouter) -> None:
    html = (
        "<html><head><style>body{color:red}</style><title>Oops</title></head>"
        "<body><h1>Internal Server Error</h1><p>NullPointerException in   handler</p>"
        "</body></html>"
    )
    router.get(f"{BASE}/Patient/1").mock(
        return_value=httpx.Response(500, text=html, headers={"Content-Type": "text/html"})
    )
    client, _ = make_client()
    with pytest.raises(OperationOutcomeError) as info:
        client.read("Patient", "1")
    error = info.value
    assert error.status_code == 500
    assert error.outcome["resourceType"] == "OperationOutcome"
    [issue] = error.issues
    assert issue.code == "exception"
    assert issue.diagnostics is not None
    assert "Internal Server Error" in issue.diagnostics
    assert "NullPointerException in handler" in issue.diagnostics
    assert "<h1>" not in issue.diagnostics and "color:red" not in issue.diagnostics
    assert "HTTP 500" in str(error) and "NullPointerException" in str(error)


def test_non_fhir_gateway_error_is_marked_transient(router: respx.MockRouter) -> None:
    router.get(f"{BASE}/Patient/1").mock(return_value=httpx.Response(504, text="upstream timeout"))
    client, _ = make_client(RetryPolicy(max_attempts=1))
    with pytest.raises(OperationOutcomeError) as info:
        client.read("Patient", "1")
    assert info.value.issues[0].code == "transient"
    assert "upstream timeout" in str(info.value)


@pytest.mark.parametrize(
    ("status", "code"), [(401, "security"), (404, "not-found"), (409, "exception")]
)
def test_synthesized_codes_and_empty_bodies(status: int, code: str) -> None:
    request = httpx.Request("GET", f"{BASE}/Patient/1")
    error = outcome_from_response(httpx.Response(status, request=request))
    assert error.issues[0].code == code
    assert "empty body" in str(error)


def test_outcome_from_response_without_request() -> None:
    error = outcome_from_response(fhir(400, outcome("invalid", "bad json")))
    assert str(error) == "HTTP 400: error/invalid: bad json"


def test_outcome_with_no_issues_still_explains_itself() -> None:
    error = outcome_from_response(fhir(400, {"resourceType": "OperationOutcome"}))
    assert "HTTP 400" in str(error)
    assert "without issues" in str(error)


def test_invalid_json_on_success_raises_fhir_error(router: respx.MockRouter) -> None:
    router.get(f"{BASE}/Patient/1").mock(return_value=httpx.Response(200, text="<html>"))
    client, _ = make_client()
    with pytest.raises(FhirError, match="not valid JSON"):
        client.read("Patient", "1")


# -- $validate ---------------------------------------------------------------------


VALIDATION_OUTCOME = outcome("invariant", "mf-stage-1: stage requires T", ["Condition.stage"])


@pytest.mark.parametrize("status", [200, 400, 412, 422])
def test_validate_returns_the_outcome_instead_of_raising(
    router: respx.MockRouter, status: int
) -> None:
    route = router.post(f"{BASE}/Condition/$validate").mock(
        return_value=fhir(status, VALIDATION_OUTCOME)
    )
    client, _ = make_client()
    result = client.validate({"resourceType": "Condition"})
    assert result == VALIDATION_OUTCOME
    assert body_of(route.calls.last.request) == {"resourceType": "Condition"}


def test_validate_with_mode_and_profile_sends_parameters(router: respx.MockRouter) -> None:
    route = router.post(f"{BASE}/Condition/$validate").mock(
        return_value=fhir(200, VALIDATION_OUTCOME)
    )
    client, _ = make_client()
    profile = "http://example.org/StructureDefinition/mf-condition"
    client.validate({"resourceType": "Condition"}, mode="create", profile=profile)
    assert body_of(route.calls.last.request) == {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": {"resourceType": "Condition"}},
            {"name": "mode", "valueCode": "create"},
            {"name": "profile", "valueUri": profile},
        ],
    }


def test_validate_unwraps_a_parameters_return(router: respx.MockRouter) -> None:
    wrapped = {
        "resourceType": "Parameters",
        "parameter": [{"name": "return", "resource": VALIDATION_OUTCOME}],
    }
    router.post(f"{BASE}/Condition/$validate").mock(return_value=fhir(200, wrapped))
    client, _ = make_client()
    assert client.validate({"resourceType": "Condition"}) == VALIDATION_OUTCOME


def test_validate_server_failure_still_raises(router: respx.MockRouter) -> None:
    router.post(f"{BASE}/Condition/$validate").mock(
        return_value=fhir(500, outcome("exception", "validator crashed"))
    )
    client, _ = make_client()
    with pytest.raises(OperationOutcomeError, match="validator crashed"):
        client.validate({"resourceType": "Condition"})


def test_validate_is_retried_because_it_is_read_only(router: respx.MockRouter) -> None:
    route = router.post(f"{BASE}/Condition/$validate").mock(
        side_effect=[httpx.Response(503), fhir(200, VALIDATION_OUTCOME)]
    )
    client, _ = make_client()
    assert client.validate({"resourceType": "Condition"}) == VALIDATION_OUTCOME
    assert route.call_count == 2


def test_async_validate_returns_outcome_on_412(router: respx.MockRouter) -> None:
    router.post(f"{BASE}/Condition/$validate").mock(return_value=fhir(412, VALIDATION_OUTCOME))

    async def run() -> dict[str, Any]:
        client, _ = make_async_client()
        async with client:
            return await client.validate({"resourceType": "Condition"})

    assert asyncio.run(run()) == VALIDATION_OUTCOME


# -- construction ------------------------------------------------------------------


@pytest.mark.parametrize("base", ["fhir.example.org", "ftp://fhir.example.org/r4", "/r4"])
def test_base_url_must_be_absolute_http(base: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        FhirClient(base)


def test_custom_headers_and_transport_are_used() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return fhir(200, {"resourceType": "CapabilityStatement"})

    factory: Callable[..., FhirClient] = FhirClient
    with factory(
        BASE + "/", headers={"X-Tenant": "onco"}, transport=httpx.MockTransport(handler)
    ) as client:
        client.capabilities()
    assert str(seen[0].url) == f"{BASE}/metadata"
    assert seen[0].headers["X-Tenant"] == "onco"
    assert seen[0].headers["User-Agent"].startswith("fhir-oncology-adapter/")
