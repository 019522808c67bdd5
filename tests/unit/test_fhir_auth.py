"""Unit tests for BearerTokenAuth and SmartBackendAuth (SMART Backend Services)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from adapter.fhir import (
    AsyncFhirClient,
    AuthError,
    BearerTokenAuth,
    FhirClient,
    OperationOutcomeError,
    RetryPolicy,
    SmartBackendAuth,
)

BASE = "https://fhir.example.org/r4"
TOKEN_URL = "https://auth.example.org/oauth2/token"
CLIENT_ID = "onco-adapter"
KID = "key-2024-01"
PATIENT = {"resourceType": "Patient", "id": "1"}


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


class Clock:
    """Manually advanced clock so expiry is tested without waiting."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock_router:
        yield mock_router


def token_response(token: str, expires_in: int = 300) -> httpx.Response:
    return httpx.Response(
        200,
        json={"access_token": token, "token_type": "bearer", "expires_in": expires_in},
    )


def fhir_ok() -> httpx.Response:
    return httpx.Response(200, json=PATIENT, headers={"Content-Type": "application/fhir+json"})


def form_of(request: httpx.Request) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(request.content.decode()).items()}


def smart(key: Any, clock: Clock, **kwargs: Any) -> SmartBackendAuth:
    return SmartBackendAuth(TOKEN_URL, CLIENT_ID, _pem(key), kid=KID, clock=clock, **kwargs)


def client_with(auth: httpx.Auth) -> FhirClient:
    return FhirClient(BASE, auth=auth, retry=RetryPolicy(jitter=False), sleep=lambda _: None)


def bearer_of(request: httpx.Request) -> str:
    return request.headers["Authorization"]


# -- static bearer ------------------------------------------------------------------


def test_bearer_token_header_is_sent(router: respx.MockRouter) -> None:
    route = router.get(f"{BASE}/Patient/1").mock(return_value=fhir_ok())
    with client_with(BearerTokenAuth("s3cret")) as client:
        client.read("Patient", "1")
        client.read("Patient", "1")
    assert [bearer_of(c.request) for c in route.calls] == ["Bearer s3cret"] * 2


def test_bearer_token_must_not_be_empty() -> None:
    with pytest.raises(ValueError):
        BearerTokenAuth("")


# -- SMART: token lifecycle ------------------------------------------------------------


def test_token_is_fetched_once_and_cached(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    token = router.post(TOKEN_URL).mock(side_effect=[token_response("tok-1")])
    fhir = router.get(f"{BASE}/Patient/1").mock(return_value=fhir_ok())
    with client_with(smart(rsa_key, clock)) as client:
        client.read("Patient", "1")
        clock.now += 200
        client.read("Patient", "1")
    assert token.call_count == 1
    assert [bearer_of(c.request) for c in fhir.calls] == ["Bearer tok-1"] * 2
    assert "Authorization" not in token.calls.last.request.headers


def test_token_is_refreshed_after_expiry_minus_skew(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    token = router.post(TOKEN_URL).mock(
        side_effect=[token_response("tok-1"), token_response("tok-2")]
    )
    fhir = router.get(f"{BASE}/Patient/1").mock(return_value=fhir_ok())
    with client_with(smart(rsa_key, clock)) as client:
        client.read("Patient", "1")
        clock.now += 269  # 300 s lifetime - 30 s skew: still valid
        client.read("Patient", "1")
        clock.now += 2  # now inside the skew window
        client.read("Patient", "1")
    assert token.call_count == 2
    assert [bearer_of(c.request) for c in fhir.calls] == [
        "Bearer tok-1",
        "Bearer tok-1",
        "Bearer tok-2",
    ]


def test_short_lived_token_is_still_reused(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    token = router.post(TOKEN_URL).mock(side_effect=[token_response("tok-1", expires_in=20)])
    router.get(f"{BASE}/Patient/1").mock(return_value=fhir_ok())
    with client_with(smart(rsa_key, clock)) as client:
        client.read("Patient", "1")
        client.read("Patient", "1")
    assert token.call_count == 1


def test_401_refreshes_the_token_once_and_resends(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    token = router.post(TOKEN_URL).mock(
        side_effect=[token_response("tok-1"), token_response("tok-2")]
    )
    fhir = router.post(f"{BASE}/Patient").mock(
        side_effect=[httpx.Response(401), httpx.Response(201, json=PATIENT)]
    )
    with client_with(smart(rsa_key, clock)) as client:
        assert client.create({"resourceType": "Patient"}) == PATIENT
    assert token.call_count == 2
    assert [bearer_of(c.request) for c in fhir.calls] == ["Bearer tok-1", "Bearer tok-2"]
    assert [json.loads(c.request.content) for c in fhir.calls] == [{"resourceType": "Patient"}] * 2


def test_persistent_401_is_not_retried_forever(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    token = router.post(TOKEN_URL).mock(
        side_effect=[token_response("tok-1"), token_response("tok-2")]
    )
    fhir = router.get(f"{BASE}/Patient/1").mock(return_value=httpx.Response(401))
    with client_with(smart(rsa_key, clock)) as client, pytest.raises(OperationOutcomeError) as info:
        client.read("Patient", "1")
    assert info.value.status_code == 401
    assert fhir.call_count == 2
    assert token.call_count == 2


def test_async_client_fetches_caches_and_refreshes_on_401(
    router: respx.MockRouter, ec_key: ec.EllipticCurvePrivateKey, clock: Clock
) -> None:
    token = router.post(TOKEN_URL).mock(
        side_effect=[token_response("tok-1"), token_response("tok-2")]
    )
    fhir = router.get(f"{BASE}/Patient/1").mock(
        side_effect=[fhir_ok(), httpx.Response(401), fhir_ok()]
    )

    async def run() -> None:
        async with AsyncFhirClient(BASE, auth=smart(ec_key, clock)) as client:
            await client.read("Patient", "1")
            await client.read("Patient", "1")

    asyncio.run(run())
    assert token.call_count == 2
    assert [bearer_of(c.request) for c in fhir.calls] == [
        "Bearer tok-1",
        "Bearer tok-1",
        "Bearer tok-2",
    ]


def test_concurrent_async_requests_share_one_token_fetch(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    async def slow_token(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.02)  # let the other tasks pile up behind the lock
        return token_response("tok-1")

    token = router.post(TOKEN_URL).mock(side_effect=slow_token)
    fhir = router.get(f"{BASE}/Patient/1").mock(return_value=fhir_ok())

    async def run() -> None:
        async with AsyncFhirClient(BASE, auth=smart(rsa_key, clock)) as client:
            await asyncio.gather(*(client.read("Patient", "1") for _ in range(8)))

    asyncio.run(run())
    assert token.call_count == 1
    assert fhir.call_count == 8


def test_concurrent_threads_share_one_token_fetch(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    lock = threading.Lock()
    issued: list[str] = []

    def slow_token(request: httpx.Request) -> httpx.Response:
        time.sleep(0.05)
        with lock:
            issued.append(f"tok-{len(issued) + 1}")
            return token_response(issued[-1])

    router.post(TOKEN_URL).mock(side_effect=slow_token)
    router.get(f"{BASE}/Patient/1").mock(return_value=fhir_ok())
    with client_with(smart(rsa_key, clock)) as client, ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: client.read("Patient", "1"), range(8)))
    assert issued == ["tok-1"]


# -- SMART: the assertion ----------------------------------------------------------------


@pytest.mark.parametrize(("key_name", "alg"), [("rsa_key", "RS384"), ("ec_key", "ES384")])
def test_client_assertion_is_a_valid_smart_jwt(
    router: respx.MockRouter,
    clock: Clock,
    request: pytest.FixtureRequest,
    key_name: str,
    alg: str,
) -> None:
    key = request.getfixturevalue(key_name)
    token = router.post(TOKEN_URL).mock(
        side_effect=[token_response("tok-1", expires_in=1), token_response("tok-2")]
    )
    router.get(f"{BASE}/Patient/1").mock(return_value=fhir_ok())
    auth = smart(key, clock)
    assert auth.algorithm == alg
    with client_with(auth) as client:
        client.read("Patient", "1")
        clock.now += 5
        client.read("Patient", "1")
    assert token.call_count == 2

    forms = [form_of(call.request) for call in token.calls]
    form = forms[0]
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert form["scope"] == "system/*.read system/*.write"
    assert token.calls[0].request.headers["Content-Type"] == "application/x-www-form-urlencoded"

    assertion = form["client_assertion"]
    header = jwt.get_unverified_header(assertion)
    assert header["alg"] == alg
    assert header["kid"] == KID
    claims = jwt.decode(
        assertion,
        key.public_key(),
        algorithms=[alg],
        audience=TOKEN_URL,
        issuer=CLIENT_ID,
        options={"require": ["iss", "sub", "aud", "exp", "jti"]},
    )
    assert claims["sub"] == CLIENT_ID
    assert claims["exp"] == int(clock.now - 5) + 300
    with pytest.raises(jwt.InvalidSignatureError):
        other = ec.generate_private_key(ec.SECP384R1()) if alg == "ES384" else None
        wrong = other or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwt.decode(assertion, wrong.public_key(), algorithms=[alg], audience=TOKEN_URL)

    jtis = [
        jwt.decode(f["client_assertion"], options={"verify_signature": False})["jti"] for f in forms
    ]
    assert len(set(jtis)) == 2 and all(jtis)


def test_assertion_lifetime_is_capped_at_five_minutes(
    rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    auth = smart(rsa_key, clock, assertion_lifetime=3600, scope="system/Patient.read")
    claims = jwt.decode(auth.client_assertion(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 300
    assert auth.scope == "system/Patient.read"


def test_p256_key_is_rejected_for_es384(clock: Clock) -> None:
    with pytest.raises(ValueError, match="P-384"):
        smart(ec.generate_private_key(ec.SECP256R1()), clock)


def test_explicit_algorithm_must_match_key(rsa_key: rsa.RSAPrivateKey, clock: Clock) -> None:
    with pytest.raises(ValueError, match="does not match"):
        smart(rsa_key, clock, algorithm="ES384")


# -- SMART: token endpoint failures ------------------------------------------------------


def test_token_endpoint_error_raises_auth_error_with_description(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    router.post(TOKEN_URL).mock(
        return_value=httpx.Response(
            400,
            json={
                "error": "invalid_client",
                "error_description": "JWT signature does not match registered JWKS",
            },
        )
    )
    fhir = router.get(f"{BASE}/Patient/1").mock(return_value=fhir_ok())
    with client_with(smart(rsa_key, clock)) as client, pytest.raises(AuthError) as info:
        client.read("Patient", "1")
    error = info.value
    assert "JWT signature does not match registered JWKS" in str(error)
    assert "invalid_client" in str(error)
    assert "HTTP 400" in str(error)
    assert (error.status_code, error.error) == (400, "invalid_client")
    assert fhir.call_count == 0


def test_async_token_endpoint_error_raises_auth_error(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    router.post(TOKEN_URL).mock(
        return_value=httpx.Response(401, json={"error": "invalid_scope", "error_description": "no"})
    )

    async def run() -> None:
        async with AsyncFhirClient(BASE, auth=smart(rsa_key, clock)) as client:
            await client.read("Patient", "1")

    with pytest.raises(AuthError, match="invalid_scope: no"):
        asyncio.run(run())


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(502, text="bad gateway"), "HTTP 502: bad gateway"),
        (httpx.Response(200, json={"token_type": "bearer"}), "no access_token"),
        (httpx.Response(200, json={"access_token": "x", "token_type": "mac"}), "token_type"),
    ],
)
def test_malformed_token_responses_raise_auth_error(
    router: respx.MockRouter,
    rsa_key: rsa.RSAPrivateKey,
    clock: Clock,
    response: httpx.Response,
    message: str,
) -> None:
    router.post(TOKEN_URL).mock(return_value=response)
    with client_with(smart(rsa_key, clock)) as client, pytest.raises(AuthError, match=message):
        client.read("Patient", "1")


def test_failed_token_fetch_does_not_poison_the_cache(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    router.post(TOKEN_URL).mock(
        side_effect=[httpx.Response(500, json={"error": "server_error"}), token_response("ok")]
    )
    fhir = router.get(f"{BASE}/Patient/1").mock(return_value=fhir_ok())
    with client_with(smart(rsa_key, clock)) as client:
        with pytest.raises(AuthError):
            client.read("Patient", "1")
        client.read("Patient", "1")
    assert bearer_of(fhir.calls.last.request) == "Bearer ok"
