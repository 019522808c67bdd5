"""Clients and credentials: FHIR_ADAPTER_CLIENTS, the default client, scopes per endpoint."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from adapter.gateway.auth import Authenticator, granted_scopes
from adapter.gateway.client_registry import (
    MIN_KEY_BITS,
    estimated_key_bits,
    load_registry,
)
from adapter.gateway.clients import Client
from adapter.gateway.config import ConfigError, Settings
from tests.unit.test_gateway_helpers import (
    API_KEY,
    FakeUpstream,
    fake_upstream,
    make_settings,
    record_bytes,
    running,
    write_clients,
)

SECRET = "an-hs256-secret-of-at-least-32-bytes!"
ISSUER = "https://idp.hospital.example"
AUDIENCE = "https://gateway.hospital.example"
KEY_A = secrets.token_urlsafe(32)
KEY_B = secrets.token_urlsafe(32)
KEY_R = secrets.token_urlsafe(32)
KEY_ADMIN = secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return f"sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def entry(client_id: str, namespace: str, *scopes: str, **extra: Any) -> dict[str, Any]:
    return {"id": client_id, "scopes": list(scopes), "namespace": namespace, **extra}


CLIENTS = (
    entry(
        "ehra",
        "https://ehr-a.example/",
        "read",
        "write",
        "convert",
        api_keys=[digest(KEY_A)],
        identifier_systems=["urn:oid:1.2.3.4", "https://mrn.ehr-a.example/"],
        jwt_subjects=["ehr-a-engine"],
    ),
    entry("ehrb", "https://ehr-b.example/", "write", api_keys=[digest(KEY_B)]),
    entry("registry", "https://registry.example/", "read", api_keys=[digest(KEY_R)]),
    entry(
        "ops",
        "https://ops.example/",
        "admin",
        "read",
        api_keys=[digest(KEY_ADMIN)],
        jwt_subjects=["ops-robot"],
    ),
)


def settings_with(tmp_path: Path, *clients: dict[str, Any], **overrides: Any) -> Settings:
    values: dict[str, Any] = {"clients_file": write_clients(tmp_path, *clients)}
    values.update(overrides)
    return Settings(instance_id="t", **values)


# -- the registry -----------------------------------------------------------------------------


def test_clients_file_and_default_client(tmp_path: Path) -> None:
    registry = load_registry(settings_with(tmp_path, *CLIENTS, api_keys=(API_KEY,)))
    assert [c.id for c in registry.clients] == ["ehra", "ehrb", "registry", "ops", "default"]
    ehra = registry.client("ehra")
    assert ehra is not None
    assert registry.owner_of("https://ehr-a.example/fhir/identifier/case-record") is ehra
    assert registry.owner_of("urn:oid:1.2.3.4") is ehra
    assert registry.owner_of("urn:oid:1.2.3.45") is None  # exact, not a prefix
    assert registry.owner_of("https://mrn.ehr-a.example/ward-3") is ehra
    assert registry.owner_of("http://hl7.org/fhir/sid/us-ssn") is None
    assert registry.client_for_subject("ehr-a-engine") is ehra
    assert registry.is_reserved(
        "https://fhir-oncology-adapter.example.org/fhir/identifier/gateway-principal"
    )


@pytest.mark.parametrize(
    "second",
    [
        entry("two", "https://a.example/", "write"),  # the same namespace
        entry("two", "https://a.example/sub/", "write"),  # a namespace under the other
        entry(
            "two",
            "https://b.example/",
            "write",
            identifier_systems=["https://a.example/fhir/identifier/mrn"],  # a system under it
        ),
        entry("two", "https://b.example/", "write", identifier_systems=["urn:oid:9.9"]),
    ],
)
def test_overlapping_systems_refuse_to_start(tmp_path: Path, second: dict[str, Any]) -> None:
    first = entry("one", "https://a.example/", "write", identifier_systems=["urn:oid:9.9"])
    with pytest.raises(ConfigError, match=r"FHIR_ADAPTER_CLIENTS: clients 'one' and 'two'"):
        load_registry(settings_with(tmp_path, first, second))


def test_default_client_overlap_names_both_variables(tmp_path: Path) -> None:
    clients = [entry("ehra", "https://fhir-oncology-adapter.example.org/", "write")]
    with pytest.raises(ConfigError) as caught:
        load_registry(settings_with(tmp_path, *clients, api_keys=(API_KEY,)))
    message = str(caught.value)
    assert "FHIR_ADAPTER_API_KEYS" in message and "FHIR_ADAPTER_CLIENTS" in message
    assert "'default'" in message and "'ehra'" in message


@pytest.mark.parametrize(
    ("clients", "match"),
    [
        (
            [
                entry("one", "https://a.example/", "write", api_keys=[digest(KEY_A)]),
                entry("two", "https://b.example/", "write", api_keys=[digest(KEY_A)]),
            ],
            "one API key is bound to both",
        ),
        (
            [
                entry("one", "https://a.example/", "write", jwt_subjects=["s"]),
                entry("two", "https://b.example/", "write", jwt_subjects=["s"]),
            ],
            "JWT subject 's' is bound to both",
        ),
        (
            [entry("one", "https://a.example/", "write"), entry("one", "https://b.example/")],
            "defined twice",
        ),
        ([entry("One", "https://a.example/", "write")], "client id"),
        ([entry("one", "https://a.example/", "superuser")], "unknown scope"),
        ([entry("one", "ftp://a.example/", "write")], "http"),
        ([entry("one", "https://a.example/x|y/", "write")], "FHIR search treats as syntax"),
        ([{**entry("one", "https://a.example/", "write"), "apikeys": []}], "unknown field"),
        ([entry("one", "https://a.example/", "write", api_keys=[KEY_A])], "development only"),
    ],
)
def test_ambiguous_or_unsafe_clients_refuse_to_start(
    tmp_path: Path, clients: list[dict[str, Any]], match: str
) -> None:
    with pytest.raises(ConfigError, match="FHIR_ADAPTER_CLIENTS") as caught:
        load_registry(settings_with(tmp_path, *clients))
    assert match in str(caught.value)


def test_unreadable_or_malformed_clients_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FHIR_ADAPTER_CLIENTS: cannot read"):
        load_registry(Settings(clients_file=str(tmp_path / "missing.json"), instance_id="t"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"clients": [', encoding="utf-8")
    with pytest.raises(ConfigError, match="malformed JSON"):
        load_registry(Settings(clients_file=str(broken), instance_id="t"))


def test_plain_keys_in_the_clients_file_only_in_development(tmp_path: Path) -> None:
    clients = [entry("one", "https://a.example/", "write", api_keys=[KEY_A])]
    registry = load_registry(settings_with(tmp_path, *clients, development=True))
    assert registry.key_digests[0][0] == hashlib.sha256(KEY_A.encode()).digest()


@pytest.mark.parametrize(
    ("key", "strong"),
    [
        ("x", False),
        ("my-secret-key", False),
        ("a" * 64, False),  # one repeated character
        ("0123456789abcdef" * 2, True),  # 32 hex digits: 128 bits
        ("0123456789abcdef0123456789abcde", False),  # 31 hex digits
        (secrets.token_urlsafe(16), True),  # what the README suggests, shortest form
        (secrets.token_hex(16), True),
    ],
)
def test_key_strength(key: str, strong: bool) -> None:
    assert (estimated_key_bits(key) >= MIN_KEY_BITS) is strong


def test_weak_api_keys_refused_unless_development() -> None:
    with pytest.raises(ConfigError, match="FHIR_ADAPTER_API_KEYS: an API key has about"):
        Authenticator(Settings(api_keys=("secret",), instance_id="t"))
    Authenticator(Settings(api_keys=("secret",), development=True, instance_id="t"))


# -- scopes -----------------------------------------------------------------------------------

EHR = Client("ehra", frozenset({"read", "write", "convert"}), "https://ehr-a.example/")
OPS = Client("ops", frozenset({"admin", "read"}), "https://ops.example/")


@pytest.mark.parametrize(
    ("smart", "client", "expected"),
    [
        ({"system/*.read"}, EHR, {"read", "convert"}),
        ({"system/*.write"}, EHR, {"write", "convert"}),
        ({"system/*.*"}, EHR, {"read", "write", "convert"}),
        (set(), EHR, set()),
        ({"system/*.*"}, None, {"convert"}),  # unbound: conversion only
        ({"system/*.write"}, OPS, set()),  # the client entry caps the token
        ({"system/*.read"}, OPS, {"read", "admin"}),
        ({"system/*.write"}, Client("w", frozenset({"admin"}), "https://w.example/"), set()),
    ],
)
def test_jwt_scopes_are_intersected_with_the_client(
    smart: set[str], client: Client | None, expected: set[str]
) -> None:
    assert granted_scopes(smart, client) == expected


# -- endpoints ----------------------------------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as fake:
        yield fake


@pytest.fixture
def gateway(tmp_path: Path, upstream: FakeUpstream) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path,
        api_keys=(),
        clients_file=write_clients(tmp_path, *CLIENTS),
        jwt_secret=SECRET,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    with running(settings) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/fhir+json"}


def token(sub: str, scope: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": now + 60, "scope": scope}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def test_scopes_per_endpoint(gateway: TestClient) -> None:
    record = record_bytes()
    # write: ehra and ehrb may push; the read-only registry and the admin may not.
    assert gateway.post("/case-records", content=record, headers=bearer(KEY_A)).status_code == 201
    assert gateway.post("/case-records", content=record, headers=bearer(KEY_B)).status_code == 201
    for key in (KEY_R, KEY_ADMIN):
        refused = gateway.post("/case-records", content=record, headers=bearer(key))
        assert refused.status_code == 403
        assert "write scope" in refused.json()["issue"][0]["diagnostics"]
    # convert: only clients granted it.
    convert = "/case-records/$convert"
    assert gateway.post(convert, content=record, headers=bearer(KEY_A)).status_code == 200
    assert gateway.post(convert, content=record, headers=bearer(KEY_B)).status_code == 403
    # read: pulls need it.
    assert gateway.get("/patients/x/case-record", headers=bearer(KEY_B)).status_code == 403


def test_case_records_are_converted_with_the_clients_namespace(
    gateway: TestClient, upstream: FakeUpstream
) -> None:
    response = gateway.post("/case-records", content=record_bytes(), headers=bearer(KEY_A))
    assert response.status_code == 201
    patient = upstream.bundles[0]["entry"][0]["resource"]
    systems = {i["system"] for i in patient["identifier"]}
    assert systems and all(s.startswith("https://ehr-a.example/") for s in systems)
    converted = gateway.post(
        "/case-records/$convert", content=record_bytes(), headers=bearer(KEY_A)
    ).json()
    assert converted["entry"][0]["resource"]["identifier"] == patient["identifier"]


def test_submissions_are_visible_to_their_client_and_admins(gateway: TestClient) -> None:
    location = gateway.post("/case-records", content=record_bytes(), headers=bearer(KEY_A)).headers[
        "location"
    ]
    assert gateway.get(location, headers=bearer(KEY_A)).status_code == 200
    # The same client through its JWT (another credential) sees it too.
    ehr_jwt = bearer(token("ehr-a-engine", "system/*.read"))
    assert gateway.get(location, headers=ehr_jwt).status_code == 200
    for other in (KEY_B, KEY_R):
        missing = gateway.get(location, headers=bearer(other))
        assert missing.status_code == 404
        assert missing.json()["issue"][0]["diagnostics"] == "no such submission"
    assert gateway.get(location, headers=bearer(KEY_ADMIN)).status_code == 200
    assert (
        gateway.get(location, headers=bearer(token("ops-robot", "system/*.read"))).status_code
        == 200
    )


def test_unbound_jwt_may_only_convert_and_read_metadata(gateway: TestClient) -> None:
    stranger = bearer(token("nobody-knows-me", "system/*.read system/*.write"))
    record = record_bytes()
    assert (
        gateway.post("/case-records/$convert", content=record, headers=stranger).status_code == 200
    )
    assert gateway.get("/metadata", headers=stranger).status_code == 200
    assert gateway.post("/case-records", content=record, headers=stranger).status_code == 403
    assert gateway.get("/patients/x/case-record", headers=stranger).status_code == 403
    assert gateway.get("/submissions/x", headers=stranger).status_code == 403
