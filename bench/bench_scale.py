"""Scale: stream synthetic case records through validate + convert to NDJSON, memory flat.

Each synthetic record (adapter.synthetic, ≈ 40 resources) is serialised to JSON bytes and goes
through the same path as ``fhir-adapter convert --format ndjson``: adapter.pipeline.convert_bytes
(parse, validate_record, convert_record), then one NDJSON line per resource, appended to one
file per resource type (Patient.ndjson, Observation.ndjson, ...) in a temporary folder that is
deleted at the end unless ``--keep``.

Reported: wall time, cases/s, resources/s, CPU seconds per stage (generating the synthetic
input, validate+convert, NDJSON serialising), and resident memory (RSS) sampled every
``--sample`` seconds in a background thread: printed at 10 %, 20 %, ... with an ETA, so a flat
line shows memory does not grow with the number of cases. Target: under 200 MB per process.

``--jobs N`` converts in N worker processes; at most 2 x N chunks are in flight and results are
written in order, so memory stays bounded and the files are identical to a one-process run.
When fewer than 1,000,000 cases were run, the time of a full million is extrapolated
linearly from the measured rate (and printed as such).

``--compiled`` re-runs the benchmark on the mypyc-compiled wheel of this checkout.

    .venv/bin/python bench/bench_scale.py [--cases 1000000] [--jobs 2] [--compiled] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import psutil
from benchutil import (
    COMPILED_MARKER,
    machine,
    machine_line,
    rerun_compiled,
    running_compiled,
)

from adapter.mapping import ConversionOptions
from adapter.pipeline import convert_bytes, dump_ndjson_line
from adapter.synthetic import generate_case, seed_model

MILLION = 1_000_000
TARGET_MB = 200
OPTIONS = ConversionOptions(recorded="2025-01-01T00:00:00Z")
BYTES_PER_CASE = 45_000  # measured mean NDJSON output of a synthetic case, for the disk check


@dataclass
class ChunkStats:
    """What one chunk of cases cost (seconds are CPU-bound wall seconds in its process)."""

    cases: int = 0
    failed: int = 0
    resources: int = 0
    bytes: int = 0
    generate_s: float = 0.0
    convert_s: float = 0.0
    serialise_s: float = 0.0

    def add(self, other: ChunkStats) -> None:
        for name in ("cases", "failed", "resources", "bytes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("generate_s", "convert_s", "serialise_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def convert_chunk(start: int, count: int, seed: int) -> tuple[dict[str, bytes], ChunkStats]:
    """Generate, validate, convert and serialise records start..start+count-1 of a stream."""
    stats = ChunkStats()
    lines: dict[str, list[bytes]] = {}
    clock = time.perf_counter
    for index in range(start, start + count):
        t0 = clock()
        record = generate_case(index, seed)
        data = orjson.dumps(record)
        t1 = clock()
        outcome = convert_bytes(record["record_id"], data, OPTIONS)
        t2 = clock()
        stats.cases += 1
        if outcome.bundle is None:
            stats.failed += 1
        else:
            for entry in outcome.bundle["entry"]:
                item = entry["resource"]
                lines.setdefault(item["resourceType"], []).append(dump_ndjson_line(item))
            stats.resources += len(outcome.bundle["entry"])
        t3 = clock()
        stats.generate_s += t1 - t0
        stats.convert_s += t2 - t1
        stats.serialise_s += t3 - t2
    out = {kind: b"".join(chunk) for kind, chunk in lines.items()}
    stats.bytes = sum(len(b) for b in out.values())
    return out, stats


class NdjsonSink:
    """One append-only file per resource type, opened on first use."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.files: dict[str, IO[bytes]] = {}

    def write(self, chunks: dict[str, bytes]) -> None:
        for kind, data in chunks.items():
            handle = self.files.get(kind)
            if handle is None:
                target = self.folder / f"{kind}.ndjson" if self.folder else Path(os.devnull)
                handle = self.files[kind] = target.open("ab")
            handle.write(data)

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()


@dataclass
class MemoryWatch:
    """Samples the RSS of this process and of its workers in a background thread."""

    interval: float
    peak_main: int = 0
    peak_worker: int = 0
    peak_total: int = 0
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> tuple[int, int, int]:
        """(main RSS, largest worker RSS, total RSS) now, in bytes."""
        proc = psutil.Process()
        main = proc.memory_info().rss
        workers = []
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                workers.append(child.memory_info().rss)
        worker = max(workers, default=0)
        total = main + sum(workers)
        self.peak_main = max(self.peak_main, main)
        self.peak_worker = max(self.peak_worker, worker)
        self.peak_total = max(self.peak_total, total)
        return main, worker, total

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.wait(self.interval):
            main, _, total = self.sample()
            self.samples.append((time.perf_counter() - start, main, total))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


def mb(value: float) -> str:
    return f"{value / 2**20:.0f} MB"


def duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=MILLION, help="synthetic cases to stream")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (1: in-process)")
    parser.add_argument("--chunk", type=int, default=100, help="cases per unit of work")
    parser.add_argument("--seed", type=int, default=0, help="synthetic stream seed")
    parser.add_argument("--out-dir", help="parent folder of the temporary output folder")
    parser.add_argument("--keep", action="store_true", help="keep the NDJSON output")
    parser.add_argument(
        "--discard", action="store_true", help="serialise but write to /dev/null (no disk)"
    )
    parser.add_argument("--sample", type=float, default=0.5, help="RSS sampling interval (s)")
    parser.add_argument(
        "--compiled", action="store_true", help="run on the mypyc-compiled wheel (builds it)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable summary")
    args = parser.parse_args(argv)
    if args.cases < 1 or args.jobs < 1 or args.chunk < 1:
        parser.error("--cases, --jobs and --chunk must be at least 1")
    if args.compiled:
        if not os.environ.get(COMPILED_MARKER):
            print("building the compiled wheel (FHIR_ADAPTER_COMPILE=1) ...", file=sys.stderr)
        rerun_compiled(__file__, sys.argv[1:] if argv is None else argv)

    def say(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    info = machine()
    seed_model()  # load the seed pools once; forked workers inherit them
    folder: Path | None = None
    if not args.discard:
        folder = Path(tempfile.mkdtemp(prefix="fhir-bench-scale-", dir=args.out_dir))
        free = shutil.disk_usage(folder).free
        needed = int(args.cases * BYTES_PER_CASE * 1.2)
        if needed > free:
            shutil.rmtree(folder)
            parser.error(
                f"about {mb(needed)} of NDJSON would not fit in {mb(free)} free; "
                "use --discard or --out-dir"
            )
    say(machine_line(info))
    say(f"adapter: {'the compiled wheel' if running_compiled() else 'the source'}")
    say(
        f"streaming {args.cases:,} synthetic cases, {args.jobs} process(es), chunks of "
        f"{args.chunk}, output {'discarded' if folder is None else folder}"
    )

    watch = MemoryWatch(args.sample)
    baseline = watch.sample()
    watch.start()
    sink = NdjsonSink(folder)
    totals = ChunkStats()
    ticks: list[dict[str, Any]] = []
    next_tick = 1
    eta_printed = False
    started = time.perf_counter()
    chunks = [
        (start, min(args.chunk, args.cases + 1 - start))
        for start in range(1, args.cases + 1, args.chunk)
    ]

    def progress(stats: ChunkStats) -> None:
        nonlocal next_tick, eta_printed
        totals.add(stats)
        done = totals.cases
        elapsed = time.perf_counter() - started
        rate = done / elapsed if elapsed else 0.0
        eta = (args.cases - done) / rate if rate else 0.0
        if not eta_printed and (done >= args.cases / 100 or elapsed > 10) and done < args.cases:
            eta_printed = True
            say(f"  first {done:,} cases: {rate:,.0f} cases/s, ETA {duration(eta)}")
        while next_tick <= 10 and done >= args.cases * next_tick / 10:
            main_rss, worker_rss, total_rss = watch.sample()
            tick = {
                "percent": next_tick * 10,
                "cases": done,
                "elapsed_s": round(elapsed, 1),
                "cases_per_s": round(rate),
                "rss_main_mb": round(main_rss / 2**20, 1),
                "rss_worker_mb": round(worker_rss / 2**20, 1),
                "rss_total_mb": round(total_rss / 2**20, 1),
            }
            ticks.append(tick)
            workers = f", largest worker {mb(worker_rss)}" if args.jobs > 1 else ""
            say(
                f"  {tick['percent']:>3}% {done:>10,} cases {duration(elapsed):>8}  "
                f"{rate:>7,.0f} cases/s  RSS {mb(main_rss)}{workers}  ETA {duration(eta)}"
            )
            next_tick += 1

    try:
        if args.jobs == 1:
            for start, count in chunks:
                data, stats = convert_chunk(start, count, args.seed)
                sink.write(data)
                del data
                progress(stats)
        else:
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                pending: deque[Future[tuple[dict[str, bytes], ChunkStats]]] = deque()
                queue = iter(chunks)
                for start, count in queue:
                    pending.append(pool.submit(convert_chunk, start, count, args.seed))
                    if len(pending) >= 2 * args.jobs:
                        data, stats = pending.popleft().result()
                        sink.write(data)
                        del data
                        progress(stats)
                while pending:
                    data, stats = pending.popleft().result()
                    sink.write(data)
                    del data
                    progress(stats)
    finally:
        sink.close()
        wall = time.perf_counter() - started
        watch.stop()
        written = sum(p.stat().st_size for p in folder.glob("*.ndjson")) if folder else totals.bytes
        if folder is not None and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    maxrss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    maxrss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    peak_main = max(watch.peak_main, maxrss_self)
    peak_worker = max(watch.peak_worker, maxrss_children if args.jobs > 1 else 0)
    rate = totals.cases / wall
    flat_growth = ticks[-1]["rss_total_mb"] - ticks[1]["rss_total_mb"] if len(ticks) >= 3 else None
    summary: dict[str, Any] = {
        "machine": info,
        "compiled": running_compiled(),
        "cases": totals.cases,
        "failed": totals.failed,
        "resources": totals.resources,
        "resources_per_case": totals.resources / max(totals.cases, 1),
        "ndjson_bytes": written,
        "jobs": args.jobs,
        "wall_s": wall,
        "cases_per_s": rate,
        "resources_per_s": totals.resources / wall,
        "cpu_s": {
            "generate_synthetic": totals.generate_s,
            "validate_convert": totals.convert_s,
            "ndjson_serialise": totals.serialise_s,
        },
        "rss_baseline_mb": baseline[0] / 2**20,
        "peak_rss_main_mb": peak_main / 2**20,
        "peak_rss_worker_mb": peak_worker / 2**20 if args.jobs > 1 else None,
        "peak_rss_total_mb": max(watch.peak_total, peak_main) / 2**20,
        "rss_growth_20_to_100_mb": flat_growth,
        "ticks": ticks,
        "meets_200mb": peak_main / 2**20 < TARGET_MB
        and (args.jobs == 1 or peak_worker / 2**20 < TARGET_MB),
        "kept": str(folder) if folder is not None and args.keep else None,
    }
    if totals.cases < MILLION:
        summary["extrapolated_1m_wall_s"] = MILLION / rate
    cpu = summary["cpu_s"]
    adapter_ms = (cpu["validate_convert"] + cpu["ndjson_serialise"]) / max(totals.cases, 1) * 1e3
    say("")
    say(
        f"{totals.cases:,} cases ({totals.failed} failed), {totals.resources:,} resources "
        f"({summary['resources_per_case']:.1f}/case), {mb(written)} NDJSON "
        f"{'(discarded)' if folder is None else ''}"
    )
    say(
        f"wall {duration(wall)} with {args.jobs} process(es): {rate:,.0f} cases/s, "
        f"{summary['resources_per_s']:,.0f} resources/s"
    )
    say(
        f"CPU seconds: synthetic input {cpu['generate_synthetic']:.0f} s, validate+convert "
        f"{cpu['validate_convert']:.0f} s, NDJSON {cpu['ndjson_serialise']:.0f} s "
        f"(adapter only: {adapter_ms:.2f} ms/case)"
    )
    worker_text = (
        f", largest worker {summary['peak_rss_worker_mb']:.0f} MB, all processes "
        f"{summary['peak_rss_total_mb']:.0f} MB"
        if args.jobs > 1
        else ""
    )
    say(
        f"peak RSS: main {summary['peak_rss_main_mb']:.0f} MB (start "
        f"{summary['rss_baseline_mb']:.0f} MB){worker_text}; target < {TARGET_MB} MB: "
        f"{'met' if summary['meets_200mb'] else 'NOT met'}"
        + (f"; RSS change 20%->100%: {flat_growth:+.1f} MB" if flat_growth is not None else "")
    )
    if "extrapolated_1m_wall_s" in summary:
        say(
            f"extrapolated (linear, not measured): 1,000,000 cases would take "
            f"{duration(summary['extrapolated_1m_wall_s'])} at this rate"
        )
    if args.json:
        print(json.dumps(summary | {"ticks": ticks}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
