"""Memory of ``fhir-adapter convert`` on a whole folder: flat, whatever the folder holds.

Writes N synthetic case records (default 10,000) as files into a temporary folder, runs the
real command line on it (``convert DIR --out-dir OUT --format ndjson``) as a subprocess, and
samples that process's RSS every 0.2 s. It prints the RSS at each tenth of the run, the peak,
and the wall time; a flat profile is the claim, a growing one would show up here.

    .venv/bin/python bench/bench_cli_folder.py [--cases 10000] [--jobs 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from benchutil import ROOT, machine, machine_line

from adapter.synthetic import generate_cases


def _tree_rss(process: psutil.Process) -> int:
    """RSS of the process and its children (``--jobs`` workers), in bytes."""
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fhir-adapter-folder-"))
    try:
        inputs = workdir / "in"
        inputs.mkdir()
        for record in generate_cases(args.cases, seed=7):
            (inputs / f"{record['record_id']}.json").write_text(json.dumps(record))
        command = [
            sys.executable,
            "-m",
            "adapter",
            "convert",
            str(inputs),
            "--out-dir",
            str(workdir / "out"),
            "--format",
            "ndjson",
            "--quiet",
            "--jobs",
            str(args.jobs),
        ]
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=ROOT)
        process = psutil.Process(child.pid)
        samples: list[tuple[float, int]] = []
        while child.poll() is None:
            rss = _tree_rss(process)
            if rss:
                samples.append((time.perf_counter() - started, rss))
            time.sleep(0.2)
        wall = time.perf_counter() - started
        if child.returncode != 0:
            print(f"convert exited {child.returncode}", file=sys.stderr)
            return 1
        lines = sum(1 for p in (workdir / "out").glob("*.ndjson") for _ in p.open("rb"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    deciles = []
    for tenth in range(1, 11):
        cutoff = wall * tenth / 10
        before = [rss for t, rss in samples if t <= cutoff]
        deciles.append(round(before[-1] / 2**20, 1) if before else None)
    peak = max(rss for _, rss in samples) / 2**20
    result = {
        "cases": args.cases,
        "jobs": args.jobs,
        "wall_s": round(wall, 1),
        "cases_per_s": round(args.cases / wall, 1),
        "resources_written": lines,
        "peak_rss_mb": round(peak, 1),
        "rss_mb_by_tenth": deciles,
        "machine": machine(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(machine_line(result["machine"]))
        print(
            f"{args.cases} records, --jobs {args.jobs}: {wall:.1f} s "
            f"({result['cases_per_s']} records/s), {lines} resources written"
        )
        print(f"RSS (MB) at each tenth of the run: {deciles}")
        print(f"peak RSS {peak:.1f} MB (target: flat, under 200 MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
