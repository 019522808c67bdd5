"""The security suite: issue #11's findings, reproduced against real gateway processes and the
local HAPI server (``FHIR_TEST_SERVER_URL``, started by ``scripts/test.sh``).

Every test here replays a row of the issue's table as the hostile client or the security
officer did, and asserts the fixed behaviour. Gateways run as real processes (uvicorn, worker
processes, the outbox on disk), configured only through ``FHIR_ADAPTER_*`` variables, with a
clients file of five sending systems whose namespaces are unique to the run, so runs never
collide on the shared, never-reset HAPI server.

Ports: ephemeral, or from ``FHIR_ADAPTER_TEST_PORTS`` (``low-high``) when a shared machine
gives each developer a range.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_URL = os.environ.get("FHIR_TEST_SERVER_URL")
RUN = uuid.uuid4().hex[:10]
FHIR_JSON = "application/fhir+json"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything here needs the local HAPI: skipped (not failed) without it."""
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.integration)
            if not SERVER_URL:
                item.add_marker(pytest.mark.skip(reason="FHIR_TEST_SERVER_URL is not set"))


def namespace(name: str) -> str:
    """A namespace unique to this run."""
    return f"https://sec-{RUN}.{name}.example"


@dataclass(frozen=True)
class Caller:
    """One credential of one configured client."""

    client: str
    key: str
    namespace: str

    def headers(self, content_type: str | None = FHIR_JSON) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}"}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    @property
    def patient_system(self) -> str:
        return f"{self.namespace}/fhir/identifier/case-record"


def _caller(client: str) -> Caller:
    return Caller(client, secrets.token_urlsafe(32), namespace(client))


EHR_A = _caller("ehra")
EHR_B = _caller("ehrb")
READER = _caller("reader")
WRITER = _caller("writer")
OPS = _caller("ops")
SCOPES = {
    "ehra": ["read", "write", "convert"],
    "ehrb": ["read", "write", "convert"],
    "reader": ["read"],
    "writer": ["write"],
    "ops": ["admin", "read"],
}


def clients_document() -> dict[str, Any]:
    """The FHIR_ADAPTER_CLIENTS file: keys only as digests, as in production."""
    return {
        "clients": [
            {
                "id": caller.client,
                "scopes": SCOPES[caller.client],
                "namespace": caller.namespace,
                "api_keys": [f"sha256:{hashlib.sha256(caller.key.encode()).hexdigest()}"],
            }
            for caller in (EHR_A, EHR_B, READER, WRITER, OPS)
        ]
    }


def free_port() -> int:
    """A free TCP port on 127.0.0.1, from FHIR_ADAPTER_TEST_PORTS when set."""
    span = os.environ.get("FHIR_ADAPTER_TEST_PORTS")
    candidates = [0]
    if span:
        low, high = (int(part) for part in span.split("-"))
        candidates = list(range(low, high + 1))
        secrets.SystemRandom().shuffle(candidates)
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise RuntimeError(f"no free port in {span}")


@dataclass
class Gateway:
    """``python -m adapter.gateway`` in a subprocess, its log and its outbox on disk."""

    env: dict[str, str]
    log: Path
    args: tuple[str, ...] = ()
    scheme: str = "http"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, verify: Any = True) -> Gateway:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "adapter.gateway", "--port", str(self.port), *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                response = httpx.get(f"{self.base}/healthz", timeout=2, verify=verify)
                if response.status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("gateway did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=kwargs.pop("timeout", 120), **kwargs)

    def audit_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"event":"request"' in line:
                lines.append(json.loads(line))
        return lines


def gateway_env(tmp: Path, **variables: str) -> dict[str, str]:
    """The environment of a gateway process: the run's clients, HAPI upstream, its own DB."""
    assert SERVER_URL
    clients = tmp / "clients.json"
    if not clients.exists():
        clients.write_text(json.dumps(clients_document()), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")}
    env.update(
        {
            "FHIR_ADAPTER_CLIENTS": str(clients),
            "FHIR_ADAPTER_UPSTREAM_URL": SERVER_URL,
            "FHIR_ADAPTER_DB": str(tmp / "outbox.sqlite3"),
            "FHIR_ADAPTER_NAMESPACE": namespace("gateway"),
            "FHIR_ADAPTER_INSTANCE_ID": f"security-{RUN}",
            "FHIR_ADAPTER_READY_CACHE_SECONDS": "1",
        }
    )
    env.update(variables)
    return env


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The suite's main gateway: production defaults, the run's five clients."""
    tmp = tmp_path_factory.mktemp("gateway")
    process = Gateway(gateway_env(tmp), tmp / "gateway.log").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def hapi() -> Iterator[httpx.Client]:
    """Direct access to the upstream, as its operator (or an attacker who got there)."""
    assert SERVER_URL
    with httpx.Client(
        base_url=SERVER_URL.rstrip("/") + "/",
        timeout=60,
        headers={"Cache-Control": "no-cache"},
    ) as client:
        yield client


def record(name: str = "caruso2022-12", record_id: str | None = None) -> dict[str, Any]:
    """An example case record under a fresh record_id."""
    data: dict[str, Any] = json.loads(
        (ROOT / "examples" / "cases" / f"{name}.json").read_text(encoding="utf-8")
    )
    data["record_id"] = record_id or f"sec-{uuid.uuid4().hex[:16]}"
    return data


def create_on_hapi(hapi: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    """A resource written directly on the upstream (not through the gateway)."""
    response = hapi.post(resource["resourceType"], json=resource)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def delivered(client: httpx.Client, caller: Caller, response: httpx.Response) -> dict[str, Any]:
    """The submission of a push once delivered: 201 at once, or 202 then the worker (a cold
    or busy upstream takes longer than the gateway's synchronous wait)."""
    assert response.status_code in (201, 202), response.text
    deadline = time.monotonic() + 300
    view: dict[str, Any] = response.json()
    while view["status"] != "delivered":
        assert view["status"] == "queued", view
        assert time.monotonic() < deadline, view
        time.sleep(0.5)
        view = client.get(response.headers["location"], headers=caller.headers(None)).json()
    return view
