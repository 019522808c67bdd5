"""Gateway overhead: the same cases through the gateway and straight to HAPI, same concurrency.

Two paths, each with ``--concurrency`` clients (httpx, asyncio) posting N synthetic cases:

* ``direct``: the transaction Bundle (converted beforehand, not timed) POSTed to the FHIR base
  of the local HAPI server, with the Provenance entry the gateway appends (so that both paths
  store exactly the same resources; ``--plain-direct`` leaves it out);
* ``gateway``: the case record POSTed to ``/case-records`` of the gateway (started here with
  uvicorn on 127.0.0.1, upstream = the same HAPI), which validates, converts, keeps it in its
  outbox and delivers it before answering 201.

Both paths create fresh resources (each gets its own identifier namespace, so no conditional
create matches an earlier run) and run alternately in ABBA rounds so that neither benefits from
a warmer or emptier server, after a warm-up of both. Reported:

* under load (``--concurrency`` clients): cases/s and latency p50/p90/p99 per path, and the
  throughput ratio gateway/direct (target >= 0.9). With a server that is the bottleneck, the
  percentile differences under load mostly measure queueing, so they are shown but not used
  for the latency targets;
* paired (``--paired`` cases, one request at a time, each case through both paths, alternating
  which goes first): the per-case difference gateway - direct, whose p50/p99 is the latency
  the gateway adds (targets, #15: p50 <= 2 ms, p99 <= 10 ms with the null upstream). It
  includes everything the gateway does: HTTP hop, validate + convert, the outbox writes and
  its own upstream call. The gateway's CPU time per paired request is printed beside it.

HAPI: ``--own-hapi`` runs a private instance of the tests/hapi-server build (own port, heap
``--hapi-heap``; recommended: the shared test server's 1 GB in-memory database can run out of
heap under this load while other sessions use it); otherwise ``--fhir-url``, else
``$FHIR_TEST_SERVER_URL``, else the tests/hapi-server instance if it is running, else it is
started with ``tests/hapi-server/hapi.sh start`` and stopped at the end. ``--stub`` replaces
HAPI by a null upstream that answers at once: then gateway - direct is the gateway's own cost,
resolved to the millisecond (against HAPI, the server's own variance hides a few ms).

    .venv/bin/python bench/bench_gateway.py --own-hapi [--cases 400] [--concurrency 8] [--json]
    .venv/bin/python bench/bench_gateway.py --stub --cases 2000 --paired 500
    .venv/bin/python bench/bench_gateway.py --stub --compiled   # from the compiled wheel
    .venv/bin/python bench/bench_gateway.py --stub --respond-async   # 202 once stored
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
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
import orjson
from benchutil import ROOT, compiled_site, machine, machine_line, percentile, post_concurrently

from adapter.gateway.bundles import add_gateway_provenance, provenance_id
from adapter.mapping import ConversionOptions, convert_record
from adapter.synthetic import generate_cases

HAPI_SH = ROOT / "tests" / "hapi-server" / "hapi.sh"
HAPI_MAIN_CLASS = "org.example.hapiserver.FhirServerMain"
TARGET_P50_MS = 2.0  # issue #15: the gateway's own cost per case record, null upstream
TARGET_P99_MS = 10.0
TARGET_RATIO = 0.9
FHIR_JSON = "application/fhir+json"

# Runs in the gateway subprocess: the packaged serve() (uvicorn, access log off, the gateway's
# audit log on: what `fhir-adapter serve` runs), or the app factory under uvicorn if absent.
LAUNCHER = """
import sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    from adapter.gateway.server import serve
except ImportError:
    import uvicorn
    from adapter.gateway.config import Settings
    from adapter.gateway.main import create_app
    uvicorn.run(create_app(Settings.from_env()), host=host, port=port,
                log_level="warning", access_log=False)
else:
    sys.exit(serve(host, port))
"""


# A null upstream: answers every transaction at once with a transaction-response (one
# "201 Created" per entry), a case record's state read (a batch of searches) with empty
# searchsets, and a read of the gateway's Provenance with 404. Against it, gateway - direct is
# the gateway's own cost, without the FHIR server's own variance (which at p50 is far larger
# than the 5 ms being measured).
STUB = """
import itertools, sys
import orjson, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

ids = itertools.count(1)
FHIR = "application/fhir+json"

async def metadata(request):
    body = {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
            "fhirVersion": "4.0.1", "format": ["json"], "date": "2025-01-01"}
    return Response(orjson.dumps(body), media_type=FHIR)

EMPTY = {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}

def _answer(entry):
    if entry.get("request", {}).get("method") == "GET":  # a record's state read: nothing yet
        return {"resource": EMPTY, "response": {"status": "200 OK"}}
    kind = entry.get("resource", {}).get("resourceType", "Resource")
    return {"response": {"status": "201 Created", "location": f"{kind}/{next(ids)}/_history/1"}}

async def transaction(request):
    bundle = orjson.loads(await request.body())
    kind = "batch-response" if bundle.get("type") == "batch" else "transaction-response"
    entries = [_answer(e) for e in bundle.get("entry", [])]
    body = {"resourceType": "Bundle", "type": kind, "entry": entries}
    return Response(orjson.dumps(body), media_type=FHIR)

async def missing(request):  # the gateway's look-up of its own Provenance: never stored here
    body = {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "not-found"}]}
    return Response(orjson.dumps(body), status_code=404, media_type=FHIR)

app = Starlette(routes=[
    Route("/fhir/metadata", metadata),
    Route("/fhir/{kind}/{id}", missing),
    Route("/fhir", transaction, methods=["POST"]),
    Route("/fhir/", transaction, methods=["POST"]),
])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def start_stub(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The null upstream on a free loopback port."""
    port = free_port()
    log = (folder / "stub.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", STUB, str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/fhir"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit((folder / "stub.log").read_text(errors="replace")[-3000:])
        try:
            if httpx.get(f"{url}/metadata", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_process(proc)
    raise SystemExit("the null upstream did not start")


def say(text: str, to_stderr: bool) -> None:
    print(text, file=sys.stderr if to_stderr else sys.stdout, flush=True)


def resolve_hapi(explicit: str | None, quiet: bool) -> tuple[str, bool]:
    """(FHIR base URL, whether this script started the server and must stop it)."""
    url = explicit or os.environ.get("FHIR_TEST_SERVER_URL")
    if url:
        return url.rstrip("/"), False
    status = subprocess.run(
        ["bash", str(HAPI_SH), "status"], capture_output=True, text=True, check=False
    )
    if status.returncode == 0 and "http" in status.stdout:
        return status.stdout.strip().split()[-1].rstrip("/"), False
    say("starting the local HAPI server (tests/hapi-server/hapi.sh start) ...", quiet)
    started = subprocess.run(
        ["bash", str(HAPI_SH), "start"], capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        raise SystemExit(f"could not start HAPI:\n{started.stderr[-2000:]}")
    return started.stdout.strip().splitlines()[-1].rstrip("/"), True


def start_own_hapi(heap: str, folder: Path, quiet: bool) -> tuple[subprocess.Popen[bytes], str]:
    """A private HAPI (same build as tests/hapi-server, own port and heap) for this run only.

    The shared test server has a 1 GB heap and an in-memory database: a benchmark that
    stores tens of thousands of resources can exhaust it under other sessions' tests.
    """
    build = subprocess.run(
        ["bash", str(HAPI_SH), "build"], capture_output=True, text=True, check=False
    )
    if build.returncode != 0:
        raise SystemExit(f"could not build HAPI:\n{build.stderr[-2000:]}")
    port = free_port()
    target = HAPI_SH.parent / "target"
    log = (folder / "hapi.log").open("wb")
    proc = subprocess.Popen(
        [
            "java",
            f"-Xmx{heap}",
            "-Xms256m",
            f"-Dhapi.port={port}",
            "-Dhapi.host=127.0.0.1",
            "-cp",
            f"{target / 'classes'}:{target / 'lib'}/*",
            HAPI_MAIN_CLASS,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/fhir"
    say(f"starting a private HAPI (pid {proc.pid}, heap {heap}) on {url} ...", quiet)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = (folder / "hapi.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"the private HAPI exited with {proc.returncode}:\n{text}")
        try:
            metadata = httpx.get(f"{url}/metadata", headers={"Accept": FHIR_JSON}, timeout=5)
            if metadata.status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(1)
    stop_process(proc)
    raise SystemExit("the private HAPI did not answer within 300 s")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """TERM a process this script started, KILL it if it does not exit in time."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    """A free loopback port: from ``$BENCH_PORTS`` (``LOW-HIGH``) when set, so that runs on a
    shared machine stay in the range they were given, else any port the system offers."""
    low, _, high = os.environ.get("BENCH_PORTS", "").partition("-")
    candidates = range(int(low), int(high) + 1) if low and high else [0]
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise SystemExit(f"no free port in BENCH_PORTS={os.environ['BENCH_PORTS']}")


SITE: Path | None = None
"""The unpacked compiled wheel when ``--compiled``; None runs the gateway from the source."""


def start_gateway(
    upstream: str, api_key: str, namespace: str, folder: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """Launch the gateway on a free loopback port; returns the process and its base URL."""
    port = free_port()
    compiled = {}
    if SITE is not None:
        compiled = {"PYTHONPATH": str(SITE), "FHIR_ADAPTER_MAPPINGS": str(ROOT / "mappings")}
    env = (
        os.environ
        | compiled
        | {
            "FHIR_ADAPTER_UPSTREAM_URL": upstream,
            "FHIR_ADAPTER_API_KEYS": api_key,
            "FHIR_ADAPTER_DB": str(folder / "gateway.sqlite3"),
            "FHIR_ADAPTER_NAMESPACE": namespace,
            # measure the synchronous path: answer 202 only if HAPI takes longer than this
            "FHIR_ADAPTER_SYNC_TIMEOUT": "60",
            # throughput, not the rate limits (which would answer 429 past 50 pushes a second)
            "FHIR_ADAPTER_CREDENTIAL_RATE": "0",
            "FHIR_ADAPTER_ADDRESS_RATE": "0",
        }
    )
    log = (folder / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, "127.0.0.1", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        # "-c" puts the working directory first on the path: outside the checkout for --compiled
        cwd=ROOT if SITE is None else SITE.parent,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = (folder / "gateway.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"the gateway exited with {proc.returncode}:\n{text}")
        try:
            if httpx.get(base + "/healthz", timeout=1.0).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("the gateway did not answer within 60 s")


run_phase = post_concurrently


async def run_paired(
    client: httpx.AsyncClient,
    paths: dict[str, tuple[str, list[bytes], dict[str, str]]],
    indices: range,
) -> tuple[dict[str, list[float]], list[float], Counter[str]]:
    """One request at a time, each case through both paths (alternating which goes first):
    per-path latencies (s), per-case differences gateway - direct (s), statuses."""
    latencies: dict[str, list[float]] = {name: [] for name in paths}
    statuses: Counter[str] = Counter()
    differences = []
    for k, i in enumerate(indices):
        order = ["direct", "gateway"] if k % 2 == 0 else ["gateway", "direct"]
        taken = {}
        for name in order:
            url, bodies, headers = paths[name]
            start = time.perf_counter()
            try:
                response = await client.post(url, content=bodies[i], headers=headers)
                statuses[f"{name} {response.status_code}"] += 1
            except httpx.HTTPError:
                statuses[f"{name} error"] += 1
            taken[name] = time.perf_counter() - start
            latencies[name].append(taken[name])
        differences.append(taken["gateway"] - taken["direct"])
    return latencies, differences, statuses


def describe(latencies: list[float], statuses: Counter[int], wall: float) -> dict[str, Any]:
    ms = [x * 1e3 for x in latencies]
    return {
        "requests": len(ms),
        "statuses": dict(sorted(statuses.items())),
        "wall_s": wall,
        "per_s": len(ms) / wall if wall else 0.0,
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
        "mean_ms": sum(ms) / len(ms) if ms else float("nan"),
    }


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (and its children) so far, or None."""
    if pid is None:
        return None
    import psutil

    try:
        proc = psutil.Process(pid)
        total = 0.0
        for item in [proc, *proc.children(recursive=True)]:
            times = item.cpu_times()
            total += times.user + times.system
        return total
    except psutil.Error:
        return None


async def benchmark(
    hapi: str,
    gateway: str,
    api_key: str,
    args: argparse.Namespace,
    ns: dict[str, str],
    gateway_pid: int | None = None,
) -> dict[str, Any]:
    total = args.warmup + args.cases + args.paired
    records = list(generate_cases(total, seed=args.seed))
    direct_options = ConversionOptions(namespace=ns["direct"])
    direct_bundles = [convert_record(r, direct_options).bundle for r in records]
    if not args.plain_direct:
        # exactly what the gateway sends upstream: the bundle plus the gateway's Provenance
        for bundle in direct_bundles:
            add_gateway_provenance(
                bundle,
                provenance_id=provenance_id("bench", bundle),
                client_id="bench",
                submission_id=str(uuid.uuid4()),
                principal="bench",
                instance_id="bench-direct",
                recorded=time.time(),
                namespace=ns["direct"],
            )
    direct_bodies = [orjson.dumps(b) for b in direct_bundles]
    del direct_bundles
    gateway_bodies = [orjson.dumps(r) for r in records]
    direct_headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    gateway_headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": f"Bearer {api_key}",
    }
    if args.respond_async:  # answered 202 once stored; the outbox delivers after the answer
        gateway_headers["Prefer"] = "respond-async"
    paths = {
        "direct": (hapi, direct_bodies, direct_headers),
        "gateway": (gateway + "/case-records", gateway_bodies, gateway_headers),
    }
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    results: dict[str, tuple[list[float], Counter[int], float]] = {
        name: ([], Counter(), 0.0) for name in paths
    }
    async with httpx.AsyncClient(limits=limits, timeout=120.0) as client:
        for name, (url, bodies, headers) in paths.items():  # warm-up, not measured
            _, statuses, _ = await run_phase(
                client, url, bodies[: args.warmup], headers, args.concurrency
            )
            if any(code >= 300 or code == 0 for code in statuses if code != 202):
                say(f"warning: warm-up of {name} answered {dict(statuses)}", args.json)
        measured = range(args.warmup, args.warmup + args.cases)
        size = max(1, len(measured) // args.rounds)
        slices = [measured[i : i + size] for i in range(0, len(measured), size)]
        for index, part in enumerate(slices):
            order = ["direct", "gateway"] if index % 2 == 0 else ["gateway", "direct"]
            for name in order:
                url, bodies, headers = paths[name]
                lat, statuses, wall = await run_phase(
                    client, url, [bodies[i] for i in part], headers, args.concurrency
                )
                all_lat, all_statuses, all_wall = results[name]
                all_lat.extend(lat)
                all_statuses.update(statuses)
                results[name] = (all_lat, all_statuses, all_wall + wall)
            say(
                f"  round {index + 1}/{len(slices)}: {len(part)} cases per path, "
                f"{args.concurrency} concurrent",
                args.json,
            )
        paired_range = range(args.warmup + args.cases, total)
        cpu_before = _cpu_seconds(gateway_pid)
        paired_lat, differences, paired_statuses = await run_paired(client, paths, paired_range)
        cpu_after = _cpu_seconds(gateway_pid)
        if paired_range:
            say(f"  paired: {len(paired_range)} cases, one request at a time", args.json)
    direct = describe(*results["direct"])
    through = describe(*results["gateway"])
    loaded_added = {
        f"{q}_ms": through[f"{q}_ms"] - direct[f"{q}_ms"] for q in ("p50", "p90", "p99")
    }
    ratio = through["per_s"] / direct["per_s"] if direct["per_s"] else float("nan")
    entries = sum(len(orjson.loads(b)["entry"]) for b in direct_bodies[args.warmup :])
    diff_ms = [d * 1e3 for d in differences]
    paired: dict[str, Any] = {
        "cases": len(diff_ms),
        "statuses": dict(sorted(paired_statuses.items())),
        **{
            f"{name}_{q}_ms": percentile([x * 1e3 for x in lat], n)
            for name, lat in paired_lat.items()
            for q, n in (("p50", 50), ("p99", 99))
        },
        "added_p50_ms": percentile(diff_ms, 50),
        "added_p90_ms": percentile(diff_ms, 90),
        "added_p99_ms": percentile(diff_ms, 99),
        # CPU the gateway process spent per paired request: steadier than latency on a
        # shared machine (other processes' load inflates waiting, not this).
        "gateway_cpu_ms_per_request": (cpu_after - cpu_before) / len(diff_ms) * 1e3
        if diff_ms and cpu_before is not None and cpu_after is not None
        else None,
        "load_average": os.getloadavg()[0],
    }
    # The targets are about the gateway's own cost: the paired, unloaded differences when
    # they were measured; else the percentile differences under load.
    added_p50 = paired["added_p50_ms"] if diff_ms else loaded_added["p50_ms"]
    added_p99 = paired["added_p99_ms"] if diff_ms else loaded_added["p99_ms"]
    return {
        "cases": args.cases,
        "concurrency": args.concurrency,
        "resources_per_case": entries / max(total - args.warmup, 1),
        "direct": direct,
        "gateway": through,
        "added_under_load": loaded_added,
        "paired": paired,
        "throughput_ratio": ratio,
        "added_p50_ms": added_p50,
        "added_p99_ms": added_p99,
        "meets_p50": added_p50 <= TARGET_P50_MS,
        "meets_p99": added_p99 <= TARGET_P99_MS,
        "meets_ratio": ratio >= TARGET_RATIO,
    }


def print_report(result: dict[str, Any], info: dict[str, Any], hapi: str) -> None:
    print(machine_line(info))
    provenance = (
        " (with the gateway Provenance)" if result.get("direct_has_gateway_provenance") else ""
    )
    print(
        f"synthetic cases, transactions of {result['resources_per_case']:.1f} resources on "
        f"average{provenance}; upstream {hapi}\n"
    )
    print(
        f"{result['cases']} cases per path, {result['concurrency']} concurrent clients "
        f"(ABBA rounds):"
    )
    print(
        f"{'path':<10}{'requests':>9}{'cases/s':>9}{'p50 ms':>9}{'p90 ms':>9}"
        f"{'p99 ms':>9}{'max ms':>9}  statuses"
    )
    for name in ("direct", "gateway"):
        row = result[name]
        print(
            f"{name:<10}{row['requests']:>9}{row['per_s']:>9.2f}{row['p50_ms']:>9.1f}"
            f"{row['p90_ms']:>9.1f}{row['p99_ms']:>9.1f}{row['max_ms']:>9.1f}  {row['statuses']}"
        )
    loaded = result["added_under_load"]
    print(
        f"{'gw-direct':<10}{'':>9}{result['throughput_ratio']:>8.2f}x{loaded['p50_ms']:>+9.1f}"
        f"{loaded['p90_ms']:>+9.1f}{loaded['p99_ms']:>+9.1f}"
    )
    paired = result["paired"]
    if paired["cases"]:
        print(
            f"\n{paired['cases']} cases through both paths, one request at a time "
            f"(per-case gateway - direct):"
        )
        print(
            f"  direct  p50 {paired['direct_p50_ms']:.1f} ms, p99 {paired['direct_p99_ms']:.1f}"
            f" ms; gateway p50 {paired['gateway_p50_ms']:.1f} ms, p99 "
            f"{paired['gateway_p99_ms']:.1f} ms"
        )
        print(
            f"  added   p50 {paired['added_p50_ms']:+.1f} ms, p90 {paired['added_p90_ms']:+.1f}"
            f" ms, p99 {paired['added_p99_ms']:+.1f} ms   statuses {paired['statuses']}"
            + (
                f"\n  gateway CPU {paired['gateway_cpu_ms_per_request']:.2f} ms per request, "
                f"load average {paired['load_average']:.1f}"
                if paired.get("gateway_cpu_ms_per_request") is not None
                else ""
            )
        )
    print()
    print(
        f"summary: gateway adds {result['added_p50_ms']:+.1f} ms at p50 (target <= "
        f"{TARGET_P50_MS:g}: {'met' if result['meets_p50'] else 'NOT met'}), "
        f"{result['added_p99_ms']:+.1f} ms at p99 (target <= {TARGET_P99_MS:g}: "
        f"{'met' if result['meets_p99'] else 'NOT met'}){' (paired)' if paired['cases'] else ''}"
        f"; throughput ratio {result['throughput_ratio']:.2f} at {result['concurrency']} "
        f"concurrent (target >= {TARGET_RATIO:g}: {'met' if result['meets_ratio'] else 'NOT met'})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=400, help="measured cases per path")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument("--warmup", type=int, default=24, help="unmeasured cases per path")
    parser.add_argument("--rounds", type=int, default=4, help="alternating ABBA rounds")
    parser.add_argument(
        "--paired", type=int, default=100, help="cases sent one at a time through both paths"
    )
    parser.add_argument("--seed", type=int, default=7, help="synthetic stream seed")
    parser.add_argument("--fhir-url", help="FHIR base of the HAPI server")
    parser.add_argument(
        "--own-hapi",
        action="store_true",
        help="run a private HAPI for this run (own port and heap), stopped at the end",
    )
    parser.add_argument("--hapi-heap", default="3g", help="heap of --own-hapi (java -Xmx)")
    parser.add_argument(
        "--stub",
        action="store_true",
        help="null upstream instead of HAPI: the gateway's own cost, without server noise",
    )
    parser.add_argument(
        "--plain-direct",
        action="store_true",
        help="post the converted bundle without the gateway's Provenance on the direct path",
    )
    parser.add_argument("--gateway-url", help="use this running gateway instead of starting one")
    parser.add_argument("--api-key", help="API key of --gateway-url")
    parser.add_argument(
        "--compiled", action="store_true", help="run the gateway from the mypyc-compiled wheel"
    )
    parser.add_argument(
        "--respond-async",
        action="store_true",
        help="send case records with Prefer: respond-async (202 once stored, delivered after)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    if args.gateway_url and not args.api_key:
        parser.error("--gateway-url needs --api-key")

    info = machine()
    run = f"{int(time.time())}-{secrets.token_hex(3)}"
    ns = {
        "direct": f"https://bench-direct-{run}.example.org",
        "gateway": f"https://bench-gateway-{run}.example.org",
    }
    hapi_proc: subprocess.Popen[bytes] | None = None
    gateway_proc: subprocess.Popen[bytes] | None = None
    started_hapi = False
    with tempfile.TemporaryDirectory(prefix="fhir-bench-gateway-") as tmp:
        try:
            if args.stub:
                hapi_proc, hapi = start_stub(Path(tmp))
                hapi_kind = "null upstream (--stub), not HAPI"
            elif args.own_hapi:
                hapi_proc, hapi = start_own_hapi(args.hapi_heap, Path(tmp), args.json)
                hapi_kind = f"private HAPI (heap {args.hapi_heap})"
            else:
                hapi, started_hapi = resolve_hapi(args.fhir_url, args.json)
                hapi_kind = "started by hapi.sh" if started_hapi else "already running"
            httpx.get(
                f"{hapi}/metadata", headers={"Accept": FHIR_JSON}, timeout=30
            ).raise_for_status()
            if args.gateway_url:
                gateway, api_key = args.gateway_url.rstrip("/"), args.api_key
                say("note: an external gateway uses its own namespace", args.json)
            else:
                api_key = secrets.token_urlsafe(24)  # a key for this run only
                if args.compiled:
                    global SITE
                    say("building the compiled wheel (FHIR_ADAPTER_COMPILE=1) ...", args.json)
                    SITE = compiled_site(Path(tmp))
                gateway_proc, gateway = start_gateway(hapi, api_key, ns["gateway"], Path(tmp))
                mode = "Prefer: respond-async" if args.respond_async else "synchronous"
                say(f"gateway (pid {gateway_proc.pid}) on {gateway}, upstream {hapi}", args.json)
                say(
                    f"pushes: {mode}; gateway from the {'compiled wheel' if SITE else 'source'}",
                    args.json,
                )
            result = asyncio.run(
                benchmark(
                    hapi, gateway, api_key, args, ns, gateway_proc.pid if gateway_proc else None
                )
            )
        finally:
            if gateway_proc is not None:
                stop_process(gateway_proc, 15)
            if hapi_proc is not None:
                stop_process(hapi_proc)
            if started_hapi:
                subprocess.run(["bash", str(HAPI_SH), "stop"], capture_output=True, check=False)
    result["machine"] = info
    result["hapi"] = f"{hapi} ({hapi_kind})"
    result["direct_has_gateway_provenance"] = not args.plain_direct
    failures = {
        code: n
        for path in ("direct", "gateway")
        for code, n in result[path]["statuses"].items()
        if code == 0 or code >= 500
    }
    result["server_failures"] = failures
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result, info, result["hapi"])
        if failures:
            print(
                f"WARNING: the FHIR server failed during the run ({failures}: 5xx or no "
                "answer); the figures are not comparable. Try --own-hapi."
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
