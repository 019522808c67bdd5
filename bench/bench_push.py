"""Bulk push as a user runs it: ``fhir-adapter push`` on an NDJSON of synthetic cases.

Writes ``--cases`` synthetic records (adapter/synthetic.py, seeded) as one NDJSON file, then
runs the command line exactly as documented,

    fhir-adapter push cases.ndjson --server URL --jobs N --state STATE -q --summary json

against HAPI on PostgreSQL (restarted on an empty database by tests/hapi-server/hapi.sh with
``HAPI_DB=postgres``; the tests/postgres/pg.sh cluster, durable, started if not running), or
``--db h2``, or an existing server (``--fhir-url``), or ``--stub``: a null upstream that
answers every transaction at once, which leaves the command's own cost (reading, validating,
converting, sending, journaling). Reports the command's own summary
(records/s, resources/s, failures), wall time, the command's peak RSS, the load average,
and how many Patients of the run the server holds afterwards (one per record, or the
figure is wrong).
Then it runs the same command again with the same journal: the resume path, where every
record is skipped without being sent.

    .venv/bin/python bench/bench_push.py [--cases 10000] [--jobs 8] [--db postgres]
        [--hapi-validation on|off]
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from benchutil import ROOT, machine, machine_line
from stack import HAPI_SH, Hapi, Postgres, _script, load_average, say, stop_process

from adapter.synthetic import generate_cases


def write_cases(path: Path, count: int, seed: int) -> int:
    """The NDJSON input; returns its size in bytes."""
    with path.open("wb") as handle:
        for record in generate_cases(count, seed=seed):
            handle.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
    return path.stat().st_size


def run_push(command: list[str], log: Path) -> tuple[dict[str, Any], float, float, int]:
    """Run the command; its summary, wall seconds, peak RSS (MB) and exit code."""
    import psutil

    peak = 0.0
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        watched = psutil.Process(process.pid)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.5):
                try:
                    peak = max(peak, watched.memory_info().rss / 2**20)
                except psutil.Error:
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = process.wait()
        done.set()
        sampler.join()
    wall = time.monotonic() - started
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"no summary from the push; tail of {log}:\n" + log.read_text()[-3000:])
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary, wall, peak, code


def patients_on_server(url: str, namespace: str) -> int | None:
    """How many Patients of this run the server holds (``_summary=count`` on the run's own
    case-record identifier system): the check that every record landed exactly once.
    ``None`` for the null upstream, which stores nothing."""
    import httpx

    system = f"{namespace}/fhir/identifier/case-record|"
    answer = httpx.get(
        f"{url}/Patient",
        params={"identifier": system, "_summary": "count"},
        headers={"Accept": "application/fhir+json", "Cache-Control": "no-cache"},
        timeout=300,
    )
    answer.raise_for_status()
    return int(answer.json().get("total", 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="synthetic records")
    parser.add_argument("--jobs", type=int, default=8, help="fhir-adapter push --jobs")
    parser.add_argument("--db", choices=["h2", "postgres"], default="postgres", help="HAPI's db")
    parser.add_argument("--fhir-url", help="push to this running server instead")
    parser.add_argument("--stub", action="store_true", help="null upstream instead of HAPI")
    parser.add_argument("--seed", type=int, default=2024, help="synthetic stream seed")
    parser.add_argument("--keep", metavar="DIR", help="keep input, journal and log here")
    parser.add_argument(
        "--hapi-validation",
        choices=["on", "off"],
        default="on",
        help="HAPI's request validation (on as in the tests; off is HAPI's JPA starter default)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    info = machine()
    postgres: Postgres | None = None
    hapi: Hapi | None = None
    stub = None
    with tempfile.TemporaryDirectory(prefix="fhir-bench-push-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            if args.stub:
                from bench_gateway import start_stub

                stub, url = start_stub(folder)
                server_text = "null upstream (--stub): answers every transaction at once"
            elif args.fhir_url:
                url, server_text = args.fhir_url.rstrip("/"), f"given server {args.fhir_url}"
            else:
                _script(HAPI_SH, "stop")
                if args.db == "postgres":
                    postgres = Postgres(args.json)
                hapi = Hapi(args.db, args.json, validation=args.hapi_validation == "on")
                url, server_text = hapi.url, hapi.description
                if postgres is not None:
                    server_text += f" on {postgres.describe()}"
            ndjson = folder / "cases.ndjson"
            say(f"writing {args.cases} synthetic records ...", args.json)
            size = write_cases(ndjson, args.cases, args.seed)
            namespace = f"https://bench-push-{int(time.time())}-{secrets.token_hex(3)}.example"
            script = Path(sys.executable).with_name("fhir-adapter")
            command = [
                str(script),
                "push",
                str(ndjson),
                "--server",
                url,
                "--jobs",
                str(args.jobs),
                "--state",
                str(folder / "push.state"),
                "--namespace",
                namespace,
                "-q",
                "--no-progress",
                "--summary",
                "json",
            ]
            load_before = load_average()
            say(f"pushing ({' '.join(command[1:])}) ...", args.json)
            first, wall, rss, code = run_push(command, folder / "push.log")
            load_after = load_average()
            on_server = None if stub is not None else patients_on_server(url, namespace)
            say("pushing again with the same journal (resume path) ...", args.json)
            again, again_wall, _, again_code = run_push(command, folder / "push-again.log")
        finally:
            if stub is not None:
                stop_process(stub)
            if hapi is not None:
                hapi.stop()
            if postgres is not None:
                postgres.stop()
    result = {
        "machine": info,
        "server": server_text,
        "cases": args.cases,
        "input_mb": round(size / 2**20, 1),
        "jobs": args.jobs,
        "exit_code": code,
        "summary": first,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(rss, 1),
        "patients_on_server": on_server,
        "load_before": load_before,
        "load_after": load_after,
        "rerun": {"exit_code": again_code, "summary": again, "wall_s": round(again_wall, 1)},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(machine_line(info))
    print(f"server: {server_text}")
    print(
        f"input: {args.cases} synthetic records, one NDJSON file of {result['input_mb']} MB; "
        f"fhir-adapter push --jobs {args.jobs} --state ... (exit {code})"
    )
    print(
        f"pushed {first['pushed']} records, {first['resources']} resources in {wall:.0f} s: "
        f"{first['records_per_s']:.2f} records/s, {first['resources_per_s']:.0f} resources/s; "
        f"failed {first['failed']}, invalid {first['invalid']}, retried {first['retried']}; "
        f"peak RSS of the command {rss:.0f} MB; load average {load_before} -> {load_after}"
    )
    if on_server is not None:
        verdict = "each record exactly once" if on_server == first["pushed"] else "MISMATCH"
        print(f"on the server afterwards: {on_server} Patients of this run ({verdict})")
    print(
        f"rerun with the journal: skipped {again['skipped']}, pushed {again['pushed']} in "
        f"{again_wall:.1f} s (exit {again_code})"
    )
    if first["failed_inputs"]:
        print(f"failed inputs (first 5): {first['failed_inputs'][:5]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
