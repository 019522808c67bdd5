"""Before and after on the same machine at the same time: the CLI of two commits, interleaved.

On a shared machine absolute timings drift with other people's load; a ratio measured by
alternating the two versions run by run does not. This script exports ``--base`` (a commit,
default ``HEAD~1``) with ``git archive`` into a temporary folder, then converts the same folder
of synthetic records with that version's CLI and with this checkout's, alternately, one
pinned core, ``--jobs 1``, and reports the CPU time per case (user + system of the child,
fixed cost of a one-record run taken off) of each, their ratio, and the load average.

    .venv/bin/python bench/bench_ab.py --base 747cc02 [--cases 1000] [--rounds 3] [--format json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import ROOT, machine, machine_line

from adapter.synthetic import generate_cases


def _one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})


def _run(tree: Path, folder: Path, output_format: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``convert folder`` with the adapter in ``tree``."""
    out = Path(tempfile.mkdtemp(prefix="fhir-ab-out-"))
    env = dict(os.environ, PYTHONPATH=str(tree), FHIR_ADAPTER_MAPPINGS=str(tree / "mappings"))
    command = [sys.executable, "-m", "adapter", "convert", str(folder), "--out-dir", str(out)]
    command += ["--format", output_format, "--quiet", "--jobs", "1"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        command, cwd=tree, env=env, capture_output=True, preexec_fn=_one_core, check=False
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    shutil.rmtree(out, ignore_errors=True)
    if result.returncode != 0:
        raise SystemExit(f"{tree}: convert exited {result.returncode}: {result.stderr[-400:]!r}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD~1", help="commit to compare against")
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--format", choices=["json", "ndjson"], default="ndjson")
    args = parser.parse_args()
    print(machine_line(machine()))
    work = Path(tempfile.mkdtemp(prefix="fhir-ab-"))
    try:
        base = work / "base"
        base.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.base], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
        folder, single = work / "in", work / "one"
        folder.mkdir()
        single.mkdir()
        for record in generate_cases(args.cases, seed=7):
            (folder / f"{record['record_id']}.json").write_text(json.dumps(record, indent=2))
        first = sorted(folder.glob("*.json"))[0]
        shutil.copy(first, single / first.name)
        trees = {f"base {args.base}": base, "this checkout": ROOT}
        cpu: dict[str, list[float]] = {name: [] for name in trees}
        loads = []
        for round_index in range(args.rounds):
            order = list(trees) if round_index % 2 == 0 else list(reversed(trees))
            for name in order:
                loads.append(os.getloadavg()[0])
                fixed, _ = _run(trees[name], single, args.format)
                full, _ = _run(trees[name], folder, args.format)
                cpu[name].append((full - fixed) / (args.cases - 1) * 1e3)
        print(f"{args.cases} synthetic records -> {args.format}, one core, --jobs 1, CPU per case:")
        medians = {name: statistics.median(values) for name, values in cpu.items()}
        for name, value in medians.items():
            runs = ", ".join(f"{v:.2f}" for v in cpu[name])
            print(f"  {name:28} {value:7.3f} ms  (runs: {runs})")
        names = list(medians)
        print(
            f"  ratio {names[0]} / {names[1]}: {medians[names[0]] / medians[names[1]]:.2f}x; "
            f"load average {min(loads):.1f}–{max(loads):.1f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
