"""Durability under fire: N concurrent pushes while the gateway is SIGKILLed, then counted on HAPI.

What a hospital cares about after a crash: every push the gateway acknowledged (201 or 202)
reaches the upstream exactly once, and a push it did not acknowledge can simply be sent again.
This script is that scenario with the gateway's production checks on (client model, rate
limits, worker processes): it starts a gateway (``python -m adapter.gateway``) in front of a
HAPI server, pushes ``--pushes`` case records (the smallest example under fresh record_ids)
from ``--concurrency`` concurrent senders that behave like an integration engine (resend on a
dropped connection, wait ``Retry-After`` on 429/503), SIGKILLs the gateway ``--kills`` times
while pushes are in flight and restarts it on the same outbox, waits until every acknowledged
submission is delivered, then counts what HAPI holds for the run's namespace, per resource type.

    .venv/bin/python bench/bench_durability.py [--fhir-url URL] [--pushes 900] [--json]

Printed: acknowledgements, sends again (connections cut or refused around a kill), 429s and
503s seen, time to acknowledge and to deliver everything, and per resource type the count on
HAPI against the expected one: ``lost`` and ``duplicated`` must both be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import ROOT, machine, machine_line

CASE = "caruso2022-12"


def free_port() -> int:
    span = os.environ.get("FHIR_ADAPTER_TEST_PORTS")
    candidates = [0]
    if span:
        low, high = (int(part) for part in span.split("-"))
        candidates = list(range(low, high + 1))
        secrets.SystemRandom().shuffle(candidates)
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise SystemExit("no free port")


class GatewayProcess:
    """The gateway as a process that can be SIGKILLed and restarted on the same port and DB."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.base = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "adapter.gateway", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"gateway exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SystemExit("gateway did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


async def push_all(
    gateway: GatewayProcess, bodies: list[bytes], headers: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    """Push every body until acknowledged, killing the gateway at the planned counts."""
    stats: Counter[str] = Counter()
    acknowledged: list[str] = []
    kill_at = [len(bodies) * (k + 1) // (args.kills + 1) for k in range(args.kills)]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    restarting = asyncio.Lock()

    async def killer() -> None:
        for target in kill_at:
            while len(acknowledged) < target:
                await asyncio.sleep(0.05)
            async with restarting:
                gateway.kill()
                stats["kills"] += 1
                await asyncio.to_thread(gateway.start)

    async def sender(client: httpx.AsyncClient) -> None:
        while True:
            try:
                body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            while True:
                try:
                    response = await client.post("/case-records", content=body, headers=headers)
                except httpx.HTTPError:
                    stats["resent"] += 1  # connection cut or refused: the EHR sends it again
                    await asyncio.sleep(0.5)
                    continue
                if response.status_code in (201, 202):
                    stats[str(response.status_code)] += 1
                    acknowledged.append(response.json()["id"])
                    break
                if response.status_code in (429, 503):
                    stats[str(response.status_code)] += 1
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                    continue
                raise SystemExit(f"push refused: {response.status_code} {response.text[:300]}")

    started = time.perf_counter()
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=gateway.base, timeout=120, limits=limits) as client:
        kill_task = asyncio.create_task(killer())
        await asyncio.gather(*(sender(client) for _ in range(args.concurrency)))
        await kill_task
    stats["seconds_to_acknowledge"] = round(time.perf_counter() - started, 1)  # type: ignore[assignment]
    return {"stats": dict(stats), "acknowledged": acknowledged}


async def wait_delivered(
    gateway: GatewayProcess, ids: list[str], headers: dict[str, str]
) -> dict[str, Any]:
    """Poll every acknowledged submission until delivered (honouring 429)."""
    started = time.perf_counter()
    pending = set(ids)
    failed: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=gateway.base, timeout=60) as client:
        while pending:
            for submission in sorted(pending):
                response = await client.get(f"/submissions/{submission}", headers=headers)
                if response.status_code == 429:
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                    continue
                view = response.json()
                if view.get("status") == "delivered":
                    pending.discard(submission)
                elif view.get("status") == "failed":
                    failed[submission] = view
                    pending.discard(submission)
            if pending:
                await asyncio.sleep(1)
            if time.perf_counter() - started > 1800:
                raise SystemExit(f"{len(pending)} submissions not delivered in 30 min")
    return {"seconds_to_deliver": round(time.perf_counter() - started, 1), "failed": failed}


def hapi_counts(hapi: str, namespace: str, expected: Counter[str], pushes: int) -> dict[str, Any]:
    """Per type, how many resources of the run's patients HAPI holds."""
    counts = {}
    with httpx.Client(base_url=hapi.rstrip("/") + "/", timeout=120) as client:
        patients = f"{namespace}/fhir/identifier/case-record|"  # every Patient of the run
        for resource_type, per_record in sorted(expected.items()):
            # Through the subject, so that every type counts alike (AdverseEvent has no
            # identifier search parameter in R4) and a duplicate anywhere shows.
            name = "identifier" if resource_type == "Patient" else "subject:Patient.identifier"
            response = client.get(
                resource_type,
                params={name: patients, "_summary": "count"},
                headers={"Cache-Control": "no-cache"},
            )
            response.raise_for_status()
            found = int(response.json()["total"])
            want = per_record * pushes
            counts[resource_type] = {
                "expected": want,
                "found": found,
                "lost": max(0, want - found),
                "duplicated": max(0, found - want),
            }
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fhir-url", default=os.environ.get("FHIR_TEST_SERVER_URL"))
    parser.add_argument("--pushes", type=int, default=900)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.fhir_url:
        raise SystemExit("give --fhir-url or set FHIR_TEST_SERVER_URL (a running HAPI)")
    run = uuid.uuid4().hex[:10]
    namespace = f"https://durability-{run}.example.org"
    key = secrets.token_urlsafe(32)
    template = json.loads((ROOT / "examples" / "cases" / f"{CASE}.json").read_text())

    from adapter.mapping import ConversionOptions
    from adapter.pipeline import convert_bytes

    converted = convert_bytes(
        "x", json.dumps(template).encode(), ConversionOptions(namespace=namespace)
    )
    assert converted.bundle is not None
    expected = Counter(
        e["resource"]["resourceType"]
        for e in converted.bundle["entry"]
        if e["resource"]["resourceType"] != "Provenance"
    )
    bodies = []
    for index in range(args.pushes):
        template["record_id"] = f"dur-{run}-{index:05d}"
        bodies.append(json.dumps(template).encode())
    report: dict[str, Any] = {"machine": machine(), "pushes": args.pushes, "kills": args.kills}
    with tempfile.TemporaryDirectory(prefix="bench-durability-") as tmp:
        clients = Path(tmp) / "clients.json"
        digest = hashlib.sha256(key.encode()).hexdigest()
        clients.write_text(
            json.dumps(
                {
                    "clients": [
                        {
                            "id": "durability",
                            "scopes": ["read", "write", "convert"],
                            "namespace": namespace,
                            "api_keys": [f"sha256:{digest}"],
                        }
                    ]
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")} | {
            "FHIR_ADAPTER_UPSTREAM_URL": args.fhir_url,
            "FHIR_ADAPTER_CLIENTS": str(clients),
            "FHIR_ADAPTER_DB": str(Path(tmp) / "outbox.sqlite3"),
            "FHIR_ADAPTER_NAMESPACE": f"https://durability-{run}-gateway.example.org",
            "FHIR_ADAPTER_LEASE_SECONDS": "10",
            "FHIR_ADAPTER_RETRY_BASE_SECONDS": "0.2",
            "FHIR_ADAPTER_RETRY_MAX_SECONDS": "5",
            "FHIR_ADAPTER_POLL_SECONDS": "0.5",
        }
        gateway = GatewayProcess(env, free_port(), Path(tmp) / "gateway.log")
        gateway.start()
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/fhir+json"}
        try:
            pushed = asyncio.run(push_all(gateway, bodies, headers, args))
            report.update(pushed["stats"])
            report["submissions"] = len(pushed["acknowledged"])
            report.update(asyncio.run(wait_delivered(gateway, pushed["acknowledged"], headers)))
        finally:
            gateway.stop()
        report["hapi"] = hapi_counts(args.fhir_url, namespace, expected, args.pushes)
    lost = sum(c["lost"] for c in report["hapi"].values())
    duplicated = sum(c["duplicated"] for c in report["hapi"].values())
    report["lost"], report["duplicated"] = lost, duplicated
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(machine_line(report["machine"]))
        print(
            f"{args.pushes} pushes, {args.concurrency} concurrent senders, "
            f"{report.get('kills', 0)} SIGKILLs: {report['submissions']} acknowledged "
            f"({report.get('201', 0)} x 201, {report.get('202', 0)} x 202) in "
            f"{report['seconds_to_acknowledge']} s; {report.get('resent', 0)} sends again after "
            f"a cut or refused connection, {report.get('429', 0)} x 429, "
            f"{report.get('503', 0)} x 503; all "
            f"delivered {report['seconds_to_deliver']} s later, {len(report['failed'])} failed"
        )
        for resource_type, count in report["hapi"].items():
            print(
                f"  {resource_type:26} expected {count['expected']:6} found {count['found']:6} "
                f"lost {count['lost']} duplicated {count['duplicated']}"
            )
        for submission, view in report["failed"].items():
            outcome = (view.get("upstream") or {}).get("outcome") or {}
            first = (outcome.get("issue") or [{}])[0].get("diagnostics", "")
            print(f"  failed {submission}: {view.get('error')}; {first[:300]}")
        print(f"lost {lost}, duplicated {duplicated}")
    return 0 if lost == 0 and duplicated == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
