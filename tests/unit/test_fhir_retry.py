"""Unit tests for the retry policy and the replay-safety rules in adapter.fhir.retry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.fhir.errors import FhirTransportError
from adapter.fhir.retry import RetryController, RetryPolicy, request_is_replay_safe

BASE = "https://fhir.example.org/r4"


def _post(url: str, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Request:
    content = json.dumps(body).encode() if body is not None else b""
    return httpx.Request("POST", url, content=content, headers=headers)


def _bundle(kind: str, *requests: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"resource": {"resourceType": "Patient"}, "request": r} for r in requests],
    }


SAFE_ENTRIES = (
    {"method": "PUT", "url": "Patient/1"},
    {"method": "GET", "url": "Patient?identifier=a|1"},
    {"method": "DELETE", "url": "Observation/9"},
    {"method": "POST", "url": "Condition", "ifNoneExist": "identifier=a|2"},
)


# -- request_is_replay_safe -------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
def test_idempotent_methods_are_replay_safe(method: str) -> None:
    assert request_is_replay_safe(httpx.Request(method, f"{BASE}/Patient/1"))


def test_patch_is_not_replay_safe() -> None:
    assert not request_is_replay_safe(httpx.Request("PATCH", f"{BASE}/Patient/1", content=b"[]"))


def test_plain_post_create_is_not_replay_safe() -> None:
    assert not request_is_replay_safe(_post(f"{BASE}/Patient", {"resourceType": "Patient"}))


def test_conditional_create_is_replay_safe() -> None:
    request = _post(
        f"{BASE}/Patient", {"resourceType": "Patient"}, {"If-None-Exist": "identifier=a|1"}
    )
    assert request_is_replay_safe(request)


@pytest.mark.parametrize("path", ["Patient/_search", "Patient/$validate", "$validate"])
def test_read_only_posts_are_replay_safe(path: str) -> None:
    assert request_is_replay_safe(_post(f"{BASE}/{path}", {"resourceType": "Patient"}))


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_bundle_with_only_safe_entries_is_replay_safe(kind: str) -> None:
    request = _post(BASE, _bundle(kind, *SAFE_ENTRIES))
    assert request_is_replay_safe(request, base_url=BASE)
    assert request_is_replay_safe(request)


@pytest.mark.parametrize(
    "bad_entry",
    [
        {"method": "POST", "url": "Patient"},
        {"method": "PATCH", "url": "Patient/1"},
        {"url": "Patient/1"},
    ],
)
def test_bundle_with_one_unsafe_entry_is_not_replay_safe(bad_entry: dict[str, Any]) -> None:
    request = _post(BASE, _bundle("transaction", *SAFE_ENTRIES, bad_entry))
    assert not request_is_replay_safe(request, base_url=BASE)


def test_bundle_entry_without_request_is_not_replay_safe() -> None:
    body = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {}}]}
    assert not request_is_replay_safe(_post(BASE, body))


def test_transaction_posted_to_bundle_endpoint_is_a_create_not_a_transaction() -> None:
    request = _post(f"{BASE}/Bundle", _bundle("transaction", *SAFE_ENTRIES))
    assert not request_is_replay_safe(request)
    assert not request_is_replay_safe(request, base_url=BASE)


def test_transaction_to_a_path_other_than_the_base_is_not_replay_safe() -> None:
    request = _post(f"{BASE}/Other", _bundle("transaction", *SAFE_ENTRIES))
    assert not request_is_replay_safe(request, base_url=BASE)


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Bundle", "type": "collection", "entry": []},
        {"resourceType": "Patient"},
        [1, 2],
    ],
)
def test_non_transaction_body_at_base_is_not_replay_safe(body: Any) -> None:
    assert not request_is_replay_safe(_post(BASE, body))


def test_unparseable_or_empty_body_at_base_is_not_replay_safe() -> None:
    assert not request_is_replay_safe(httpx.Request("POST", BASE, content=b"{not json"))
    assert not request_is_replay_safe(httpx.Request("POST", BASE, content=b""))


def test_streamed_body_cannot_be_vouched_for() -> None:
    def chunks() -> Iterator[bytes]:
        yield json.dumps(_bundle("transaction", *SAFE_ENTRIES)).encode()

    assert not request_is_replay_safe(httpx.Request("POST", BASE, content=chunks()))


# -- RetryPolicy.delay --------------------------------------------------------------


def test_policy_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.backoff_base, policy.backoff_max) == (5, 0.5, 30.0)
    assert policy.jitter is True
    assert policy.retry_statuses == frozenset({429, 502, 503, 504})


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(backoff_base=-1)


def test_delay_without_jitter_is_exponential_and_capped() -> None:
    policy = RetryPolicy(jitter=False)
    delays = [policy.delay(attempt, None) for attempt in range(1, 10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_delay_survives_huge_attempt_numbers() -> None:
    assert RetryPolicy(jitter=False).delay(10_000, None) == 30.0


@given(
    attempt=st.integers(min_value=1, max_value=200),
    base=st.floats(min_value=0, max_value=100),
    cap=st.floats(min_value=0, max_value=100),
)
def test_full_jitter_stays_within_the_exponential_ceiling(
    attempt: int, base: float, cap: float
) -> None:
    policy = RetryPolicy(backoff_base=base, backoff_max=cap)
    ceiling = min(base * 2.0 ** min(attempt - 1, 62), cap)
    assert 0.0 <= policy.delay(attempt, None) <= ceiling


def test_full_jitter_actually_varies() -> None:
    policy = RetryPolicy()
    assert len({policy.delay(4, None) for _ in range(50)}) > 1


def test_retry_after_seconds_override_backoff() -> None:
    assert RetryPolicy().delay(1, "7") == 7.0
    assert RetryPolicy().delay(1, " 0 ") == 0.0


def test_retry_after_is_capped_at_backoff_max() -> None:
    assert RetryPolicy(backoff_max=30).delay(1, "3600") == 30.0


def test_retry_after_http_date_is_relative_to_now() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=12), usegmt=True)
    assert RetryPolicy().delay(1, header, now=now) == 12.0


def test_retry_after_http_date_in_the_past_means_now() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now - timedelta(minutes=5), usegmt=True)
    assert RetryPolicy().delay(3, header, now=now) == 0.0


@pytest.mark.parametrize("header", ["soon", "", "-5", "nan"])
def test_unusable_retry_after_falls_back_or_clamps(header: str) -> None:
    delay = RetryPolicy(jitter=False).delay(3, header)
    assert delay == (0.0 if header == "-5" else 2.0)


# -- RetryController ---------------------------------------------------------------


def _controller(
    request: httpx.Request, *, max_attempts: int = 3, idempotent: bool | None = None
) -> RetryController:
    policy = RetryPolicy(max_attempts=max_attempts, jitter=False)
    return RetryController(policy, request, idempotent=idempotent, base_url=BASE)


def _plain_create() -> httpx.Request:
    return _post(f"{BASE}/Patient", {"resourceType": "Patient"})


def test_429_is_retried_even_for_a_plain_create() -> None:
    controller = _controller(_plain_create())
    assert controller.after_response(httpx.Response(429)) == 0.5


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_not_retried_for_a_plain_create(status: int) -> None:
    assert _controller(_plain_create()).after_response(httpx.Response(status)) is None


def test_gateway_errors_retried_for_get() -> None:
    controller = _controller(httpx.Request("GET", f"{BASE}/Patient/1"))
    assert controller.after_response(httpx.Response(503)) == 0.5
    assert controller.after_response(httpx.Response(503)) == 1.0
    assert controller.after_response(httpx.Response(503)) is None  # third attempt was the last


@pytest.mark.parametrize("status", [200, 201, 400, 404, 500])
def test_other_statuses_are_final(status: int) -> None:
    controller = _controller(httpx.Request("GET", f"{BASE}/Patient/1"))
    assert controller.after_response(httpx.Response(status)) is None


def test_caller_can_force_idempotent_or_not() -> None:
    forced = _controller(_plain_create(), idempotent=True)
    assert forced.after_response(httpx.Response(503)) == 0.5
    refused = _controller(httpx.Request("GET", f"{BASE}/Patient/1"), idempotent=False)
    assert refused.after_response(httpx.Response(503)) is None


@pytest.mark.parametrize("exc_type", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
def test_not_sent_errors_are_retried_even_for_a_plain_create(
    exc_type: type[httpx.TransportError],
) -> None:
    controller = _controller(_plain_create())
    assert controller.after_exception(exc_type("boom")) == 0.5


@pytest.mark.parametrize(
    "exc_type",
    [httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError],
)
def test_maybe_applied_errors_are_not_retried_for_a_plain_create(
    exc_type: type[httpx.TransportError],
) -> None:
    controller = _controller(_plain_create())
    with pytest.raises(FhirTransportError) as info:
        controller.after_exception(exc_type("boom"))
    assert info.value.attempts == 1
    assert isinstance(info.value.cause, exc_type)
    assert "not replay-safe" in str(info.value)


def test_maybe_applied_errors_are_retried_for_get() -> None:
    controller = _controller(httpx.Request("GET", f"{BASE}/Patient/1"))
    assert controller.after_exception(httpx.ReadTimeout("slow")) == 0.5


def test_non_transient_transport_errors_are_not_retried() -> None:
    controller = _controller(httpx.Request("GET", f"{BASE}/Patient/1"))
    with pytest.raises(FhirTransportError, match="not transient"):
        controller.after_exception(httpx.UnsupportedProtocol("ftp?"))


def test_transport_error_after_last_attempt_names_url_attempts_and_cause() -> None:
    controller = _controller(httpx.Request("GET", f"{BASE}/Patient?name=Smith"), max_attempts=2)
    controller.after_exception(httpx.ConnectError("refused"))
    with pytest.raises(FhirTransportError) as info:
        controller.after_exception(httpx.ConnectError("refused"))
    message = str(info.value)
    assert f"GET {BASE}/Patient?name=…" in message
    assert "Smith" not in message  # query values may be PHI
    assert "2 attempts" in message
    assert "ConnectError: refused" in message
    assert isinstance(info.value.__cause__, httpx.ConnectError)
