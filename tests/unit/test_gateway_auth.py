"""Gateway authentication: hashed API keys, JWT verification and SMART scopes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from adapter.gateway.auth import Authenticator, hash_api_key, scopes_grant
from adapter.gateway.config import ConfigError, Settings
from tests.unit.test_gateway_helpers import (
    FakeUpstream,
    fake_upstream,
    make_settings,
    record_bytes,
    running,
    write_clients,
)

ISSUER = "https://idp.hospital.example"
AUDIENCE = "https://gateway.hospital.example"
SECRET = "an-hs256-secret-of-at-least-32-bytes!"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
PLAIN_KEY = "plain-key-1-Vq8LmZ3rT0xW"
HASHED_KEY = "pre-hashed-key-2-Hd7Kp2Ns9Qe"
# The JWT subjects used below, each bound to a client of its own.
JWT_CLIENTS = (
    {
        "id": "ehr",
        "scopes": ["read", "write", "convert"],
        "namespace": "https://ehr.test.example/",
        "jwt_subjects": ["ehr-integration-engine"],
    },
    {
        "id": "other",
        "scopes": ["read", "write", "convert"],
        "namespace": "https://other.test.example/",
        "jwt_subjects": ["another-ehr"],
    },
)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def token(
    key: Any = SECRET,
    algorithm: str = "HS256",
    *,
    scope: str | None = "system/*.write system/*.read",
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "ehr-integration-engine",
        "iat": now,
        "exp": now + 300,
    }
    if scope is not None:
        payload["scope"] = scope
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=algorithm)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as fake:
        yield fake


@pytest.fixture
def client(
    tmp_path: Path, upstream: FakeUpstream, rsa_key: rsa.RSAPrivateKey
) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path,
        api_keys=(PLAIN_KEY, f"sha256:{hash_api_key(HASHED_KEY)}"),
        clients_file=write_clients(tmp_path, *JWT_CLIENTS),
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_secret=SECRET,
        jwt_public_key=public_pem(rsa_key),
    )
    with running(settings) as test_client:
        yield test_client


def push(client: TestClient, authorization: dict[str, str]) -> Any:
    return client.post(
        "/case-records", content=record_bytes(), headers={**authorization, **FHIR_JSON}
    )


# -- API keys --------------------------------------------------------------------------------


def test_plain_and_prehashed_api_keys(client: TestClient) -> None:
    assert push(client, bearer(PLAIN_KEY)).status_code == 201
    assert push(client, bearer(HASHED_KEY)).status_code == 201
    assert push(client, bearer(hash_api_key(HASHED_KEY))).status_code == 401
    assert push(client, bearer(PLAIN_KEY[:-1])).status_code == 401


def test_keys_are_kept_only_hashed() -> None:
    authenticator = Authenticator(Settings(api_keys=(PLAIN_KEY,), instance_id="t"))
    assert PLAIN_KEY not in repr(vars(authenticator))
    principal = authenticator.authenticate(f"Bearer {PLAIN_KEY}")
    assert principal.name == f"api-key:{hash_api_key(PLAIN_KEY)[:12]}"
    assert principal.can("read") and principal.can("write")
    assert principal.client is not None and principal.client.id == "default"


def test_malformed_hashed_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="FHIR_ADAPTER_API_KEYS"):
        Authenticator(Settings(api_keys=("sha256:abc",), instance_id="t"))


def test_no_credentials_configured_refuses_everyone(tmp_path: Path, upstream: FakeUpstream) -> None:
    with running(make_settings(tmp_path, api_keys=())) as client:
        response = push(client, bearer("anything"))
        assert response.status_code == 401
        assert "no API keys or JWT keys" in response.json()["issue"][0]["diagnostics"]
        assert client.get("/healthz").status_code == 200


# -- JWT -------------------------------------------------------------------------------------


def test_valid_hs256_jwt(client: TestClient, upstream: FakeUpstream) -> None:
    response = push(client, bearer(token()))
    assert response.status_code == 201
    provenance = upstream.bundles[0]["entry"][-1]["resource"]
    # The client the JWT's subject is bound to, and the credential that acted for it.
    assert provenance["agent"][0]["who"]["identifier"]["value"] == "ehr"
    assert provenance["agent"][0]["who"]["display"] == "ehr (jwt:ehr-integration-engine)"


def test_valid_rs256_jwt(client: TestClient, rsa_key: rsa.RSAPrivateKey) -> None:
    assert push(client, bearer(token(rsa_key, "RS256"))).status_code == 201


def test_jwt_signed_by_another_key(client: TestClient) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    response = push(client, bearer(token(other, "RS256")))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": int(time.time()) - 3600}, "token expired"),
        ({"aud": "https://another-service.example"}, "audience"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"exp": None}, "exp"),
        ({"sub": None}, "subject"),
    ],
)
def test_jwt_claim_failures_are_401(
    client: TestClient, claims: dict[str, Any], message: str
) -> None:
    response = push(client, bearer(token(**claims)))
    assert response.status_code == 401
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert message in body["issue"][0]["diagnostics"]
    assert response.headers["www-authenticate"].startswith("Bearer ")


def test_unsigned_jwt_is_refused(client: TestClient) -> None:
    unsigned = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60},
        None,
        algorithm="none",
    )
    assert push(client, bearer(unsigned)).status_code == 401


def test_hs256_token_cannot_use_the_public_key_as_secret(
    client: TestClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    """Algorithm confusion: the RSA public key must never verify an HMAC token."""

    def segment(value: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")

    claims = jwt.decode(token(), SECRET, algorithms=["HS256"], audience=AUDIENCE)
    signing_input = segment({"alg": "HS256", "typ": "JWT"}) + b"." + segment(claims)
    mac = hmac.new(public_pem(rsa_key).encode(), signing_input, hashlib.sha256).digest()
    forged = signing_input + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")
    response = push(client, bearer(forged.decode()))
    assert response.status_code == 401


def test_missing_write_scope_is_403(client: TestClient) -> None:
    response = push(client, bearer(token(scope="system/*.read")))
    assert response.status_code == 403
    assert response.json()["issue"][0]["code"] == "forbidden"
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="system/*.write"' in challenge


def test_read_scope_for_reads(client: TestClient) -> None:
    reader = bearer(token(scope="system/*.read"))
    writer = bearer(token(scope="system/*.write"))
    assert client.get("/patients/x/case-record", headers=writer).status_code == 403
    # /metadata needs a valid credential, whatever its scopes.
    for headers in (reader, writer, bearer(token(scope=None))):
        assert client.get("/metadata", headers=headers).status_code == 200


def test_write_only_caller_sees_only_its_own_submissions(client: TestClient) -> None:
    writer = bearer(token(scope="system/*.write"))
    other_writer = bearer(token(scope="system/*.write", sub="another-ehr"))
    location = push(client, writer).headers["location"]
    assert client.get(location, headers=writer).status_code == 200
    assert client.get(location, headers=other_writer).status_code == 404
    assert client.get(location, headers=bearer(token(scope="system/*.read"))).status_code == 200


def test_smart_v2_scopes(client: TestClient) -> None:
    assert push(client, bearer(token(scope="system/*.cruds"))).status_code == 201
    assert push(client, bearer(token(scope="system/*.rs"))).status_code == 403
    assert push(client, bearer(token(scope="system/Patient.write"))).status_code == 403


def test_scp_list_claim(client: TestClient) -> None:
    assert push(client, bearer(token(scope=None, scp=["system/*.write"]))).status_code == 201


@pytest.mark.parametrize(
    ("scopes", "read", "write"),
    [
        ({"system/*.read"}, True, False),
        ({"system/*.write"}, False, True),
        ({"system/*.*"}, True, True),
        ({"system/*.cruds"}, True, True),
        ({"system/*.rs"}, True, False),
        ({"system/*.cu"}, False, True),
        ({"system/*.c"}, False, False),
        ({"system/Patient.read"}, False, False),
        ({"user/*.read", "patient/*.write"}, False, False),
        ({"system/*.read?category=x"}, False, False),
        (set(), False, False),
    ],
)
def test_scopes_grant(scopes: set[str], read: bool, write: bool) -> None:
    assert scopes_grant(scopes, "read") is read
    assert scopes_grant(scopes, "write") is write


# -- configuration ---------------------------------------------------------------------------


def test_jwt_needs_issuer_and_audience() -> None:
    with pytest.raises(ConfigError, match="JWT_ISSUER"):
        Settings(jwt_secret=SECRET, instance_id="t")


def test_short_jwt_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        Authenticator(
            Settings(jwt_secret="short", jwt_issuer=ISSUER, jwt_audience=AUDIENCE, instance_id="t")
        )


def test_bad_public_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JWT_PUBLIC_KEY"):
        Authenticator(
            Settings(
                jwt_public_key="-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----",
                jwt_issuer=ISSUER,
                jwt_audience=AUDIENCE,
                instance_id="t",
            )
        )


def test_public_key_from_file_and_escaped_newlines(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "idp.pem"
    path.write_text(public_pem(key))
    for value in (str(path), public_pem(key).replace("\n", "\\n")):
        authenticator = Authenticator(
            Settings(
                jwt_public_key=value, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, instance_id="t"
            )
        )
        principal = authenticator.authenticate(f"Bearer {token(key, 'ES256')}")
        assert principal.name == "jwt:ehr-integration-engine"
