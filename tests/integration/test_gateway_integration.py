"""The gateway against a real HAPI FHIR R4 server (``FHIR_TEST_SERVER_URL``, started by
``scripts/test.sh``); the module is skipped when the variable is unset.

Upstream outages are simulated with :class:`TcpProxy`, a small TCP forwarder between the
gateway and HAPI that the tests switch off (connections refused, open ones cut) and on
again. It stands in for "HAPI stopped and restarted" without restarting the HAPI server
the rest of the suite shares. Every pushed record gets a fresh ``record_id`` so runs never
collide on that shared server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from adapter.gateway.config import Settings
from adapter.gateway.main import create_app
from adapter.gateway.outbox import open_outbox
from adapter.mapping.context import DEFAULT_NAMESPACE
from tests.conftest import INVALID, load_case

SERVER_URL = os.environ.get("FHIR_TEST_SERVER_URL")
if not SERVER_URL:
    pytest.skip("FHIR_TEST_SERVER_URL is not set", allow_module_level=True)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "integration-key-5f0c2a"
HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/fhir+json"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}
PATIENT_SYSTEM = f"{DEFAULT_NAMESPACE}/fhir/identifier/case-record"
SMALL_CASE = "caruso2022-12"  # the example with the fewest resources: fast bulk pushes
# Hang guards, not expectations: deliveries take seconds, but on a saturated shared machine
# HAPI was seen taking 20-60 s per transaction.
DELIVERY_TIMEOUT = 900.0


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target host:port; ``stop()``/``start()`` toggle it.

    Stopped, it refuses new connections and cuts open ones, which is what a client sees
    when the server process is down. ``delay`` slows every forwarded request chunk, to
    keep deliveries in flight long enough to kill a gateway in the middle of them.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.delay = 0.0
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() first: close() alone leaves a thread blocked in accept() holding
            # the socket open, and it would go on accepting connections.
            self._close(listener)
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            self._close(connection)

    @staticmethod
    def _close(connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)
        connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed by stop()
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                self._close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._connections.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, to_server: bool) -> None:
        try:
            while data := source.recv(65536):
                if to_server and self.delay:
                    time.sleep(self.delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source)
            self._close(sink)
            with self._lock:
                self._connections.discard(source)
                self._connections.discard(sink)


@pytest.fixture(scope="module")
def hapi() -> Iterator[httpx.Client]:
    assert SERVER_URL
    with httpx.Client(base_url=SERVER_URL.rstrip("/") + "/", timeout=60.0) as client:
        yield client


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    assert SERVER_URL
    target = httpx.URL(SERVER_URL)
    tcp_proxy = TcpProxy(target.host, target.port or 80)
    tcp_proxy.start()
    yield tcp_proxy
    tcp_proxy.stop()


def upstream_url(proxy: TcpProxy) -> str:
    assert SERVER_URL
    return str(httpx.URL(SERVER_URL).copy_with(host="127.0.0.1", port=proxy.port))


def gateway_settings(tmp_path: Path, proxy: TcpProxy, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "upstream_url": upstream_url(proxy),
        "api_keys": (API_KEY,),
        "db": str(tmp_path / "outbox.sqlite3"),
        "retry_base_seconds": 0.2,
        "retry_max_seconds": 2.0,
        "poll_seconds": 0.2,
        "breaker_seconds": 2.0,
        "lease_seconds": 120.0,
        "instance_id": "integration-gw",
        # These tests poll their own gateway in tight loops; the limits have tests of their own.
        "credential_rate": 0.0,
        "address_rate": 0.0,
        # These tests check the synchronous path (201 with HAPI's references). HAPI answers a
        # warm transaction in well under a second, but on a loaded machine (or cold) it can
        # take longer than the production default of 10 s; waiting as long as the delivery
        # timeout keeps them about behaviour, not the machine's speed. Queued 202s are
        # covered by the outage and kill tests.
        "sync_timeout": DELIVERY_TIMEOUT,
        "upstream_timeout": 120.0,
    }
    values.update(overrides)
    return Settings(**values)


def new_record(name: str = SMALL_CASE) -> tuple[str, bytes]:
    record_id = f"gwit-{uuid.uuid4().hex[:20]}"
    record = load_case(name)
    record["record_id"] = record_id
    return record_id, json.dumps(record).encode()


def patients_with(hapi: httpx.Client, record_id: str) -> int:
    response = hapi.get(
        "Patient",
        params={"identifier": f"{PATIENT_SYSTEM}|{record_id}", "_summary": "count"},
        headers={"Cache-Control": "no-cache"},
    )
    response.raise_for_status()
    return int(response.json()["total"])


def wait_all_delivered(get: Any, locations: list[str], timeout: float = DELIVERY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    pending = set(locations)
    while pending and time.monotonic() < deadline:
        for location in list(pending):
            view = get(location)
            assert view["status"] != "failed", view
            if view["status"] == "delivered":
                pending.discard(location)
        time.sleep(0.5)
    assert not pending, f"{len(pending)} submissions not delivered in {timeout}s"


# -- a push lands ------------------------------------------------------------------------------


def test_push_lands_on_hapi(tmp_path: Path, proxy: TcpProxy, hapi: httpx.Client) -> None:
    record_id, body = new_record("caruso2022-01")
    with TestClient(create_app(gateway_settings(tmp_path, proxy))) as client:
        response = client.post("/case-records", content=body, headers=HEADERS)
        assert response.status_code == 201, response.text
        view = response.json()
        # Pushing the same record again matches everything the first push created.
        again = client.post("/case-records", content=body, headers=HEADERS)
        assert again.status_code == 201
    patient_ref = view["references"][0]["reference"]
    assert patient_ref.startswith("Patient/")
    patient = hapi.get(patient_ref).json()
    assert {"system": PATIENT_SYSTEM, "value": record_id} in patient["identifier"]
    assert patients_with(hapi, record_id) == 1
    assert all(r["status"].startswith("200") for r in again.json()["references"][:-1])

    provenance_ref = view["references"][-1]["reference"]
    assert provenance_ref.startswith("Provenance/gw-")
    provenance = hapi.get(provenance_ref).json()
    assert "api-key:" in provenance["agent"][0]["who"]["display"]
    # It points at the record's own Provenance, which names the Patient and everything else.
    [target] = provenance["target"]
    assert target["reference"].startswith("Provenance/")
    record_provenance = hapi.get(target["reference"]).json()
    assert f"Patient/{patient['id']}" in {t["reference"] for t in record_provenance["target"]}


def test_pull_through_gateway(tmp_path: Path, proxy: TcpProxy) -> None:
    record_id, body = new_record("caruso2022-01")
    with TestClient(create_app(gateway_settings(tmp_path, proxy))) as client:
        assert client.post("/case-records", content=body, headers=HEADERS).status_code == 201
        response = client.get(f"/patients/{record_id}/case-record", headers=AUTH)
        if response.status_code == 501:
            pytest.skip("adapter.reverse is not in this build")
        assert response.status_code == 200, response.text
        pulled = response.json()
        missing = client.get(f"/patients/gwit-{uuid.uuid4().hex[:12]}/case-record", headers=AUTH)
    assert pulled["record_id"] == record_id
    assert pulled["patient"]["sex"] == json.loads(body)["patient"]["sex"]
    assert missing.status_code == 404


def test_ehr_bundle_lands_on_hapi(tmp_path: Path, proxy: TcpProxy, hapi: httpx.Client) -> None:
    value = f"gwit-{uuid.uuid4().hex}"
    system = f"{DEFAULT_NAMESPACE}/ehr/mrn"  # a system of the API key's client (default)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:" + str(uuid.uuid4()),
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": system, "value": value}],
                    "gender": "female",
                },
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": f"identifier={system}|{value}",
                },
            }
        ],
    }
    with TestClient(create_app(gateway_settings(tmp_path, proxy))) as client:
        first = client.post("/fhir", json=bundle, headers=HEADERS)
        second = client.post("/fhir", json=bundle, headers=HEADERS)
    assert (first.status_code, second.status_code) == (201, 201), first.text
    found = hapi.get(
        "Patient",
        params={"identifier": f"{system}|{value}", "_summary": "count"},
        headers={"Cache-Control": "no-cache"},
    ).json()
    assert found["total"] == 1


# -- outage: 50 pushes queued, then delivered exactly once -------------------------------------


def test_outage_50_pushes_queued_then_delivered_once(
    tmp_path: Path, proxy: TcpProxy, hapi: httpx.Client
) -> None:
    proxy.stop()
    records = [new_record() for _ in range(50)]
    with TestClient(create_app(gateway_settings(tmp_path, proxy))) as client:
        locations = []
        for _, body in records:
            response = client.post("/case-records", content=body, headers=HEADERS)
            assert response.status_code == 202, response.text
            locations.append(response.headers["location"])
        assert client.get("/readyz").status_code == 503  # upstream down: not ready
        time.sleep(1.0)  # the worker keeps failing meanwhile; nothing may be lost or failed
        assert all(client.get(loc, headers=AUTH).json()["status"] == "queued" for loc in locations)

        proxy.start()
        wait_all_delivered(lambda loc: client.get(loc, headers=AUTH).json(), locations)
        assert client.get("/readyz").status_code == 200
    for record_id, _ in records:
        assert patients_with(hapi, record_id) == 1, record_id


# -- the gateway process killed mid-queue ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class GatewayProcess:
    """``python -m adapter.gateway`` in a subprocess, so it can really be SIGKILLed."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "adapter.gateway",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "gateway exited during startup"
            try:
                if httpx.get(f"{self.base}/healthz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("gateway did not start")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        if not self._log.closed:
            self._log.close()


def test_gateway_killed_mid_queue_loses_nothing(
    tmp_path: Path, proxy: TcpProxy, hapi: httpx.Client
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")},
        "FHIR_ADAPTER_UPSTREAM_URL": upstream_url(proxy),
        "FHIR_ADAPTER_API_KEYS": API_KEY,
        "FHIR_ADAPTER_DB": str(tmp_path / "outbox.sqlite3"),
        "FHIR_ADAPTER_RETRY_BASE_SECONDS": "0.2",
        "FHIR_ADAPTER_RETRY_MAX_SECONDS": "2",
        "FHIR_ADAPTER_POLL_SECONDS": "0.2",
        "FHIR_ADAPTER_BREAKER_SECONDS": "2",
        "FHIR_ADAPTER_LEASE_SECONDS": "5",
        "FHIR_ADAPTER_WORKER_CONCURRENCY": "2",
        "FHIR_ADAPTER_CREDENTIAL_RATE": "0",
        "FHIR_ADAPTER_ADDRESS_RATE": "0",
    }
    log = tmp_path / "gateway.log"
    records = [new_record() for _ in range(20)]
    locations: list[str] = []

    def states(base: str) -> list[str]:
        return [
            httpx.get(f"{base}{loc}", headers=AUTH, timeout=30).json()["status"]
            for loc in locations
        ]

    proxy.stop()
    first = GatewayProcess(env, log)
    try:
        for _, body in records:
            response = httpx.post(
                f"{first.base}/case-records", content=body, headers=HEADERS, timeout=60
            )
            assert response.status_code == 202, response.text
            locations.append(response.headers["location"])
        proxy.delay = 0.2  # keep deliveries in flight long enough to kill the gateway mid-way
        proxy.start()
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while states(first.base).count("delivered") < 3:
            assert time.monotonic() < deadline, "no delivery started"
            time.sleep(0.1)
        first.kill()  # SIGKILL: no shutdown hook runs, leases are left behind
    finally:
        first.stop()
    # Read the outbox file itself, before a second gateway can deliver anything more.
    after_kill = open_outbox(env["FHIR_ADAPTER_DB"])
    try:
        counts = after_kill.counts()
    finally:
        after_kill.close()
    assert 3 <= counts["delivered"] < len(records), counts
    second = GatewayProcess(env, log)
    try:
        proxy.delay = 0.0
        wait_all_delivered(
            lambda loc: httpx.get(f"{second.base}{loc}", headers=AUTH, timeout=30).json(),
            locations,
        )
    finally:
        second.stop()
    for record_id, _ in records:
        assert patients_with(hapi, record_id) == 1, record_id
    audit = [
        json.loads(line) for line in log.read_text().splitlines() if '"event":"request"' in line
    ]
    assert audit and all(line["method"] and line["status"] for line in audit)


# -- errors ------------------------------------------------------------------------------------


def test_errors_against_real_upstream(tmp_path: Path, proxy: TcpProxy, hapi: httpx.Client) -> None:
    record_id, body = new_record()
    settings = gateway_settings(tmp_path, proxy, max_body_bytes=len(body) - 1)
    with TestClient(create_app(settings)) as client:
        unauthorized = client.post(
            "/case-records", content=body, headers={"Content-Type": "application/fhir+json"}
        )
        too_large = client.post("/case-records", content=body, headers=HEADERS)
        malformed = client.post("/case-records", content=b'{"record_id": ', headers=HEADERS)
        invalid = client.post(
            "/case-records",
            content=(INVALID / "05-enum-violation.json").read_bytes(),
            headers=HEADERS,
        )
        bad_bundle = client.post(
            "/fhir",
            json={"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {}}]},
            headers=HEADERS,
        )
    assert unauthorized.status_code == 401
    assert unauthorized.headers["www-authenticate"].startswith("Bearer")
    assert too_large.status_code == 413
    assert malformed.status_code == 400
    assert malformed.json()["issue"][0]["expression"] == ["$"]
    assert invalid.status_code == 422
    assert invalid.json()["issue"][0]["expression"] == ["$.patient.sex"]
    assert bad_bundle.status_code == 422
    for response in (unauthorized, too_large, malformed, invalid, bad_bundle):
        assert response.json()["resourceType"] == "OperationOutcome"
    assert patients_with(hapi, record_id) == 0
