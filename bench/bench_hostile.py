"""How long /healthz takes while the gateway processes hostile 5 MB bodies.

Starts the gateway (``python -m adapter.gateway``, production defaults: body work in worker
processes) on a loopback port with a throwaway key, measures /healthz alone (baseline), then
again while each hostile body is being processed, and while all of them are at once:

* ``quotes``: an unterminated string of escaped quotes (the issue's reproduction, 5 MB);
* ``deep``: brackets nested 2.6 million levels deep;
* ``errors``: a case record with 187,000 invalid observations (every one reported, capped);
* ``bundle``: a transaction of 1,000 entries full of invalid elements.

Prints, per phase, the /healthz latency (p50, p99, max, samples) and what became of each
body (status, seconds). No upstream is needed: every body is refused before delivery.

    .venv/bin/python bench/bench_hostile.py [--window 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import ROOT, machine, machine_line, percentile

SIZE = 5 * 1024 * 1024 - 1024
PATHS = {
    "quotes": "/case-records/$convert",
    "deep": "/case-records/$convert",
    "errors": "/case-records/$convert",
    "bundle": "/fhir",
}


def hostile(kind: str) -> bytes:
    """A body of about 5 MB of the given kind."""
    if kind == "quotes":
        return ('{"a":"' + '\\"' * ((SIZE - 6) // 2)).encode()
    if kind == "deep":
        return b"[" * (SIZE // 2) + b"]" * (SIZE // 2)
    if kind == "errors":
        record = json.loads((ROOT / "examples/cases/caruso2022-02.json").read_text())
        record["observations"] = [{"kind": "wbc", "value": "x"}] * (SIZE // 28)
        return json.dumps(record, separators=(",", ":")).encode()
    filler = "x" * ((SIZE // 1000) - 300)
    entry = {
        "resource": {"resourceType": "Observation", "status": 7, "valueString": filler},
        # An id in the default client's space: the write policy lets it through to validation.
        "request": {"method": "PUT", "url": f"Observation/default-{'0' * 32}"},
    }
    return json.dumps(
        {"resourceType": "Bundle", "type": "transaction", "entry": [entry] * 1000}
    ).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample(base: str, seconds: float, stop: threading.Event | None = None) -> list[float]:
    """/healthz latencies (ms), one request every 20 ms, for ``seconds`` or until ``stop``."""
    latencies = []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=base, timeout=60) as client:
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            started = time.perf_counter()
            client.get("/healthz")
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)
    return latencies


def summary(latencies: list[float]) -> dict[str, Any]:
    return {
        "samples": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies), 1),
    }


def run_phase(base: str, key: str, kinds: list[str], window: float) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    threads = []
    for kind in kinds:
        body = hostile(kind)
        results[kind] = {"bytes": len(body)}

        def post(kind: str = kind, body: bytes = body) -> None:
            started = time.perf_counter()
            try:
                response = httpx.post(
                    base + PATHS[kind],
                    content=body,
                    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                    timeout=600,
                )
                results[kind]["status"] = response.status_code
            except httpx.HTTPError as exc:
                results[kind]["status"] = type(exc).__name__
            results[kind]["seconds"] = round(time.perf_counter() - started, 1)

        threads.append(threading.Thread(target=post, daemon=True))
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    latencies = sample(base, window)
    for thread in threads:
        thread.join()
    return {"healthz": summary(latencies), "bodies": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=10.0, help="seconds of /healthz per phase")
    parser.add_argument("--kinds", default="quotes,deep,errors,bundle")
    parser.add_argument("--cpu-timeout", default="120", help="FHIR_ADAPTER_CPU_TIMEOUT")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    key = secrets.token_urlsafe(32)
    report: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")} | {
            "FHIR_ADAPTER_API_KEYS": key,
            "FHIR_ADAPTER_DB": str(Path(tmp) / "outbox.sqlite3"),
            "FHIR_ADAPTER_CPU_TIMEOUT": args.cpu_timeout,
            "FHIR_ADAPTER_CREDENTIAL_RATE": "0",
            "FHIR_ADAPTER_NAMESPACE": "https://bench-hostile.example.org",
        }
        log = (Path(tmp) / "gateway.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "adapter.gateway", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise SystemExit("the gateway did not start") from None
                    time.sleep(0.2)
            time.sleep(3)  # worker processes started
            report["baseline"] = summary(sample(base, args.window))
            for kind in kinds:
                report[kind] = run_phase(base, key, [kind], args.window)
            report["all"] = run_phase(base, key, kinds, args.window)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(machine_line(report["machine"]))
    print(f"{'phase':10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'n':>5}  bodies")
    for phase in ["baseline", *kinds, "all"]:
        entry = report[phase]
        healthz = entry.get("healthz", entry)
        bodies = ", ".join(
            f"{kind} {r.get('bytes', 0) / 1e6:.1f} MB → {r.get('status')} in {r.get('seconds')} s"
            for kind, r in entry.get("bodies", {}).items()
        )
        print(
            f"{phase:10} {healthz['p50_ms']:8} {healthz['p99_ms']:8} {healthz['max_ms']:8} "
            f"{healthz['samples']:5}  {bodies}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
