"""Synthea patients through the gateway's ``POST /fhir`` vs posted straight to HAPI.

Real EHR transaction bundles (Synthea 3.3.0, ``tests/synthea/synthea.sh generate oncology``:
five patients of 330-560 entries, plus the hospital and practitioner batches, pushed first
to both paths, untimed). Synthea's own Provenance entry is left out on both paths (the
gateway refuses a client's Provenance and writes its own).

* ``direct``: each patient transaction POSTed to the FHIR base of HAPI as Synthea wrote it
  (plain POSTs: HAPI assigns ids);
* ``gateway``: the same bytes POSTed to ``/fhir`` of the gateway (started here with uvicorn
  on 127.0.0.1:``--port``), which checks, normalises (PUTs to derived ids), validates every
  resource with fhir.resources, looks up and adds its Provenance, stores the Bundle in its
  outbox and delivers it before answering 201;
* ``resend``: the gateway path again with the same bytes: every write matches what is there.

Each round rewrites the bundles' ``urn:uuid``s (the same rewrite for both paths), so every
round writes new patients on both paths; rounds alternate the paths (ABBA). Reported per
path: patients/s, resources/s (entries/s), latency p50/p90, statuses.

``--elderly``: the size limits, with the ``elderly`` set (one patient of ~10,000 entries,
~30 MB): posted to a gateway with the default limits (expect 413 at once), then to one with
the limits raised (``FHIR_ADAPTER_MAX_BODY_BYTES``, ``..._MAX_BUNDLE_ENTRIES``, timeouts),
and straight to HAPI; prints the times and the gateway's peak RSS (sampled every 50 ms).

    .venv/bin/python bench/bench_synthea.py [--rounds 4] [--concurrency 2] [--elderly] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from bench_gateway import LAUNCHER, resolve_hapi, stop_process
from benchutil import ROOT, machine, machine_line, percentile, post_concurrently

SYNTHEA_SH = ROOT / "tests" / "synthea" / "synthea.sh"
API_KEY = secrets.token_urlsafe(32)
# The sending system owns Synthea's identifier system and the NPI system (its organisations,
# locations and practitioner directory), as docs/authorization.md describes for an EHR.
SENDER_SYSTEMS = ["https://github.com/synthetichealth/synthea", "http://hl7.org/fhir/sid/us-npi"]


def clients_file(folder: Path) -> Path:
    path = folder / "clients.json"
    entry = {
        "id": "synthea",
        "scopes": ["read", "write"],
        "namespace": "https://bench.fhir-oncology-adapter.example.org",
        "identifier_systems": SENDER_SYSTEMS,
        "api_keys": [f"sha256:{hashlib.sha256(API_KEY.encode()).hexdigest()}"],
    }
    path.write_text(json.dumps({"clients": [entry]}), encoding="utf-8")
    return path


FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
_URN = re.compile(rb"urn:uuid:([0-9a-f-]{36})")


def synthea_set(name: str) -> Path:
    """The directory of a generated set (generating it if it is not cached)."""
    done = subprocess.run(
        ["bash", str(SYNTHEA_SH), "generate", name], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"synthea.sh generate {name} failed:\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1]) / "fhir"


def load_set(folder: Path) -> tuple[list[bytes], list[bytes]]:
    """(infrastructure batches, patient transactions without their Provenance) as bytes."""
    infrastructure: list[bytes] = []
    patients: list[bytes] = []
    for path in sorted(folder.glob("*.json")):
        bundle = orjson.loads(path.read_bytes())
        bundle["entry"] = [
            e for e in bundle["entry"] if e["resource"]["resourceType"] != "Provenance"
        ]
        target = (
            infrastructure
            if path.name.startswith(("hospitalInformation", "practitionerInformation"))
            else patients
        )
        target.append(orjson.dumps(bundle))
    return infrastructure, patients


def renamed(body: bytes, round_tag: str) -> bytes:
    """Every urn:uuid replaced by one derived from it and the round: new patients."""
    return _URN.sub(
        lambda m: (
            b"urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, round_tag + m[1].decode())).encode()
        ),
        body,
    )


def entries(body: bytes) -> int:
    return body.count(b'"request"')


def start_gateway(
    upstream: str, port: int, folder: Path, name: str, **limits: str
) -> tuple[subprocess.Popen[bytes], str]:
    env = os.environ | {
        "FHIR_ADAPTER_UPSTREAM_URL": upstream,
        "FHIR_ADAPTER_CLIENTS": str(clients_file(folder)),
        "FHIR_ADAPTER_DB": str(folder / f"{name}.sqlite3"),
        "FHIR_ADAPTER_SYNC_TIMEOUT": "600",
        "FHIR_ADAPTER_UPSTREAM_TIMEOUT": "600",
        **{f"FHIR_ADAPTER_{key.upper()}": value for key, value in limits.items()},
    }
    log = (folder / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, "127.0.0.1", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the gateway exited: {(folder / f'{name}.log').read_text()[-2000:]}")
        try:
            if httpx.get(base + "/healthz", timeout=1.0).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_process(proc)
    raise SystemExit("the gateway did not answer within 60 s")


async def run_phase(
    client: httpx.AsyncClient, url: str, bodies: list[bytes], headers: dict[str, str], workers: int
) -> dict[str, Any]:
    latencies, statuses, wall = await post_concurrently(client, url, bodies, headers, workers)
    return {
        "patients": len(bodies),
        "resources": sum(entries(b) for b in bodies),
        "wall_s": wall,
        "statuses": dict(statuses),
        "latencies": latencies,
    }


def summarise(phases: list[dict[str, Any]]) -> dict[str, Any]:
    wall = sum(p["wall_s"] for p in phases)
    patients = sum(p["patients"] for p in phases)
    resources = sum(p["resources"] for p in phases)
    latencies = [x * 1e3 for p in phases for x in p["latencies"]]
    statuses: Counter[str] = Counter()
    for phase in phases:
        statuses.update({str(k): v for k, v in phase["statuses"].items()})
    return {
        "patients": patients,
        "resources": resources,
        "wall_s": round(wall, 2),
        "patients_per_s": round(patients / wall, 3),
        "resources_per_s": round(resources / wall, 1),
        "p50_ms": round(percentile(latencies, 50)),
        "p90_ms": round(percentile(latencies, 90)),
        "statuses": dict(statuses),
    }


async def throughput(
    hapi: str, gateway: str, infrastructure: list[bytes], patients: list[bytes], args: Any
) -> dict[str, Any]:
    gateway_headers = {**FHIR_JSON, "Authorization": f"Bearer {API_KEY}"}
    results: dict[str, list[dict[str, Any]]] = {"direct": [], "gateway": [], "resend": []}
    async with httpx.AsyncClient(timeout=600) as client:
        for body in infrastructure:  # conditional references need them on both paths
            for url, headers in ((hapi, FHIR_JSON), (gateway + "/fhir", gateway_headers)):
                response = await client.post(url, content=body, headers=headers)
                response.raise_for_status()
        warm = [renamed(b, "warm-up") for b in patients[:2]]
        await run_phase(client, hapi, warm, FHIR_JSON, args.concurrency)
        await run_phase(client, gateway + "/fhir", warm, gateway_headers, args.concurrency)
        for round_number in range(args.rounds):
            bodies = [renamed(b, f"round-{round_number}-{time.time_ns()}") for b in patients]
            order = ["direct", "gateway"] if round_number % 2 == 0 else ["gateway", "direct"]
            for path in order:
                url, headers = (
                    (hapi, FHIR_JSON)
                    if path == "direct"
                    else (
                        gateway + "/fhir",
                        gateway_headers,
                    )
                )
                results[path].append(
                    await run_phase(client, url, bodies, headers, args.concurrency)
                )
            results["resend"].append(
                await run_phase(
                    client, gateway + "/fhir", bodies, gateway_headers, args.concurrency
                )
            )
    return {path: summarise(phases) for path, phases in results.items()}


class PeakRss:
    """Highest resident set size of a process, sampled every 50 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def post_once(url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    response = httpx.post(url, content=body, headers=headers, timeout=1200)
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {"status": response.status_code, "seconds": round(seconds, 2)}
    if response.status_code >= 400:
        issues = response.json().get("issue", [])
        result["diagnostics"] = issues[0].get("diagnostics", "")[:300] if issues else ""
    return result


def elderly(hapi: str, port: int, folder: Path) -> dict[str, Any]:
    infrastructure, [patient] = load_set(synthea_set("elderly"))
    body = renamed(patient, f"elderly-{time.time_ns()}")
    headers = {**FHIR_JSON, "Authorization": f"Bearer {API_KEY}"}
    found: dict[str, Any] = {"entries": entries(body), "bytes": len(body)}
    for batch in infrastructure:
        httpx.post(hapi, content=batch, headers=FHIR_JSON, timeout=120).raise_for_status()
    proc, base = start_gateway(hapi, port, folder, "default-limits")
    try:
        with PeakRss(proc.pid) as rss:
            found["default_limits"] = post_once(base + "/fhir", body, headers)
        found["default_limits"]["peak_rss_mb"] = round(rss.peak / 2**20)
    finally:
        stop_process(proc)
    proc, base = start_gateway(
        hapi,
        port,
        folder,
        "raised-limits",
        max_body_bytes=str(64 * 2**20),
        max_bundle_entries="20000",
    )
    try:
        for batch in infrastructure:
            httpx.post(base + "/fhir", content=batch, headers=headers, timeout=120)
        idle = psutil.Process(proc.pid).memory_info().rss
        with PeakRss(proc.pid) as rss:
            found["raised_limits"] = post_once(base + "/fhir", body, headers)
        found["raised_limits"]["peak_rss_mb"] = round(rss.peak / 2**20)
        found["raised_limits"]["idle_rss_mb"] = round(idle / 2**20)
    finally:
        stop_process(proc)
    found["direct"] = post_once(hapi, renamed(patient, f"direct-{time.time_ns()}"), FHIR_JSON)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds of all patients per path")
    parser.add_argument("--concurrency", type=int, default=2, help="clients per path")
    parser.add_argument("--port", type=int, default=18410, help="gateway port (loopback)")
    parser.add_argument("--fhir-url", help="HAPI base (default: $FHIR_TEST_SERVER_URL, ...)")
    parser.add_argument("--elderly", action="store_true", help="also the ~10,000-entry bundle")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    hapi, started_hapi = resolve_hapi(args.fhir_url, args.json)
    infrastructure, patients = load_set(synthea_set("oncology"))
    result: dict[str, Any] = {"machine": machine(), "hapi": hapi, "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="bench-synthea-") as tmp:
        folder = Path(tmp)
        proc, base = start_gateway(hapi, args.port, folder, "gateway")
        try:
            result["throughput"] = asyncio.run(
                throughput(hapi, base, infrastructure, patients, args)
            )
        finally:
            stop_process(proc)
        if args.elderly:
            result["elderly"] = elderly(hapi, args.port, folder)
    if started_hapi:
        subprocess.run(["bash", str(ROOT / "tests/hapi-server/hapi.sh"), "stop"], check=False)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(machine_line(result["machine"]))
    print(
        f"HAPI {hapi}; {len(patients)} Synthea patients x {args.rounds} rounds, "
        f"concurrency {args.concurrency}"
    )
    print(
        f"{'path':8} {'patients/s':>11} {'resources/s':>12} {'p50 ms':>8} {'p90 ms':>8}  statuses"
    )
    for path, row in result["throughput"].items():
        print(
            f"{path:8} {row['patients_per_s']:>11.2f} {row['resources_per_s']:>12.0f} "
            f"{row['p50_ms']:>8} {row['p90_ms']:>8}  {row['statuses']}"
        )
    direct, gateway = result["throughput"]["direct"], result["throughput"]["gateway"]
    print(
        f"gateway / direct throughput: {gateway['patients_per_s'] / direct['patients_per_s']:.2f}"
    )
    if args.elderly:
        big = result["elderly"]
        print(f"elderly patient: {big['entries']} entries, {big['bytes'] / 2**20:.1f} MB")
        for key in ("default_limits", "raised_limits", "direct"):
            print(f"  {key:15} {big[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
