"""Shared pieces of the gateway tests: settings, a fake upstream FHIR server, example records.

Kept in a module of their own (no tests here) so the unit, auth, outbox and schemathesis
test modules build apps the same way.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import respx
from fastapi.testclient import TestClient

from adapter.gateway.clients import Client, server_id
from adapter.gateway.config import Settings
from adapter.gateway.main import create_app
from adapter.mapping.context import DEFAULT_NAMESPACE
from tests.conftest import CASES, load_case

UPSTREAM = "http://upstream.test/fhir"
API_KEY = "test-api-key-0123456789"
HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/fhir+json"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}
DEFAULT_CLIENT = Client("default", frozenset({"read", "write", "convert"}), DEFAULT_NAMESPACE)
"""The client FHIR_ADAPTER_API_KEYS (here: API_KEY) acts as."""
OWN_SYSTEM = f"{DEFAULT_NAMESPACE}/ehr/identifier"
"""An identifier system the default client owns (it is under its namespace)."""
ADMIN_KEY = "test-admin-key-9f8e7d6c5b4a3210"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def own_id(resource_type: str, local_name: str) -> str:
    """The server id the gateway assigns to the default client's resource ``local_name``."""
    return server_id(DEFAULT_CLIENT, resource_type, local_name)


def write_clients(tmp_path: Path, *clients: dict[str, Any]) -> str:
    """A FHIR_ADAPTER_CLIENTS file with ``clients``; returns its path."""
    path = tmp_path / f"clients-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps({"clients": list(clients)}), encoding="utf-8")
    return str(path)


def admin_clients(tmp_path: Path) -> str:
    """A clients file with one operator client (``admin read``) using ADMIN_KEY."""
    return write_clients(
        tmp_path,
        {
            "id": "ops",
            "scopes": ["admin", "read"],
            "namespace": "https://ops.test.example/",
            "api_keys": [f"sha256:{hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}"],
        },
    )


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Fast-retrying settings on a fresh SQLite file; the breaker is off unless asked for."""
    values: dict[str, Any] = {
        "upstream_url": UPSTREAM,
        "api_keys": (API_KEY,),
        "db": str(tmp_path / "outbox.sqlite3"),
        "retry_base_seconds": 0.01,
        "retry_max_seconds": 0.05,
        "poll_seconds": 0.05,
        "breaker_seconds": 0.0,
        "instance_id": "test-gateway",
    }
    values.update(overrides)
    return Settings(**values)


def record_bytes(name: str = "caruso2022-01", record_id: str | None = None) -> bytes:
    """An example record, optionally under another record_id."""
    record = load_case(name)
    if record_id is not None:
        record["record_id"] = record_id
    return json.dumps(record).encode()


def example_names() -> list[str]:
    """Stems of every example case record."""
    return sorted(p.stem for p in CASES.glob("*.json"))


def unique_record_id() -> str:
    """A record_id that matches the schema's pattern and collides with nothing."""
    return f"gw-{uuid.uuid4().hex[:20]}"


def outcome(status_code: int, code: str, diagnostics: str, *expression: str) -> httpx.Response:
    """An upstream OperationOutcome response."""
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = list(expression)
    return httpx.Response(
        status_code,
        json={"resourceType": "OperationOutcome", "issue": [issue]},
        headers={"Content-Type": "application/fhir+json"},
    )


class FakeUpstream:
    """respx routes for a FHIR server that answers transactions like HAPI does.

    ``mode`` switches behaviour between calls: ``ok``, ``down`` (connection refused),
    ``unavailable`` (503), or any callable returning a response. Every received bundle is
    kept, so tests can inspect what was forwarded and how often.
    """

    def __init__(self, router: respx.MockRouter) -> None:
        self.router = router
        self.bundles: list[dict[str, Any]] = []
        self.mode: str | Callable[[httpx.Request], httpx.Response] = "ok"
        # A case record's delivery first reads the record's state (a batch with one search,
        # Provenance?_id=record[,gateway]): this fake server answers with the Provenances it
        # holds among those ids, as HAPI does. Matched before the transactions.
        self.state_route = router.post(
            UPSTREAM, json__type="batch", json__entry__0__request__method="GET"
        ).mock(side_effect=self._state)
        self.transaction_route = router.post(UPSTREAM).mock(side_effect=self._transaction)
        self.metadata_route = router.get(f"{UPSTREAM}/metadata").mock(side_effect=self._metadata)
        self.provenances: dict[str, dict[str, Any]] = {}
        """Provenances received, by id: ``GET Provenance/<id>`` finds them, as on HAPI."""
        self.provenance_read_route = router.get(url__regex=rf"^{UPSTREAM}/Provenance/[^/]+$").mock(
            side_effect=self._read_provenance
        )

    def _transaction(self, request: httpx.Request) -> httpx.Response:
        mode = self.mode
        if mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if mode == "unavailable":
            return outcome(503, "transient", "server starting")
        if callable(mode):
            return mode(request)
        bundle = json.loads(request.content)
        self.bundles.append(bundle)
        for entry in bundle.get("entry", []):
            if entry["request"]["url"].startswith("Provenance/"):
                self.provenances[entry["resource"]["id"]] = entry["resource"]
        entries = []
        for index, entry in enumerate(bundle.get("entry", [])):
            url = entry["request"]["url"]
            if entry["request"]["method"] == "DELETE":  # a correction's removal
                entries.append({"response": {"status": "204 No Content", "location": url}})
                continue
            resource_type = url.split("?")[0].split("/")[0]
            entries.append(
                {
                    "response": {
                        "status": "201 Created",
                        "location": f"{resource_type}/{index + 1}/_history/1",
                        "etag": 'W/"1"',
                    },
                    # Echoed resources, as with Prefer: return=representation.
                    "resource": entry["resource"],
                }
            )
        kind = "batch-response" if bundle.get("type") == "batch" else "transaction-response"
        return httpx.Response(
            200,
            json={"resourceType": "Bundle", "type": kind, "entry": entries},
            headers={"Content-Type": "application/fhir+json"},
        )

    def _state(self, request: httpx.Request) -> httpx.Response:
        if self.mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if self.mode == "unavailable":
            return outcome(503, "transient", "server starting")
        [entry] = json.loads(request.content)["entry"]
        query = parse_qs(urlsplit(entry["request"]["url"]).query)
        ids = query.get("_id", [""])[0].split(",")
        found = [self.provenances[i] for i in ids if i in self.provenances]
        searchset = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [{"resource": p, "search": {"mode": "match"}} for p in found],
        }
        return httpx.Response(
            200,
            json={
                "resourceType": "Bundle",
                "type": "batch-response",
                "entry": [{"resource": searchset, "response": {"status": "200 OK"}}],
            },
            headers={"Content-Type": "application/fhir+json"},
        )

    def _read_provenance(self, request: httpx.Request) -> httpx.Response:
        if self.mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        found = self.provenances.get(request.url.path.rsplit("/", 1)[-1])
        if found is None:
            return outcome(404, "not-found", "Resource Provenance is not known")
        return httpx.Response(200, json=found, headers={"Content-Type": "application/fhir+json"})

    def _metadata(self, request: httpx.Request) -> httpx.Response:
        if self.mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"resourceType": "CapabilityStatement", "status": "active"})


@contextmanager
def fake_upstream() -> Iterator[FakeUpstream]:
    """A fake upstream for the duration of the block (other hosts are not mocked)."""
    with respx.mock(assert_all_called=False) as router:
        yield FakeUpstream(router)


@contextmanager
def running(settings: Settings) -> Iterator[TestClient]:
    """A started app (lifespan, worker) for the duration of the block."""
    with TestClient(create_app(settings)) as client:
        yield client


def wait_for_status(
    client: TestClient, location: str, wanted: str, timeout: float = 10.0
) -> dict[str, Any]:
    """Poll a submission until it reaches ``wanted``; fails the test on timeout."""
    deadline = time.monotonic() + timeout
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        view = client.get(location, headers=AUTH).json()
        if view.get("status") == wanted:
            return view
        time.sleep(0.02)
    raise AssertionError(f"submission never became {wanted}: {view}")
