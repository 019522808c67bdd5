"""Gateway throughput with one and with two instances sharing one Postgres outbox.

What a hospital gains by adding a second ``fhir-adapter serve`` behind its load balancer.
For each instance count (in ABBA order over ``--rounds``), a fresh outbox database in the
tests/postgres/pg.sh cluster (durable when started here), the gateways started as
``fhir-adapter serve`` processes, and ``--cases`` synthetic case records POSTed to
``/case-records`` by ``--concurrency`` clients spread round-robin over the instances (the
load balancer). Every gateway waits up to 60 s for the upstream (``SYNC_TIMEOUT``), so a
201 means the case is on the server: cases/s is end-to-end throughput. Each phase has its
own identifier namespace, so every case creates fresh resources.

Upstream: HAPI on PostgreSQL (tests/hapi-server/hapi.sh, ``HAPI_DB=postgres``, restarted on
an empty database), ``--db h2``, ``--fhir-url``, or ``--stub``, a null upstream that answers
at once (then the figure is the gateways' own capacity; on this 2-core machine the client
shares the cores with them).

    .venv/bin/python bench/bench_gateways.py [--instances 1 2] [--cases 300] [--stub]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import secrets
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
from bench_gateway import start_stub
from benchutil import machine, machine_line, percentile
from stack import (
    HAPI_SH,
    Hapi,
    Postgres,
    _script,
    load_average,
    say,
    start_gateway,
    stop_process,
)

from adapter.synthetic import generate_cases


async def post_spread(
    bases: list[str], bodies: list[bytes], api_key: str, concurrency: int
) -> tuple[list[float], Counter[int], float]:
    """POST every record, each request to the next gateway in turn (a round-robin balancer)."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    queue = iter(bodies)
    turn = itertools.cycle(bases)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=300.0) as client:

        async def worker() -> None:
            for body in queue:
                start = time.perf_counter()
                try:
                    url = f"{next(turn)}/case-records"
                    response = await client.post(url, content=body, headers=headers)
                    statuses[response.status_code] += 1
                except httpx.HTTPError:
                    statuses[0] += 1
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses, time.perf_counter() - started


def wait_delivered(database: str, expected: int, timeout: float = 900.0) -> float:
    """Seconds until the outbox holds ``expected`` delivered rows (202s delivered later)."""
    import psycopg

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with psycopg.connect(database) as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM gateway_submissions WHERE state IN ('delivered', 'failed')"
            ).fetchone()
        if row and row[0] >= expected:
            return time.monotonic() - started
        time.sleep(0.5)
    raise SystemExit(f"not all {expected} submissions were delivered in {timeout} s")


def phase(
    instances: int,
    label: str,
    upstream: str,
    postgres: Postgres,
    bodies: list[bytes],
    args: argparse.Namespace,
    folder: Path,
) -> dict[str, Any]:
    api_key = secrets.token_urlsafe(24)
    database = postgres.fresh_database(f"gw_bench_{label}")
    namespace = f"https://bench-gw-{label}-{secrets.token_hex(3)}.example"
    env = {
        "FHIR_ADAPTER_UPSTREAM_URL": upstream,
        "FHIR_ADAPTER_API_KEYS": api_key,
        "FHIR_ADAPTER_DB": database,
        "FHIR_ADAPTER_NAMESPACE": namespace,
        "FHIR_ADAPTER_SYNC_TIMEOUT": "60",
        "FHIR_ADAPTER_UPSTREAM_TIMEOUT": "120",
    }
    gateways = [
        start_gateway(env, folder, f"gw-{label}-{i + 1}", args.json) for i in range(instances)
    ]
    try:
        bases = [base for _, base in gateways]
        asyncio.run(post_spread(bases, bodies[: args.warmup], api_key, args.concurrency))
        load_before = load_average()
        latencies, statuses, wall = asyncio.run(
            post_spread(bases, bodies[args.warmup :], api_key, args.concurrency)
        )
        drain = wait_delivered(database, len(bodies))
    finally:
        for process, _ in gateways:
            stop_process(process)
    ms = [x * 1e3 for x in latencies]
    measured = len(bodies) - args.warmup
    return {
        "instances": instances,
        "cases": measured,
        "statuses": dict(sorted(statuses.items())),
        "wall_s": round(wall, 2),
        "cases_per_s": round(measured / wall, 2),
        "drain_after_s": round(drain, 1),
        "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "load_before": load_before,
        "load_after": load_average(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cases", type=int, default=300, help="measured cases per phase")
    parser.add_argument("--warmup", type=int, default=16, help="unmeasured cases per phase")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds over --instances")
    parser.add_argument("--seed", type=int, default=5, help="synthetic stream seed")
    parser.add_argument("--db", choices=["h2", "postgres"], default="postgres", help="HAPI's db")
    parser.add_argument("--fhir-url", help="use this running FHIR server as upstream")
    parser.add_argument("--stub", action="store_true", help="null upstream instead of HAPI")
    parser.add_argument(
        "--hapi-validation",
        choices=["on", "off"],
        default="on",
        help="HAPI's request validation (on as in the tests; off is HAPI's JPA starter default)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    info = machine()
    bodies = [orjson.dumps(r) for r in generate_cases(args.warmup + args.cases, seed=args.seed)]
    results: list[dict[str, Any]] = []
    hapi: Hapi | None = None
    stub = None
    with tempfile.TemporaryDirectory(prefix="fhir-bench-gateways-") as tmp:
        folder = Path(tmp)
        postgres = Postgres(args.json)
        try:
            if args.stub:
                stub, upstream = start_stub(folder)
                upstream_text = "null upstream (--stub)"
            elif args.fhir_url:
                upstream, upstream_text = args.fhir_url.rstrip("/"), args.fhir_url
            else:
                _script(HAPI_SH, "stop")
                hapi = Hapi(args.db, args.json, validation=args.hapi_validation == "on")
                upstream, upstream_text = hapi.url, hapi.description
            outbox_text = postgres.describe()
            for round_index in range(args.rounds):
                order = args.instances if round_index % 2 == 0 else args.instances[::-1]
                for instances in order:
                    label = f"{instances}x_r{round_index + 1}"
                    say(f"phase {label}: {instances} gateway(s) ...", args.json)
                    results.append(
                        phase(instances, label, upstream, postgres, bodies, args, folder)
                    )
        finally:
            if stub is not None:
                stop_process(stub)
            if hapi is not None:
                hapi.stop()
            postgres.stop()
    per_count: dict[int, list[float]] = {}
    for row in results:
        per_count.setdefault(row["instances"], []).append(row["cases_per_s"])
    means = {k: sum(v) / len(v) for k, v in per_count.items()}
    if args.json:
        output = {"machine": info, "upstream": upstream_text, "outbox": outbox_text}
        print(json.dumps({**output, "phases": results, "mean_cases_per_s": means}, indent=2))
        return 0
    print(machine_line(info))
    print(f"upstream: {upstream_text}; outbox: {outbox_text}")
    print(
        f"{args.cases} synthetic case records per phase (after {args.warmup} warm-up), "
        f"{args.concurrency} concurrent clients, round-robin over the instances"
    )
    print(
        f"{'gateways':<9}{'cases/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'drain s':>9}  statuses"
        "     load before -> after"
    )
    for row in results:
        print(
            f"{row['instances']:<9}{row['cases_per_s']:>9.2f}{row['p50_ms']:>9.0f}"
            f"{row['p95_ms']:>9.0f}{row['drain_after_s']:>9.1f}  {row['statuses']}  "
            f"{row['load_before']} -> {row['load_after']}"
        )
    base = means.get(min(means))
    for count, mean in sorted(means.items()):
        ratio = f" ({mean / base:.2f}x one instance)" if base and count != min(means) else ""
        print(f"mean with {count} gateway(s): {mean:.2f} cases/s{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
