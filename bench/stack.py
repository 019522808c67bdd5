"""The servers the deployment benchmarks run against, started the way the tests start them.

HAPI through ``tests/hapi-server/hapi.sh`` (H2 in memory, or PostgreSQL with ``HAPI_DB``),
PostgreSQL through ``tests/postgres/pg.sh`` (durable, ``PG_DURABLE=1``, when a benchmark
starts it: the figures should be those of a real deployment, not of a test cluster with
fsync off), gateways as ``fhir-adapter serve`` processes. Each benchmark stops what it
started and nothing else.

Ports: ``HAPI_PORT`` and ``PG_PORT`` as for the scripts; gateways and stubs take a free
port, from ``BENCH_PORTS=FIRST-LAST`` when set (a shared machine's allotted range), else
one the kernel picks.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
HAPI_SH = ROOT / "tests" / "hapi-server" / "hapi.sh"
PG_SH = ROOT / "tests" / "postgres" / "pg.sh"
FHIR_JSON = "application/fhir+json"


def say(text: str, quiet: bool = False) -> None:
    """Progress on stderr (stdout is for the figures)."""
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def load_average() -> str:
    """The 1/5/15-minute load averages, recorded with every figure on a shared machine."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def free_port() -> int:
    """A free local port, from ``BENCH_PORTS`` (e.g. ``18620-18699``) when it is set."""
    allotted = os.environ.get("BENCH_PORTS")
    candidates = [0]
    if allotted:
        first, _, last = allotted.partition("-")
        candidates = list(range(int(first), int(last or first) + 1))
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise SystemExit(f"no free port in BENCH_PORTS={allotted}")


def _script(script: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{script.name} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


class Postgres:
    """The pg.sh cluster: reused when running, else started durable and stopped at the end."""

    def __init__(self, quiet: bool = False) -> None:
        status = subprocess.run(
            ["bash", str(PG_SH), "status"], capture_output=True, text=True, check=False
        )
        self.started = status.returncode != 0
        if self.started:
            say("starting PostgreSQL (tests/postgres/pg.sh, PG_DURABLE=1) ...", quiet)
            _script(PG_SH, "start", env={"PG_DURABLE": "1"})
        self.durable = self._setting("fsync") == "on"

    def _setting(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url()) as conn:
            row = conn.execute(f"SHOW {name}").fetchone()
        return str(row[0]) if row else ""

    def url(self, database: str = "") -> str:
        """URL of a database of the cluster (default: fhir_test)."""
        return _script(PG_SH, "url", *([database] if database else []))

    def fresh_database(self, name: str) -> str:
        """(Re)create an empty database and return its URL."""
        return _script(PG_SH, "createdb", name)

    def describe(self) -> str:
        durability = "durable (fsync on)" if self.durable else "fsync OFF (test settings)"
        return f"PostgreSQL {self._setting('server_version').split()[0]}, {durability}"

    def stop(self) -> None:
        if self.started:
            _script(PG_SH, "stop")


class Hapi:
    """HAPI via hapi.sh on ``db`` (h2 or postgres), restarted so the database starts empty."""

    def __init__(self, db: str, quiet: bool = False, validation: bool = True) -> None:
        self.db = db
        say(f"(re)starting HAPI on {db} (tests/hapi-server/hapi.sh restart) ...", quiet)
        started = time.monotonic()
        # Request validation (on in the tests) costs HAPI most of its CPU per transaction;
        # HAPI's JPA starter ships with it off. The capability statement says which was used.
        env = {"HAPI_DB": db, "HAPI_REQUEST_VALIDATION": "true" if validation else "false"}
        self.url = _script(HAPI_SH, "restart", env=env)
        self.start_seconds = time.monotonic() - started
        metadata = httpx.get(f"{self.url}/metadata", headers={"Accept": FHIR_JSON}, timeout=60)
        metadata.raise_for_status()
        self.description = str(metadata.json().get("implementation", {}).get("description"))

    def stop(self) -> None:
        _script(HAPI_SH, "stop")


def start_gateway(
    env: dict[str, str], folder: Path, name: str, quiet: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    """``fhir-adapter serve`` on a free port with ``env`` added; waits for /healthz."""
    port = free_port()
    script = Path(sys.executable).with_name("fhir-adapter")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "adapter"]
    log = (folder / f"{name}.log").open("ab")
    process = subprocess.Popen(
        [*command, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **env, "FHIR_ADAPTER_INSTANCE_ID": name},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = (folder / f"{name}.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"gateway {name} exited with {process.returncode}:\n{text}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                say(f"gateway {name} on {base}", quiet)
                return process, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"gateway {name} did not answer within 120 s")


def stop_process(process: subprocess.Popen[Any], grace: float = 30.0) -> None:
    """TERM a process a benchmark started; KILL it if it does not exit in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
