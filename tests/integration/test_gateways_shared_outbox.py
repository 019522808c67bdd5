"""Several ``fhir-adapter serve`` processes on one Postgres outbox, in front of the local HAPI.

This is what a hospital deploys when one gateway process is not enough: gateways behind a
load balancer sharing one Postgres queue (claims with ``FOR UPDATE SKIP LOCKED``). The test
spreads pushes over three gateways, kills one with SIGKILL while it holds delivery leases,
and checks on HAPI that every acknowledged push is there exactly once and that the dead
gateway's leased rows were delivered by a survivor.

Needs ``FHIR_TEST_SERVER_URL`` (HAPI) and ``FHIR_TEST_POSTGRES_URL`` (a superuser URL of
the throwaway cluster of tests/postgres/pg.sh; each run creates and drops its own database),
both set by scripts/test.sh.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import needs_postgres, postgres_url

if not os.environ.get("FHIR_TEST_SERVER_URL"):
    pytest.skip("FHIR_TEST_SERVER_URL is not set", allow_module_level=True)

from tests.integration.test_gateway_integration import (
    API_KEY,
    DELIVERY_TIMEOUT,
    HEADERS,
    ROOT,
    SERVER_URL,
    TcpProxy,
    new_record,
    patients_with,
    upstream_url,
)

pytestmark = [pytest.mark.integration, needs_postgres]

GATEWAYS = ("gw-a", "gw-b", "gw-c")
VICTIM = "gw-a"
PUSHES = 30
# Long enough that the victim's leases cannot run out before the test kills it, even when
# HAPI takes seconds per transaction on a busy machine.
LEASE_SECONDS = 30


class HoldingProxy(TcpProxy):
    """A :class:`TcpProxy` that can hold back HAPI's answers to transactions.

    With answers held, a gateway's transaction reaches HAPI and is committed there, but the
    gateway never hears back: the worst moment to die, because the survivor that takes the
    row over must send it again and HAPI must not store it twice. Only the answers on a
    connection that has carried a transaction are held: before its transaction, a case
    record's delivery reads the record's state on the server (a batch), and that read must
    be answered for the transaction to be sent at all.
    """

    _MARK = b'"transaction"'

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self.answers = threading.Event()
        self.answers.set()
        self._transacting: set[Any] = set()  # client-side sockets that sent a transaction

    def _pump(self, source: Any, sink: Any, to_server: bool) -> None:
        tail = b""
        try:
            while data := source.recv(65536):
                if to_server:
                    if self._MARK in tail + data:
                        with self._lock:
                            self._transacting.add(source)
                    tail = data[-len(self._MARK) :]
                else:
                    while sink in self._transacting and not self.answers.wait(0.2):
                        if not self.running:
                            return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source)
            self._close(sink)
            with self._lock:
                self._connections.discard(source)
                self._connections.discard(sink)
                self._transacting.discard(source if to_server else sink)


def fhir_adapter_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m adapter``."""
    script = Path(sys.executable).with_name("fhir-adapter")
    return [str(script)] if script.exists() else [sys.executable, "-m", "adapter"]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Serve:
    """One ``fhir-adapter serve`` process with its own instance id and log file."""

    def __init__(self, instance_id: str, env: dict[str, str], log: Path) -> None:
        self.instance_id = instance_id
        self.log = log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._log_file = log.open("ab")
        self.process = subprocess.Popen(
            [*fhir_adapter_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env={**env, "FHIR_ADAPTER_INSTANCE_ID": instance_id},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"{self.instance_id} exited: {self.log_text()}"
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.instance_id} did not start: {self.log_text()}")

    def log_text(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log_file.close()


@pytest.fixture
def outbox_database() -> Iterator[str]:
    """A database of its own for this test's outbox, dropped afterwards."""
    import psycopg

    admin = postgres_url()
    name = f"gw_shared_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield urlsplit(admin)._replace(path=f"/{name}").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def rows(database: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        return list(conn.execute(sql, params).fetchall())


def test_three_gateways_one_outbox_survive_a_sigkill(tmp_path: Path, outbox_database: str) -> None:
    assert SERVER_URL
    target = httpx.URL(SERVER_URL)
    # The victim reaches HAPI through its own proxy, whose answers the test can hold back.
    victim_proxy = HoldingProxy(target.host, target.port or 80)
    shared_proxy = TcpProxy(target.host, target.port or 80)
    base_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")},
        "FHIR_ADAPTER_API_KEYS": API_KEY,
        "FHIR_ADAPTER_DB": outbox_database,
        "FHIR_ADAPTER_RETRY_BASE_SECONDS": "0.2",
        "FHIR_ADAPTER_RETRY_MAX_SECONDS": "2",
        "FHIR_ADAPTER_POLL_SECONDS": "0.2",
        "FHIR_ADAPTER_BREAKER_SECONDS": "1",
        "FHIR_ADAPTER_LEASE_SECONDS": str(LEASE_SECONDS),
        "FHIR_ADAPTER_WORKER_CONCURRENCY": "2",
        "FHIR_ADAPTER_UPSTREAM_TIMEOUT": "120",
    }
    gateways: dict[str, Serve] = {}
    try:
        # Upstream unreachable while the pushes arrive: every one is queued (202).
        for name in GATEWAYS:
            proxy = victim_proxy if name == VICTIM else shared_proxy
            env = {**base_env, "FHIR_ADAPTER_UPSTREAM_URL": upstream_url(proxy)}
            gateways[name] = Serve(name, env, tmp_path / f"{name}.log")
        for gateway in gateways.values():
            gateway.wait_healthy()

        records = [new_record() for _ in range(PUSHES)]
        record_of: dict[str, str] = {}  # submission id -> record_id
        acknowledged_by: dict[str, int] = dict.fromkeys(GATEWAYS, 0)
        for index, (record_id, body) in enumerate(records):
            name = GATEWAYS[index % len(GATEWAYS)]
            response = httpx.post(
                f"{gateways[name].base}/case-records", content=body, headers=HEADERS, timeout=60
            )
            assert response.status_code in (201, 202), response.text
            record_of[response.json()["id"]] = record_id
            acknowledged_by[name] += 1
        assert all(count == PUSHES // len(GATEWAYS) for count in acknowledged_by.values())
        assert len(record_of) == PUSHES

        # First only the victim reaches HAPI, and its answers do not come back: it takes
        # leases on rows whose transactions HAPI commits, and then waits.
        victim_proxy.answers.clear()
        victim_proxy.start()
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        held: list[str] = []
        while time.monotonic() < deadline:
            held = leased_by(outbox_database, VICTIM)
            if held and any(patients_on_hapi(record_of[i]) == 1 for i in held):
                break
            time.sleep(0.3)
        assert held, "the victim gateway never took a lease"

        # Now the others reach HAPI too; kill the victim once they are delivering.
        shared_proxy.start()
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while count_in(outbox_database, "delivered") < 3:
            assert time.monotonic() < deadline, "the surviving gateways delivered nothing"
            time.sleep(0.2)
        gateways[VICTIM].kill()  # SIGKILL: no shutdown hook hands its rows back
        orphaned = set(leased_by(outbox_database, VICTIM))
        assert orphaned, "the victim's leases vanished before it was killed"
        assert set(held) <= orphaned
        assert count_in(outbox_database, "delivered") < PUSHES  # killed mid-queue

        # The survivors take the dead gateway's rows over once its leases run out.
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        states: dict[str, int] = {}
        while time.monotonic() < deadline:
            states = dict(
                rows(
                    outbox_database,
                    "SELECT state, COUNT(*) FROM gateway_submissions GROUP BY state",
                )
            )
            assert not states.get("failed"), states
            if states.get("delivered") == PUSHES:
                break
            time.sleep(0.5)
        assert states.get("delivered") == PUSHES, states

        final = {
            row[0]: (row[1], row[2])
            for row in rows(outbox_database, "SELECT id, state, attempts FROM gateway_submissions")
        }
        assert set(final) == set(record_of)  # nothing acknowledged is missing from the outbox
        survivor_logs = "".join(gateways[name].log_text() for name in GATEWAYS if name != VICTIM)
        for submission_id in orphaned:
            state, attempts = final[submission_id]
            assert state == "delivered"
            assert attempts >= 2, (submission_id, attempts)  # claimed again after the kill
            assert f"submission {submission_id}: delivered" in survivor_logs, submission_id
    finally:
        for gateway in gateways.values():
            gateway.stop()
        victim_proxy.stop()
        shared_proxy.stop()

    # Exactly once on HAPI: one Patient per acknowledged push, including the rows the victim
    # had sent (and HAPI committed) before it died and a survivor sent again.
    with httpx.Client(base_url=SERVER_URL.rstrip("/") + "/", timeout=60.0) as hapi:
        for record_id in record_of.values():
            assert patients_with(hapi, record_id) == 1, record_id


def leased_by(database: str, instance_id: str) -> list[str]:
    """Ids of the rows a gateway holds a delivery lease on."""
    sql = "SELECT id FROM gateway_submissions WHERE state = 'delivering' AND lease_owner = %s"
    return [row[0] for row in rows(database, sql, instance_id)]


def count_in(database: str, state: str) -> int:
    sql = "SELECT COUNT(*) FROM gateway_submissions WHERE state = %s"
    return int(rows(database, sql, state)[0][0])


def patients_on_hapi(record_id: str) -> int:
    """Patients on HAPI with this record's identifier (a fresh search, not a cached one)."""
    assert SERVER_URL
    with httpx.Client(base_url=SERVER_URL.rstrip("/") + "/", timeout=60.0) as hapi:
        return patients_with(hapi, record_id)
