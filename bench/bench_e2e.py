"""End to end, as a user runs it: ``fhir-adapter convert`` on a folder, per case and per resource.

What a user pays to turn a folder of case records into FHIR is reading, parsing, validating,
mapping, serialising and writing, not the mapping alone. This script measures exactly that,
through the real command line in a subprocess:

* **folder → JSON bundles** (``convert DIR --out-dir OUT``, one bundle file per record) and
  **folder → NDJSON** (``--format ndjson``), on one pinned core with ``--jobs 1``;
* the fixed cost of a run (interpreter start, imports, loading the schema and tables) is
  measured by converting one record, and taken off: per case = (T(N) − T(1)) / (N − 1);
* the same folder with the default ``--jobs`` (all cores), for the speed-up;
* beside them, in this process, one row per stage of the pipeline (read, parse, validate,
  map, serialise, write) and the mapping-only figure the README used to lead with.

Each figure is the median of ``--repeat`` runs; wall time and the child's CPU time (user +
system, from ``getrusage``) are both reported, with the load average before each run: on a
shared machine CPU time is the steadier of the two, and a load above the core count means
the wall figures are inflated.

``--compiled`` builds the mypyc-compiled wheel of this checkout (``FHIR_ADAPTER_COMPILE=1``,
as the Dockerfile does) and times the command line run from it instead of from the source.

    .venv/bin/python bench/bench_e2e.py [--cases 2000] [--repeat 3] [--compiled] [--json]
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
from typing import Any

from benchutil import EXAMPLES, ROOT, compiled_site, machine, machine_line

from adapter.mapping import ConversionOptions, convert_record
from adapter.pipeline import dump_json, dump_ndjson_line
from adapter.record.loader import parse_json_object
from adapter.record.validate import validate_record
from adapter.synthetic import generate_cases

TARGET_MS = 1.0


def _one_core() -> None:
    """preexec_fn: run the child on one CPU (the last one this process may use)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})


SITE: Path | None = None
"""The unpacked compiled wheel when ``--compiled``; None runs the source tree."""


def run_cli(folder: Path, output_format: str, jobs: int | None, pin: bool) -> dict[str, float]:
    """Wall and CPU seconds of one ``fhir-adapter convert`` run on ``folder``."""
    out = Path(tempfile.mkdtemp(prefix="fhir-e2e-out-"))
    command = [sys.executable, "-m", "adapter", "convert", str(folder), "--out-dir", str(out)]
    command += ["--format", output_format, "--quiet"]
    if jobs is not None:
        command += ["--jobs", str(jobs)]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    env = dict(os.environ)
    if SITE is not None:  # outside the checkout, so that the working directory comes second
        env.update(PYTHONPATH=str(SITE), FHIR_ADAPTER_MAPPINGS=str(ROOT / "mappings"))
    result = subprocess.run(
        command,
        cwd=ROOT if SITE is None else SITE.parent,
        env=env,
        capture_output=True,
        preexec_fn=_one_core if pin else None,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    shutil.rmtree(out, ignore_errors=True)
    if result.returncode != 0:
        raise SystemExit(f"convert exited {result.returncode}: {result.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "load": load}


def median_run(
    folder: Path, output_format: str, jobs: int | None, pin: bool, repeat: int
) -> dict[str, float]:
    runs = [run_cli(folder, output_format, jobs, pin) for _ in range(repeat)]
    return {
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        "cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "load_min": min(r["load"] for r in runs),
        "load_max": max(r["load"] for r in runs),
    }


def stage_profile(files: list[Path], repeat: int) -> dict[str, float]:
    """CPU milliseconds per case of each pipeline stage, in this process (best of repeats).

    One record at a time through every stage, as the command line does, and nothing kept
    once it is written: timing a stage over all records at once keeps a thousand bundles
    alive, and the cyclic collector walking them doubled the mapping figure.
    """
    options = ConversionOptions()
    scratch = Path(tempfile.mkdtemp(prefix="fhir-e2e-stage-"))
    target = scratch / "bundle.json"
    names = (
        "read",
        "parse (orjson, checked)",
        "validate (schema + semantic)",
        "map (convert_record)",
        "serialise JSON bundle",
        "serialise NDJSON lines",
        "write one file",
    )
    best = dict.fromkeys(names, float("inf"))
    resources = 0
    clock = time.process_time
    try:
        for _ in range(repeat):
            spent = dict.fromkeys(names, 0.0)
            resources = 0
            for path in files:
                t0 = clock()
                data = path.read_bytes()
                t1 = clock()
                record = parse_json_object(data)
                t2 = clock()
                validate_record(record)
                t3 = clock()
                bundle = convert_record(record, options).bundle
                t4 = clock()
                output = dump_json(bundle)
                t5 = clock()
                [dump_ndjson_line(e["resource"]) for e in bundle["entry"]]
                t6 = clock()
                target.write_bytes(output)
                t7 = clock()
                for name, took in zip(
                    names,
                    (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6),
                    strict=True,
                ):
                    spent[name] += took
                resources += len(bundle["entry"])
            for name in names:
                best[name] = min(best[name], spent[name])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    stages = {name: took / len(files) * 1e3 for name, took in best.items()}
    stages["resources per case"] = resources / len(files)
    return stages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000, help="synthetic records (seed 7)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--compiled", action="store_true", help="run the mypyc-compiled wheel (builds it)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    info = machine()
    say(machine_line(info))
    work = Path(tempfile.mkdtemp(prefix="fhir-e2e-"))
    results: dict[str, Any] = {"machine": info, "cases": args.cases, "compiled": args.compiled}
    try:
        if args.compiled:
            global SITE
            say("building the compiled wheel (FHIR_ADAPTER_COMPILE=1) ...")
            SITE = compiled_site(work)
        folder, single = work / "synthetic", work / "single"
        folder.mkdir()
        single.mkdir()
        resources = 0
        for record in generate_cases(args.cases, seed=7):
            (folder / f"{record['record_id']}.json").write_text(json.dumps(record, indent=2))
        first = sorted(folder.glob("*.json"))[0]
        shutil.copy(first, single / first.name)
        files = sorted(folder.glob("*.json"))
        for path in files:
            bundle = convert_record(parse_json_object(path.read_bytes()), ConversionOptions())
            resources += len(bundle.bundle["entry"])
        per_resource = resources / len(files)
        results["resources_per_case"] = per_resource
        say(f"{len(files)} synthetic records, {per_resource:.1f} resources per case\n")

        build = "compiled wheel" if args.compiled else "source"
        say(f"end to end, fhir-adapter convert FOLDER ({build}, subprocess), fixed cost taken off:")
        rows = []
        for label, fmt, jobs, pin in [
            ("folder -> JSON bundles, 1 core", "json", 1, True),
            ("folder -> NDJSON, 1 core", "ndjson", 1, True),
            ("folder -> NDJSON, --jobs default (all cores)", "ndjson", None, False),
            ("folder -> JSON bundles, --jobs default", "json", None, False),
        ]:
            fixed = median_run(single, fmt, 1, pin, args.repeat)
            full = median_run(folder, fmt, jobs, pin, args.repeat)
            wall_ms = (full["wall_s"] - fixed["wall_s"]) / (len(files) - 1) * 1e3
            cpu_ms = (full["cpu_s"] - fixed["cpu_s"]) / (len(files) - 1) * 1e3
            row = {
                "what": label,
                "wall_ms_per_case": wall_ms,
                "cpu_ms_per_case": cpu_ms,
                "wall_us_per_resource": wall_ms / per_resource * 1e3,
                "cases_per_s": len(files) / full["wall_s"],
                "fixed_cost_s": fixed["wall_s"],
                "load": [full["load_min"], full["load_max"]],
            }
            rows.append(row)
            verdict = "met" if wall_ms <= TARGET_MS else "not met"
            target = f"  (≤ {TARGET_MS} ms: {verdict})" if "1 core" in label else ""
            say(
                f"  {label:46} {wall_ms:6.3f} ms/case wall, {cpu_ms:6.3f} ms CPU, "
                f"{row['wall_us_per_resource']:5.1f} µs/resource, {row['cases_per_s']:7.0f} "
                f"cases/s, start {fixed['wall_s']:.2f} s, load {full['load_min']:.1f}–"
                f"{full['load_max']:.1f}{target}"
            )
        results["end_to_end"] = rows

        say("\nstages, in-process CPU per case (best of repeats; this process runs the source):")
        stages = stage_profile(files, args.repeat)
        for name, value in stages.items():
            if name != "resources per case":
                say(f"  {name:32} {value:7.3f} ms")
        results["stages_ms"] = stages
        examples = stage_profile(sorted(EXAMPLES.glob("*.json")), max(args.repeat, 5))
        say(
            f"  mapping only, the 22 examples: {examples['map (convert_record)']:.3f} ms per case "
            f"({examples['resources per case']:.1f} resources)"
        )
        results["examples_stages_ms"] = examples
        results["load_after"] = os.getloadavg()[0]
        say(f"\nload average at the end: {results['load_after']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
