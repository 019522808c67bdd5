"""Conversion speed per case, beside its floor (orjson) and the pydantic route (fhir.resources).

For each example record of examples/cases/ and for N synthetic records of realistic size
(adapter.synthetic, about 40 resources), on one pinned core, median of repeated runs after a
warm-up:

* ``convert``   convert_record(record) -> transaction Bundle (plain dicts);
* ``validate``  validate_record(record) (JSON Schema + semantic rules), timed separately;
* ``orjson``    orjson.dumps(bundle): serialising the output, the floor of any converter;
* ``fhir.res``  fhir.resources R4B Bundle.model_validate(bundle).model_dump_json(): what the
  conversion would cost if it went through pydantic models.

Ratios: ``x orjson`` = convert / orjson (target <= 20), ``fhir/conv`` = fhir.resources /
convert. Target: <= 1 ms per typical case (median example, median synthetic case).

    .venv/bin/python bench/bench_convert.py [--cases 1000] [--repeat 7] [--json] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from benchutil import EXAMPLES, machine, machine_line, per_call, percentile, pin_one_core

from adapter.mapping import ConversionOptions, convert_record
from adapter.record.validate import validate_record
from adapter.synthetic import generate_cases, seed_model

TARGET_MS = 1.0
TARGET_RATIO = 20.0
OPTIONS = ConversionOptions(recorded="2025-01-01T00:00:00Z")


def fhir_resources_roundtrip() -> Any:
    """The fhir.resources parse+serialise function, or None when the package is missing."""
    try:
        from fhir.resources.R4B.bundle import Bundle
    except ImportError:
        return None

    def roundtrip(bundle: dict[str, Any]) -> str:
        return str(Bundle.model_validate(bundle).model_dump_json())

    return roundtrip


def measure_case(name: str, record: dict[str, Any], repeat: int, fhir: Any) -> dict[str, Any]:
    """All timings of one record (seconds converted to ms in the row)."""
    errors = validate_record(record)
    row: dict[str, Any] = {"case": name}
    if errors:
        row["error"] = f"invalid record: {errors[0].path} {errors[0].message}"
        return row
    bundle = convert_record(record, OPTIONS).bundle
    row["resources"] = len(bundle["entry"])
    row["kb"] = round(len(orjson.dumps(bundle)) / 1024, 1)
    row["validate_ms"] = per_call(lambda: validate_record(record), repeat) * 1e3
    row["convert_ms"] = per_call(lambda: convert_record(record, OPTIONS), repeat) * 1e3
    row["orjson_ms"] = per_call(lambda: orjson.dumps(bundle), repeat) * 1e3
    row["x_orjson"] = row["convert_ms"] / row["orjson_ms"]
    if fhir is not None:
        try:
            row["fhir_ms"] = per_call(lambda: fhir(bundle), max(3, repeat // 2), 0.05) * 1e3
            row["fhir_x_convert"] = row["fhir_ms"] / row["convert_ms"]
        except Exception as exc:  # a model rejecting the bundle is a finding, not a crash
            row["fhir_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
    return row


def batch_per_case(fn: Any, items: list[Any], repeat: int) -> float:
    """Median over ``repeat`` passes of (time of one pass over all items) / len(items)."""
    for item in items[: min(len(items), 50)]:
        fn(item)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for item in items:
            fn(item)
        samples.append((time.perf_counter() - start) / len(items))
    return statistics.median(samples)


def measure_synthetic(n: int, repeat: int, fhir: Any, fhir_sample: int) -> dict[str, Any]:
    """Per-case figures over n synthetic records: means and percentiles of per-case medians."""
    records = list(generate_cases(n, seed=0))
    invalid = sum(1 for r in records if validate_record(r))
    records = [r for r in records if not validate_record(r)]
    bundles = [convert_record(r, OPTIONS).bundle for r in records]
    sizes = [len(b["entry"]) for b in bundles]
    out: dict[str, Any] = {
        "cases": len(records),
        "invalid": invalid,
        "resources_mean": statistics.mean(sizes),
        "resources_median": statistics.median(sizes),
        "resources_max": max(sizes),
        "kb_mean": statistics.mean(len(orjson.dumps(b)) for b in bundles) / 1024,
    }
    out["validate_ms"] = batch_per_case(validate_record, records, repeat) * 1e3
    # Each pass converts every record and serialises the fresh bundle right away, as a
    # pipeline would (a bundle dumped long after it was built is cold in the CPU caches and
    # would make the floor look 3-4x slower than it is). Per case: median over the passes.
    for record in records[:50]:
        orjson.dumps(convert_record(record, OPTIONS).bundle)
    convert_runs: list[list[float]] = [[] for _ in records]
    orjson_runs: list[list[float]] = [[] for _ in records]
    clock = time.perf_counter
    for _ in range(repeat):
        for i, record in enumerate(records):
            t0 = clock()
            bundle = convert_record(record, OPTIONS).bundle
            t1 = clock()
            orjson.dumps(bundle)
            t2 = clock()
            convert_runs[i].append(t1 - t0)
            orjson_runs[i].append(t2 - t1)
    convert = [statistics.median(c) * 1e3 for c in convert_runs]
    floor = [statistics.median(o) * 1e3 for o in orjson_runs]
    out["convert_ms"] = statistics.mean(convert)
    out["orjson_ms"] = statistics.mean(floor)
    out["x_orjson"] = sum(convert) / sum(floor)
    out["x_orjson_per_case_median"] = statistics.median(
        c / o for c, o in zip(convert, floor, strict=True)
    )
    out["convert_p50_ms"] = percentile(convert, 50)
    out["convert_p95_ms"] = percentile(convert, 95)
    out["convert_p99_ms"] = percentile(convert, 99)
    out["convert_us_per_resource"] = (
        statistics.median(c / n for c, n in zip(convert, sizes, strict=True)) * 1e3
    )
    if fhir is not None and fhir_sample > 0:
        sample = bundles[:fhir_sample]
        try:
            fhir_ms = batch_per_case(fhir, sample, 1) * 1e3
            conv_sample = (
                batch_per_case(lambda r: convert_record(r, OPTIONS), records[:fhir_sample], 3) * 1e3
            )
            out["fhir_sample"] = len(sample)
            out["fhir_ms"] = fhir_ms
            out["fhir_x_convert"] = fhir_ms / conv_sample
        except Exception as exc:
            out["fhir_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
    return out


def profile_synthetic(n: int, top: int = 25) -> str:
    """cProfile of converting n synthetic records: the functions where the time goes."""
    records = list(generate_cases(n, seed=0))
    profiler = cProfile.Profile()
    profiler.enable()
    for record in records:
        convert_record(record, OPTIONS)
    profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return stream.getvalue()


def _fmt(value: Any, spec: str) -> str:
    if isinstance(value, int | float):
        return format(value, spec)
    width = int(spec.lstrip(">").split(".")[0])
    return format("-", f">{width}")


def print_table(rows: list[dict[str, Any]], synthetic: dict[str, Any] | None) -> None:
    header = (
        f"{'case':<28}{'res':>5}{'KB':>7}{'validate':>10}{'convert':>10}"
        f"{'orjson':>9}{'x orjson':>10}{'fhir.res':>10}{'fhir/conv':>11}"
    )
    print(header)
    print(f"{'':<28}{'':>5}{'':>7}{'ms':>10}{'ms':>10}{'ms':>9}{'':>10}{'ms':>10}")
    print("-" * len(header))
    for row in rows:
        if "error" in row:
            print(f"{row['case']:<28}  {row['error'][:90]}")
            continue
        print(
            f"{row['case']:<28}{row['resources']:>5}{row['kb']:>7.1f}"
            f"{row['validate_ms']:>10.3f}{row['convert_ms']:>10.3f}{row['orjson_ms']:>9.4f}"
            f"{row['x_orjson']:>10.1f}{_fmt(row.get('fhir_ms'), '>10.2f')}"
            f"{_fmt(row.get('fhir_x_convert'), '>11.1f')}"
        )
        if "fhir_error" in row:
            print(f"{'':<28}  fhir.resources: {row['fhir_error']}")
    if synthetic:
        s = synthetic
        print("-" * len(header))
        print(
            f"{'synthetic x' + str(s['cases']) + ' (mean)':<28}{s['resources_mean']:>5.0f}"
            f"{s['kb_mean']:>7.1f}{s['validate_ms']:>10.3f}{s['convert_ms']:>10.3f}"
            f"{s['orjson_ms']:>9.4f}{s['x_orjson']:>10.1f}{_fmt(s.get('fhir_ms'), '>10.2f')}"
            f"{_fmt(s.get('fhir_x_convert'), '>11.1f')}"
        )
        print(
            f"{'synthetic per case':<28}convert p50 {s['convert_p50_ms']:.3f} ms, "
            f"p95 {s['convert_p95_ms']:.3f} ms, p99 {s['convert_p99_ms']:.3f} ms; "
            f"{s['convert_us_per_resource']:.1f} µs per resource; resources median "
            f"{s['resources_median']:.0f}, max {s['resources_max']}"
        )
        if "fhir_sample" in s:
            print(f"{'':<28}(fhir.resources timed on the first {s['fhir_sample']} cases, 1 pass)")
        if "fhir_error" in s:
            print(f"{'':<28}fhir.resources: {s['fhir_error']}")


def summarise(rows: list[dict[str, Any]], synthetic: dict[str, Any] | None) -> dict[str, Any]:
    ok = [r for r in rows if "convert_ms" in r]
    summary: dict[str, Any] = {
        "examples_converted": len(ok),
        "examples_invalid": len(rows) - len(ok),
    }
    if ok:
        summary["examples_median_convert_ms"] = statistics.median(r["convert_ms"] for r in ok)
        summary["examples_median_validate_ms"] = statistics.median(r["validate_ms"] for r in ok)
        summary["examples_median_x_orjson"] = statistics.median(r["x_orjson"] for r in ok)
        fhir = [r["fhir_x_convert"] for r in ok if "fhir_x_convert" in r]
        if fhir:
            summary["examples_median_fhir_x_convert"] = statistics.median(fhir)
    typical = [summary.get("examples_median_convert_ms")]
    ratios = [summary.get("examples_median_x_orjson")]
    if synthetic:
        typical.append(synthetic["convert_p50_ms"])
        ratios.append(synthetic["x_orjson"])
    typical_ms = max(t for t in typical if t is not None)
    ratio = max(r for r in ratios if r is not None)
    summary["typical_convert_ms"] = typical_ms
    summary["x_orjson"] = ratio
    summary["meets_1ms"] = typical_ms <= TARGET_MS
    summary["meets_20x"] = ratio <= TARGET_RATIO
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000, help="synthetic cases (0: none)")
    parser.add_argument("--repeat", type=int, default=7, help="timed repetitions (median)")
    parser.add_argument(
        "--fhir-sample", type=int, default=100, help="synthetic cases timed with fhir.resources"
    )
    parser.add_argument("--no-fhir", action="store_true", help="skip the fhir.resources timings")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--profile", action="store_true", help="also cProfile the conversion")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    args = parser.parse_args(argv)

    cpu = None if args.no_pin else pin_one_core()
    info = machine() | {"pinned_cpu": cpu}
    fhir = None if args.no_fhir else fhir_resources_roundtrip()
    seed_model()  # load the seed pools before anything is timed
    rows = []
    for path in sorted(Path(EXAMPLES).glob("*.json")):
        try:
            record = json.loads(path.read_bytes())
        except ValueError as exc:
            rows.append({"case": path.stem, "error": f"unreadable: {exc}"})
            continue
        rows.append(measure_case(path.stem, record, args.repeat, fhir))
        if not args.json:
            print(f"  measured {path.stem}", file=sys.stderr, end="\r")
    synthetic = (
        measure_synthetic(args.cases, args.repeat, fhir, args.fhir_sample) if args.cases else None
    )
    summary = summarise(rows, synthetic)
    if args.json:
        print(
            json.dumps(
                {"machine": info, "examples": rows, "synthetic": synthetic, "summary": summary},
                indent=2,
            )
        )
    else:
        print(machine_line(info) + (f"; pinned to CPU {cpu}" if cpu is not None else ""))
        print(f"repeat {args.repeat} (median), warm-up before each timing, GC on\n")
        print_table(rows, synthetic)
        print()
        print(
            f"summary: typical case {summary['typical_convert_ms']:.3f} ms per case "
            f"(target <= {TARGET_MS:g} ms: {'met' if summary['meets_1ms'] else 'NOT met'}); "
            f"{summary['x_orjson']:.1f}x the orjson floor "
            f"(target <= {TARGET_RATIO:g}x: {'met' if summary['meets_20x'] else 'NOT met'}); "
            f"validation {summary.get('examples_median_validate_ms', float('nan')):.3f} ms "
            f"per example (median), timed apart"
            + (
                f"; fhir.resources {summary['examples_median_fhir_x_convert']:.0f}x convert"
                if "examples_median_fhir_x_convert" in summary
                else ""
            )
        )
    if args.profile:
        print(
            profile_synthetic(min(args.cases or 500, 2000)),
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
