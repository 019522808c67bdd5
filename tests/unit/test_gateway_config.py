"""Gateway settings from FHIR_ADAPTER_* variables, and ``serve`` refusing bad ones."""

from __future__ import annotations

import pytest

from adapter.gateway.config import (
    DEFAULT_ALLOWED_RESOURCE_TYPES,
    DEFAULT_DB,
    DEFAULT_MAX_BODY_BYTES,
    ConfigError,
    Settings,
)
from adapter.gateway.server import serve
from adapter.mapping.context import DEFAULT_NAMESPACE


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.upstream_url is None
    assert settings.db == DEFAULT_DB
    assert settings.max_body_bytes == DEFAULT_MAX_BODY_BYTES == 5 * 1024 * 1024
    assert settings.namespace == DEFAULT_NAMESPACE
    assert settings.allowed_resource_types == DEFAULT_ALLOWED_RESOURCE_TYPES
    assert not settings.docs  # docs are opt-in
    assert {"Encounter", "Claim", "Organization"} <= set(settings.allowed_resource_types)
    assert "Provenance" not in settings.allowed_resource_types
    assert settings.max_attempts == 0
    assert not settings.auth_configured


def test_every_variable() -> None:
    env = {
        "FHIR_ADAPTER_UPSTREAM_URL": "https://fhir.hospital.example/r4",
        "FHIR_ADAPTER_UPSTREAM_FHIR_VERSION": "R5",
        "FHIR_ADAPTER_UPSTREAM_TOKEN": "upstream-token",
        "FHIR_ADAPTER_UPSTREAM_TIMEOUT": "12.5",
        "FHIR_ADAPTER_UPSTREAM_CONNECT_TIMEOUT": "2",
        "FHIR_ADAPTER_SYNC_TIMEOUT": "3",
        "FHIR_ADAPTER_API_KEYS": " key-one , sha256:" + "a" * 64 + ",",
        "FHIR_ADAPTER_JWT_ISSUER": "https://idp",
        "FHIR_ADAPTER_JWT_AUDIENCE": "gateway",
        "FHIR_ADAPTER_JWT_SECRET": "s" * 32,
        "FHIR_ADAPTER_JWT_ALGORITHMS": "HS256,HS512",
        "FHIR_ADAPTER_JWT_LEEWAY": "5",
        "FHIR_ADAPTER_DB": "postgresql://gw@db/gateway",
        "FHIR_ADAPTER_MAX_BODY_BYTES": "1_000_000",
        "FHIR_ADAPTER_MAX_BUNDLE_ENTRIES": "50",
        "FHIR_ADAPTER_NAMESPACE": "https://registry.example.org",
        "FHIR_ADAPTER_ALLOWED_RESOURCE_TYPES": "Patient, Condition",
        "FHIR_ADAPTER_INSTANCE_ID": "gw-a",
        "FHIR_ADAPTER_WORKER_CONCURRENCY": "8",
        "FHIR_ADAPTER_RETRY_BASE_SECONDS": "0.5",
        "FHIR_ADAPTER_RETRY_MAX_SECONDS": "60",
        "FHIR_ADAPTER_MAX_ATTEMPTS": "10",
        "FHIR_ADAPTER_LEASE_SECONDS": "90",
        "FHIR_ADAPTER_POLL_SECONDS": "1",
        "FHIR_ADAPTER_BREAKER_SECONDS": "3",
        "FHIR_ADAPTER_DOCS": "off",
    }
    settings = Settings.from_env(env)
    assert settings.upstream_url == "https://fhir.hospital.example/r4"
    assert settings.upstream_fhir_version == "R5"
    assert settings.upstream_timeout == 12.5 and settings.sync_timeout == 3
    assert settings.api_keys == ("key-one", "sha256:" + "a" * 64)
    assert settings.jwt_algorithms == ("HS256", "HS512")
    assert settings.db == "postgresql://gw@db/gateway"
    assert settings.max_body_bytes == 1_000_000
    assert settings.allowed_resource_types == ("Patient", "Condition")
    assert not settings.docs
    assert settings.instance_id == "gw-a"
    assert (settings.worker_concurrency, settings.max_attempts) == (8, 10)
    assert settings.auth_configured


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"FHIR_ADAPTER_MAX_BODY_BYTES": "5MB"}, "FHIR_ADAPTER_MAX_BODY_BYTES"),
        ({"FHIR_ADAPTER_MAX_BODY_BYTES": "0"}, "FHIR_ADAPTER_MAX_BODY_BYTES"),
        ({"FHIR_ADAPTER_SYNC_TIMEOUT": "nan"}, "FHIR_ADAPTER_SYNC_TIMEOUT"),
        ({"FHIR_ADAPTER_DOCS": "maybe"}, "FHIR_ADAPTER_DOCS"),
        ({"FHIR_ADAPTER_UPSTREAM_FHIR_VERSION": "STU3"}, "FHIR_ADAPTER_UPSTREAM_FHIR_VERSION"),
        ({"FHIR_ADAPTER_UPSTREAM_TOKEN_URL": "https://idp/token"}, "FHIR_ADAPTER_UPSTREAM_KID"),
        ({"FHIR_ADAPTER_JWT_SECRET": "s" * 32}, "FHIR_ADAPTER_JWT_ISSUER"),
        ({"FHIR_ADAPTER_LEASE_SECONDS": "-1"}, "FHIR_ADAPTER_LEASE_SECONDS"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_serve_exits_2_on_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FHIR_ADAPTER_MAX_BODY_BYTES", "lots")
    assert serve("127.0.0.1", 0) == 2
    assert "FHIR_ADAPTER_MAX_BODY_BYTES" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("types", "message"),
    [("Patient,Provenance", "Provenance cannot be accepted"), ("Patient,Widget", "Widget")],
)
def test_allowed_types_can_only_narrow(types: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Settings.from_env({"FHIR_ADAPTER_ALLOWED_RESOURCE_TYPES": types})
    assert "FHIR_ADAPTER_ALLOWED_RESOURCE_TYPES" in str(caught.value)
