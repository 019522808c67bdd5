"""The offline HL7 profile validator (tests/validator) on the 22 example bundles: time and RSS.

Starts the validator once (as the test suite does), validates the 22 R4 bundles ``--rounds``
times, and prints the start-up time, the time per round and per bundle, and the JVM's RSS
after each round. The JVM runs in its own network namespace when the machine allows it.

    .venv/bin/python bench/bench_profile_validator.py [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchutil import EXAMPLES, machine

from adapter.mapping import ConversionOptions, convert_record
from adapter.mapping.context import DEFAULT_NAMESPACE
from tests.conformance.validator import ProfileValidator


def jvm_rss_mb(pid: int) -> float:
    """RSS of the validator's JVM (validator.sh execs java, possibly under unshare)."""
    process = psutil.Process(pid)
    processes = [process, *process.children(recursive=True)]
    return float(max(p.memory_info().rss for p in processes)) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    bundles = [
        convert_record(
            json.loads(p.read_text(encoding="utf-8")), ConversionOptions(fhir_version="R4")
        ).bundle
        for p in sorted(EXAMPLES.glob("*.json"))
    ]
    resources = sum(len(b["entry"]) for b in bundles)
    t0 = time.monotonic()
    with ProfileValidator([DEFAULT_NAMESPACE + "/"]) as validator:
        start_s = time.monotonic() - t0
        rss_start = jvm_rss_mb(validator.pid)
        rounds = []
        for _ in range(args.rounds):
            r0 = time.monotonic()
            for bundle in bundles:
                validator.validate(bundle)
            rounds.append({"seconds": time.monotonic() - r0, "rss_mb": jvm_rss_mb(validator.pid)})
        status = validator.status()
    result = {
        "machine": machine(),
        "bundles": len(bundles),
        "resources": resources,
        "start_s": round(start_s, 1),
        "rss_after_start_mb": round(rss_start),
        "rounds": [{k: round(v, 1) for k, v in r.items()} for r in rounds],
        "median_round_s": round(statistics.median(r["seconds"] for r in rounds), 1),
        "median_ms_per_bundle": round(
            1000 * statistics.median(r["seconds"] for r in rounds) / len(bundles)
        ),
        "network_attempts": len(status["networkAttempts"]),
        "isolated_network_namespace": status["interfaces"] == [],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"machine: {result['machine']}")
    print(f"validator start: {result['start_s']} s, RSS {result['rss_after_start_mb']} MB")
    for i, r in enumerate(result["rounds"], 1):
        print(
            f"round {i}: {len(bundles)} bundles ({resources} resources) in {r['seconds']} s,"
            f" RSS {r['rss_mb']} MB"
        )
    print(
        f"median: {result['median_round_s']} s per round,"
        f" {result['median_ms_per_bundle']} ms per bundle"
    )
    print(
        f"network attempts: {result['network_attempts']};"
        f" empty network namespace: {result['isolated_network_namespace']}"
    )


if __name__ == "__main__":
    main()
