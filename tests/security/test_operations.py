"""Row 8 (low): operations, as the security officer found them.

Disk full → 500 with /readyz still ready; unwritable DB → exit 3 with a traceback; no keys →
every request 401 but ready; 1-character keys accepted; no rate limit (500 wrong guesses in
3.8 s); no client address in audit lines; slow-header and slow-body clients hold connections;
no TLS option; patient responses without ``Cache-Control: no-store`` and ``nosniff``; /docs
loading JavaScript from a CDN; anonymous /readyz showing queue counts and calling the upstream
on every hit; an outbox readable by all, failed rows kept for ever; a client disconnect logged as
a 500; ``docs/gateway.md`` named but missing.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.security.conftest import (
    EHR_A,
    OPS,
    ROOT,
    SERVER_URL,
    Gateway,
    delivered,
    gateway_env,
    record,
)

# -- startup refusals ---------------------------------------------------------------------------


def _serve_refusal(env: dict[str, str], *args: str) -> str:
    """Run ``fhir-adapter serve``; it must exit 2 with one line on stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "adapter", "serve", "--port", "9", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_unwritable_database_exits_2_naming_the_variable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("the database's directory is a file")
    env = gateway_env(tmp_path, FHIR_ADAPTER_DB=str(blocker / "outbox.sqlite3"))
    assert _serve_refusal(env).startswith(
        "fhir-adapter serve: configuration error: FHIR_ADAPTER_DB: cannot"
    )


def test_missing_credentials_exit_2_unless_development(tmp_path: Path) -> None:
    env = gateway_env(tmp_path)
    del env["FHIR_ADAPTER_CLIENTS"]
    line = _serve_refusal(env)
    assert "no credentials configured" in line and "FHIR_ADAPTER_CLIENTS" in line
    # The explicit opt-out starts, and says it is not ready to take data.
    env["FHIR_ADAPTER_DEVELOPMENT"] = "true"
    process = Gateway(env, tmp_path / "dev.log").start()
    try:
        with process.client() as client:
            assert client.get("/readyz").status_code == 503
            assert client.post("/case-records", content=b"{}").status_code == 401
    finally:
        process.stop()
    assert "development mode" in (tmp_path / "dev.log").read_text()


def test_short_api_keys_exit_2(tmp_path: Path) -> None:
    env = gateway_env(tmp_path, FHIR_ADAPTER_API_KEYS="k")
    line = _serve_refusal(env)
    assert "FHIR_ADAPTER_API_KEYS" in line and "128" in line


# -- rate limits and audit lines ----------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Default limits (the main gateway's address must stay usable for the other tests)."""
    tmp = tmp_path_factory.mktemp("limited")
    process = Gateway(gateway_env(tmp), tmp / "gateway.log").start()
    try:
        yield process
    finally:
        process.stop()


def test_500_wrong_guesses_are_throttled(limited: Gateway) -> None:
    statuses: list[int] = []
    retry_after: set[str] = set()
    with limited.client() as client:
        started = time.perf_counter()
        for attempt in range(500):
            response = client.get("/metadata", headers={"Authorization": f"Bearer guess-{attempt}"})
            statuses.append(response.status_code)
            if response.status_code == 429:
                retry_after.add(response.headers["retry-after"])
        seconds = time.perf_counter() - started
        # Blocked before the credential is checked: the right key learns nothing either.
        right_key = client.get("/metadata", headers=EHR_A.headers(None))
    print(
        f"\n500 wrong guesses in {seconds:.1f} s: {statuses.count(401)} x 401, "
        f"{statuses.count(429)} x 429, Retry-After {sorted(retry_after)}"
    )
    assert statuses.count(401) <= 25  # the burst (20) and refill while guessing
    assert statuses.count(429) >= 475
    assert all(int(value) >= 1 for value in retry_after)
    assert right_key.status_code == 429
    # Every request, refused or not, gets its audit line. A request refused by the address
    # block before routing has no route template, and the line says "(no route)" rather than
    # the raw path (which, on other routes, could hold a patient identifier).
    deadline = time.monotonic() + 30
    while True:
        lines = [
            line
            for line in limited.audit_lines()
            if line["path"] in ("/metadata", "(no route)") and line["status"] in (401, 429)
        ]
        if len(lines) >= 501 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(lines) >= 501  # the 500 guesses and the right key
    assert {line["address"] for line in lines} == {"127.0.0.1"}


def test_audit_lines_name_address_credential_and_client(gateway: Gateway) -> None:
    with gateway.client() as client:
        request_id = f"audit-{time.time_ns()}"
        headers = {**EHR_A.headers(None), "X-Request-ID": request_id}
        assert client.get("/metadata", headers=headers).status_code == 200
    deadline = time.monotonic() + 5
    while True:
        matching = [line for line in gateway.audit_lines() if line["request_id"] == request_id]
        if matching or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    [line] = matching
    assert line["address"] == "127.0.0.1"
    assert line["principal"].startswith("api-key:") and line["client"] == EHR_A.client
    assert EHR_A.key not in json.dumps(line)


# -- slow clients -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("impatient")
    env = gateway_env(tmp, FHIR_ADAPTER_HEADER_TIMEOUT="2", FHIR_ADAPTER_BODY_TIMEOUT="2")
    process = Gateway(env, tmp / "gateway.log").start()
    try:
        yield process
    finally:
        process.stop()


def _closed_within(sock: socket.socket, seconds: float, drip: bytes = b"") -> float:
    """Seconds until the server closes ``sock`` while we drip ``drip`` a byte a second."""
    started = time.monotonic()
    sock.settimeout(1.0)
    index = 0
    while time.monotonic() - started < seconds:
        try:
            if drip:
                sock.sendall(drip[index : index + 1])
                index = (index + 1) % len(drip)
            data = sock.recv(4096)
            if data == b"" or data.startswith(b"HTTP/1.1 408"):
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
    raise AssertionError(f"connection still open after {seconds} s")


@pytest.mark.parametrize("drip", [b"", b"X-Slow: " + b"a" * 100])
def test_slow_or_silent_headers_are_cut_off(impatient: Gateway, drip: bytes) -> None:
    with socket.create_connection(("127.0.0.1", impatient.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n" if drip else b"")
        assert _closed_within(sock, 15, drip) < 6


def test_slow_body_gets_408(impatient: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", impatient.port)) as sock:
        sock.sendall(
            b"POST /case-records/$convert HTTP/1.1\r\nHost: gateway\r\n"
            + f"Authorization: Bearer {EHR_A.key}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"record_id":'
        )
        sock.settimeout(10)
        started = time.monotonic()
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert time.monotonic() - started < 8


def test_a_client_disconnect_is_not_an_error(impatient: Gateway) -> None:
    request_id = f"gone-{time.time_ns()}"
    with socket.create_connection(("127.0.0.1", impatient.port)) as sock:
        sock.sendall(
            b"POST /case-records/$convert HTTP/1.1\r\nHost: gateway\r\n"
            + f"Authorization: Bearer {EHR_A.key}\r\nX-Request-ID: {request_id}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"a":'
        )
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    while True:
        matching = [a for a in impatient.audit_lines() if a["request_id"] == request_id]
        if matching or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    [line] = matching
    assert line["status"] == 499
    log = impatient.log.read_text()
    assert "unhandled error" not in log and "Traceback" not in log


# -- TLS ----------------------------------------------------------------------------------------


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_serve_over_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    process = Gateway(
        gateway_env(tmp_path),
        tmp_path / "tls.log",
        args=("--ssl-certfile", str(cert), "--ssl-keyfile", str(key)),
        scheme="https",
    )
    process.start(verify=str(cert))
    try:
        with httpx.Client(base_url=process.base, verify=str(cert), timeout=30) as client:
            assert client.get("/metadata", headers=EHR_A.headers(None)).status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{process.port}/healthz", timeout=5)
    finally:
        process.stop()


# -- responses ----------------------------------------------------------------------------------


def test_patient_data_responses_are_not_cached_or_sniffed(gateway: Gateway) -> None:
    data = record()
    body = json.dumps(data).encode()
    with gateway.client() as client:
        pushed = client.post("/case-records", content=body, headers=EHR_A.headers())
        delivered(client, EHR_A, pushed)
        responses = [
            pushed,
            client.get(pushed.headers["location"], headers=EHR_A.headers(None)),
            client.post("/case-records/$convert", content=body, headers=EHR_A.headers()),
            client.get(f"/patients/{data['record_id']}/case-record", headers=EHR_A.headers(None)),
        ]
    for response in responses:
        assert response.status_code in (200, 201, 202), response.text
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"


def test_docs_are_off_by_default_and_never_load_a_third_party(
    gateway: Gateway, tmp_path: Path
) -> None:
    with gateway.client() as client:
        assert client.get("/docs").status_code == 404
        assert client.get("/openapi.json").status_code == 404
    process = Gateway(gateway_env(tmp_path, FHIR_ADAPTER_DOCS="true"), tmp_path / "docs.log")
    process.start()
    try:
        with process.client() as client:
            page = client.get("/docs")
    finally:
        process.stop()
    assert page.status_code == 200
    assert "<script" not in page.text
    assert not re.search(r"(src|href)=\"?https?://", page.text)
    assert page.headers["content-security-policy"].startswith("default-src 'none'")


class CountingProxy:
    """A TCP forwarder to HAPI that counts the ``/metadata`` requests passing through."""

    def __init__(self, target: httpx.URL) -> None:
        self.target = (target.host, target.port or 80)
        self.metadata_requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, counting: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if counting:
                    self.metadata_requests += data.count(b"/metadata HTTP/1.1")
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.close()

    def close(self) -> None:
        self._listener.close()


def test_readyz_shows_details_only_to_admins_and_caches_the_upstream(tmp_path: Path) -> None:
    assert SERVER_URL
    proxy = CountingProxy(httpx.URL(SERVER_URL))
    upstream = str(httpx.URL(SERVER_URL).copy_with(host="127.0.0.1", port=proxy.port))
    env = gateway_env(
        tmp_path, FHIR_ADAPTER_UPSTREAM_URL=upstream, FHIR_ADAPTER_READY_CACHE_SECONDS="30"
    )
    process = Gateway(env, tmp_path / "ready.log").start()
    try:
        with process.client() as client:
            anonymous = [client.get("/readyz") for _ in range(50)]
            admin = client.get("/readyz", headers=OPS.headers(None))
            not_admin = client.get("/readyz", headers=EHR_A.headers(None))
    finally:
        process.stop()
        proxy.close()
    assert {r.status_code for r in anonymous} == {200}
    assert {json.dumps(r.json()) for r in anonymous} == {'{"status": "ready"}'}
    assert not_admin.json() == {"status": "ready"}
    assert admin.json()["checks"]["queue"].keys() >= {"queued", "failed"}
    assert admin.json()["checks"]["upstream"] == "reachable"
    assert proxy.metadata_requests == 1  # 52 probes, one upstream call


# -- the outbox on disk -------------------------------------------------------------------------


def test_outbox_files_are_owner_only(gateway: Gateway) -> None:
    db = Path(gateway.env["FHIR_ADAPTER_DB"])
    files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_failed_rows_are_purged(gateway: Gateway) -> None:
    """A push the upstream refuses keeps its Bundle (for inspection) until purged."""
    patient_id = f"{EHR_A.client}-{'0' * 32}"
    dangling = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": patient_id,
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": f"Patient/{EHR_A.client}-{'f' * 32}"},
                },
                "request": {"method": "PUT", "url": f"Observation/{patient_id}"},
            }
        ],
    }
    with gateway.client() as client:
        response = client.post("/fhir", json=dangling, headers=EHR_A.headers())
        assert response.status_code in (400, 404, 409, 412, 422), response.text
        location = response.headers["location"]
        assert client.get(location, headers=EHR_A.headers(None)).json()["status"] == "failed"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "adapter",
                "purge",
                "--older-than-days",
                "0",
                "--state",
                "failed",
                "--db",
                gateway.env["FHIR_ADAPTER_DB"],
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert re.match(r"deleted [1-9]\d* failed submissions?$", done.stdout.strip())
        assert client.get(location, headers=EHR_A.headers(None)).status_code == 404


# -- disk full ----------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs (needs root, as in CI); skipped where it cannot be mounted."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_is_503_and_not_ready(tmp_path: Path, tiny_disk: Path) -> None:
    env = gateway_env(
        tmp_path,
        FHIR_ADAPTER_DB=str(tiny_disk / "outbox.sqlite3"),
        FHIR_ADAPTER_MIN_FREE_BYTES="65536",
        FHIR_ADAPTER_READY_CACHE_SECONDS="0.1",
    )
    process = Gateway(env, tmp_path / "full.log").start()
    try:
        with process.client() as client:
            first = client.post(
                "/case-records", content=json.dumps(record()), headers=EHR_A.headers()
            )
            assert first.status_code in (201, 202), first.text
            filler = tiny_disk / "filler"
            with contextlib.suppress(OSError), filler.open("wb", buffering=0) as handle:
                while True:
                    handle.write(b"\0" * 65536)
            big = record("caruso2022-01")
            refused = client.post("/case-records", content=json.dumps(big), headers=EHR_A.headers())
            time.sleep(0.2)
            ready_admin = client.get("/readyz", headers=OPS.headers(None))
            ready_anonymous = client.get("/readyz")
            filler.unlink()
            accepted = client.post(
                "/case-records", content=json.dumps(big), headers=EHR_A.headers()
            )
            time.sleep(0.2)
            ready_again = client.get("/readyz")
    finally:
        process.stop()
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["retry-after"]) > 0
    assert ready_admin.status_code == 503
    assert ready_anonymous.status_code == 503
    assert [i["diagnostics"] for i in ready_anonymous.json()["issue"]] == ["not ready"]
    assert accepted.status_code in (201, 202), accepted.text
    assert ready_again.status_code == 200
    log = (tmp_path / "full.log").read_text()
    assert "unhandled error" not in log


# -- documentation the code names ---------------------------------------------------------------


def test_docs_the_code_names_exist_and_cover_every_variable() -> None:
    named = set()
    for path in [ROOT / "Dockerfile", *sorted((ROOT / "adapter").rglob("*.py"))]:
        named.update(re.findall(r"docs/[a-z-]+\.md", path.read_text(encoding="utf-8")))
    assert "docs/gateway.md" in named
    for doc in named:
        assert (ROOT / doc).exists(), doc
    config = (ROOT / "adapter" / "gateway" / "config.py").read_text(encoding="utf-8")
    variables = {f"FHIR_ADAPTER_{name}" for name in re.findall(r'env\.\w+\(\s*"([A-Z_]+)"', config)}
    documented = (ROOT / "docs" / "gateway.md").read_text(encoding="utf-8")
    assert len(variables) > 30
    missing = sorted(v for v in variables if v not in documented)
    assert not missing, missing


# -- worker processes -------------------------------------------------------------------------


def test_a_killed_gateway_leaves_no_worker_processes(tmp_path: Path) -> None:
    process = Gateway(gateway_env(tmp_path), tmp_path / "killed.log").start()
    assert process.process is not None
    deadline = time.monotonic() + 60
    children: list[psutil.Process] = []
    while len(children) < 2:  # the two body workers (and multiprocessing's tracker)
        assert time.monotonic() < deadline, "no worker processes started"
        time.sleep(0.2)
        children = psutil.Process(process.process.pid).children(recursive=True)
    process.process.send_signal(signal.SIGKILL)
    process.process.wait(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, alive
