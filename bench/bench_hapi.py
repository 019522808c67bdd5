"""HAPI's own speed on H2 (in memory) and on PostgreSQL: transactions per second.

The gateway and bulk-push figures are only as meaningful as the server behind them, so this
measures the server alone: synthetic cases converted beforehand (fresh identifier namespace,
so every conditional create creates) and POSTed as transactions straight to HAPI with
``--concurrency`` clients, after ``--warmup`` unmeasured ones. For each database HAPI is
restarted by ``tests/hapi-server/hapi.sh`` (``HAPI_DB``) on an empty database; PostgreSQL is
the ``tests/postgres/pg.sh`` cluster, started durable (fsync on) when it is not running.

    .venv/bin/python bench/bench_hapi.py [--db h2 postgres] [--cases 300] [--concurrency 4]

Prints, per database: transactions/s, resources/s, latency p50/p95, HTTP statuses, HAPI's
start-up time, and the load average before and after (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from collections import Counter
from typing import Any

import httpx
import orjson
from benchutil import machine, machine_line, percentile, post_concurrently
from stack import FHIR_JSON, HAPI_SH, Hapi, Postgres, _script, load_average, say

from adapter.mapping import ConversionOptions, convert_record
from adapter.synthetic import generate_cases


async def post_all(
    url: str, bodies: list[bytes], concurrency: int
) -> tuple[list[float], Counter[int], float]:
    """POST every body with ``concurrency`` workers: latencies (s), statuses, wall time (s)."""
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=300.0) as client:
        return await post_concurrently(client, url, bodies, headers, concurrency)


def bodies_for(count: int, seed: int, namespace: str) -> tuple[list[bytes], int]:
    """Transactions of ``count`` synthetic cases and their total number of resources."""
    options = ConversionOptions(namespace=namespace)
    bodies, resources = [], 0
    for record in generate_cases(count, seed=seed):
        bundle = convert_record(record, options).bundle
        resources += len(bundle["entry"])
        bodies.append(orjson.dumps(bundle))
    return bodies, resources


def measure(db: str, args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    hapi = Hapi(db, args.json, validation=args.hapi_validation == "on")
    try:
        run = f"{int(time.time())}-{secrets.token_hex(3)}"
        warm, _ = bodies_for(args.warmup, args.seed + 1, f"https://bench-hapi-warm-{run}.example")
        bodies, resources = bodies_for(args.cases, args.seed, f"https://bench-hapi-{run}.example")
        say(f"  {db}: {args.warmup} warm-up transactions ...", args.json)
        asyncio.run(post_all(hapi.url, warm, args.concurrency))
        say(f"  {db}: {args.cases} measured transactions ...", args.json)
        latencies, statuses, wall = asyncio.run(post_all(hapi.url, bodies, args.concurrency))
    finally:
        if not args.keep_hapi:
            hapi.stop()
    ms = [x * 1e3 for x in latencies]
    ok = statuses.get(200, 0)
    return {
        "db": db,
        "server": hapi.description,
        "start_s": round(hapi.start_seconds, 1),
        "transactions": len(bodies),
        "statuses": dict(sorted(statuses.items())),
        "wall_s": round(wall, 2),
        "transactions_per_s": round(ok / wall, 2),
        "resources_per_s": round(resources * ok / len(bodies) / wall, 1),
        "resources_per_transaction": round(resources / len(bodies), 1),
        "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "load_before": load_before,
        "load_after": load_average(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", nargs="+", choices=["h2", "postgres"], default=["h2", "postgres"])
    parser.add_argument("--cases", type=int, default=300, help="measured transactions per db")
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured transactions first")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent clients")
    parser.add_argument("--seed", type=int, default=11, help="synthetic stream seed")
    parser.add_argument("--keep-hapi", action="store_true", help="leave the last HAPI running")
    parser.add_argument(
        "--hapi-validation",
        choices=["on", "off"],
        default="on",
        help="HAPI's request validation (on as in the tests; off is HAPI's JPA starter default)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    info = machine()
    _script(HAPI_SH, "stop")  # a HAPI of this worktree would be restarted anyway
    postgres = Postgres(args.json) if "postgres" in args.db else None
    pg_text = postgres.describe() if postgres is not None else None
    results = []
    try:
        for db in args.db:
            results.append(measure(db, args))
    finally:
        if postgres is not None and not args.keep_hapi:
            postgres.stop()
    if args.json:
        print(json.dumps({"machine": info, "postgres": pg_text, "results": results}, indent=2))
        return 0
    print(machine_line(info))
    print(
        f"HAPI FHIR 8.8.0 (tests/hapi-server), {args.cases} synthetic transactions after "
        f"{args.warmup} warm-up, {args.concurrency} concurrent clients"
        + (f"; {pg_text}" if pg_text else "")
    )
    print(
        f"{'db':<10}{'tx/s':>7}{'res/s':>8}{'res/tx':>8}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'start s':>9}  statuses     load before -> after"
    )
    for row in results:
        print(
            f"{row['db']:<10}{row['transactions_per_s']:>7.2f}{row['resources_per_s']:>8.0f}"
            f"{row['resources_per_transaction']:>8.1f}{row['p50_ms']:>9.0f}{row['p95_ms']:>9.0f}"
            f"{row['start_s']:>9.0f}  {row['statuses']}  {row['load_before']} -> "
            f"{row['load_after']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
