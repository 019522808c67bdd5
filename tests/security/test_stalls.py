"""Row 1 (high): one request froze the whole gateway.

Reproduced: the issue's escaped-quote body (a quadratic regular expression in the record loader,
run on the event loop: 400 after ~9 s, /healthz waiting as long), and a record with 40,000 bad
observations (a 9.9 MB 422 listing 40,000 issues after 8.6 s). Fixed: bodies are processed in
worker processes, so /healthz keeps answering while 5 MB hostile bodies are processed; error
lists are capped with a count of the rest. The record loader's own linear-time fix is on the
speed branch (marked below).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from adapter.gateway.clients import Client, server_id
from tests.security.conftest import EHR_A, Gateway, gateway_env, record

CONVERT = "/case-records/$convert"
QUOTES_40K = ('{"a":"' + '\\"' * 20000).encode()  # the issue's reproduction, verbatim
HOSTILE_BYTES = 5 * 1024 * 1024 - 1024


def quote_body(size: int = HOSTILE_BYTES) -> bytes:
    """An unterminated string of escaped quotes: quadratic for the old nesting check."""
    return ('{"a":"' + '\\"' * ((size - 6) // 2)).encode()


def deep_body(size: int = HOSTILE_BYTES) -> bytes:
    """Brackets nested a million levels deep (refused by the nesting guard)."""
    return b"[" * (size // 2) + b"]" * (size // 2)


OWN_OBSERVATION = server_id(Client(EHR_A.client, frozenset(), EHR_A.namespace), "Observation", "1")


def bad_bundle(size: int = HOSTILE_BYTES) -> bytes:
    """A transaction of 1,000 entries, each full of invalid elements, about ``size`` bytes."""
    filler = "x" * ((size // 1000) - 300)
    entry = {
        "resource": {"resourceType": "Observation", "status": 7, "valueString": filler},
        "request": {"method": "PUT", "url": f"Observation/{OWN_OBSERVATION}"},
    }
    return json.dumps(
        {"resourceType": "Bundle", "type": "transaction", "entry": [entry] * 1000}
    ).encode()


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway of its own: hostile bodies occupy its workers until their deadline."""
    tmp = tmp_path_factory.mktemp("stalls")
    env = gateway_env(tmp, FHIR_ADAPTER_CPU_TIMEOUT="20", FHIR_ADAPTER_CREDENTIAL_RATE="0")
    process = Gateway(env, tmp / "gateway.log").start()
    try:
        yield process
    finally:
        process.stop()


def _post_in_background(
    base: str, path: str, body: bytes
) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def post() -> None:
        started = time.perf_counter()
        try:
            response = httpx.post(
                base + path, content=body, headers=EHR_A.headers("application/json"), timeout=60
            )
            result["status"] = response.status_code
        except httpx.HTTPError as exc:
            result["error"] = type(exc).__name__
        result["seconds"] = time.perf_counter() - started

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread, result


def test_healthz_answers_while_5mb_hostile_bodies_are_processed(isolated: Gateway) -> None:
    """The figure in the report comes from bench/bench_hostile.py; this asserts the property
    with a margin wide enough for a loaded CI machine, yet a blocked loop (the old gateway
    waited the whole ~9 s, and a 5 MB body takes minutes there) fails it."""
    with isolated.client(timeout=30) as client:
        baseline = []
        for _ in range(20):
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            baseline.append(time.perf_counter() - started)
        posts = [
            _post_in_background(isolated.base, CONVERT, quote_body()),
            _post_in_background(isolated.base, CONVERT, deep_body()),
            _post_in_background(isolated.base, "/fhir", bad_bundle()),
        ]
        time.sleep(0.5)  # the bodies are uploaded and being worked on
        latencies = []
        window = time.monotonic() + 8
        while time.monotonic() < window:
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)
    median = statistics.median(latencies)
    assert len(latencies) >= 40, latencies
    assert median < 0.1, (median, statistics.median(baseline))
    assert max(latencies) < 1.0, max(latencies)
    for thread, _ in posts:
        thread.join(timeout=60)
    statuses = {result.get("status") for _, result in posts}
    assert not statuses & {500, 502}, posts  # refused (4xx) or out of time (503), never a 500


def test_the_issues_quote_body_is_refused_at_once(gateway: Gateway) -> None:
    with gateway.client() as client:
        started = time.perf_counter()
        response = client.post(CONVERT, content=QUOTES_40K, headers=EHR_A.headers())
        seconds = time.perf_counter() - started
    assert response.status_code == 400, response.text
    assert seconds < 5.0, seconds


def test_40000_problems_answer_with_100_and_a_count(gateway: Gateway) -> None:
    data = record("caruso2022-02")
    data["observations"] = [{"kind": "wbc", "value": "x"} for _ in range(40_000)]
    body = json.dumps(data).encode()
    with gateway.client() as client:
        response = client.post(CONVERT, content=body, headers=EHR_A.headers())
    assert response.status_code == 422, response.text[:500]
    assert len(response.content) < 50_000  # was 9.9 MB
    issues = response.json()["issue"]
    assert len(issues) == 101
    assert issues[0]["expression"] == ["$.observations[0].value"]
    assert issues[-1] == {
        "severity": "information",
        "code": "informational",
        "diagnostics": "39900 more problems not shown",
    }
