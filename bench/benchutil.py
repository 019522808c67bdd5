"""Helpers shared by the benchmark scripts: machine description, one-core pinning, timing."""

from __future__ import annotations

import asyncio
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "cases"


def machine() -> dict[str, Any]:
    """nproc, CPU model and RAM of this machine, for the figures' provenance."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        import psutil

        ram_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": ram_gb,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def machine_line(info: dict[str, Any]) -> str:
    """One line describing the machine."""
    return (
        f"machine: {info['nproc']} CPU ({info['cpu']}), {info['ram_gb']} GB RAM, "
        f"Python {info['python']}, {info['platform']}, load average {info['load_avg_1m']}"
    )


def pin_one_core() -> int | None:
    """Pin this process to one CPU (the last allowed one) so timings use a single core."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[-1]
    os.sched_setaffinity(0, {cpu})
    return cpu


def per_call(fn: Callable[[], object], repeat: int, min_sample_s: float = 0.02) -> float:
    """Median seconds per call over ``repeat`` samples, after a warm-up.

    Each sample runs ``fn`` enough times to last ``min_sample_s`` so that timer resolution
    does not matter; the garbage collector stays on, as in production.
    """
    for _ in range(3):
        fn()
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_sample_s or loops >= 1 << 20:
            break
        loops *= 2
    samples = [elapsed / loops]
    for _ in range(repeat - 1):
        gc.collect()
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - start) / loops)
    return statistics.median(samples)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank on sorted data."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


async def post_concurrently(
    client: httpx.AsyncClient,
    url: str,
    bodies: list[bytes],
    headers: dict[str, str],
    concurrency: int,
) -> tuple[list[float], Counter[int], float]:
    """POST every body with ``concurrency`` workers: latencies (s), statuses (0 for a failed
    connection), wall time (s)."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    queue = iter(bodies)

    async def worker() -> None:
        for body in queue:
            start = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers=headers)
                statuses[response.status_code] += 1
            except httpx.HTTPError:
                statuses[0] += 1
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses, time.perf_counter() - started


COMPILED_MARKER = "FHIR_BENCH_COMPILED_SITE"
"""An unpacked compiled wheel to reuse; set by :func:`rerun_compiled` in the process it starts."""


def compiled_site(work: Path) -> Path:
    """Build the compiled wheel (``FHIR_ADAPTER_COMPILE=1``, setup.py) of this checkout and
    unpack it into ``work/site``: a directory to put first on ``PYTHONPATH`` so that the
    command line runs the mypyc-compiled conversion path (needs a C compiler; ~1 min).

    :data:`COMPILED_MARKER` names an unpacked wheel to use instead of building one (to
    compare several runs on the same build)."""
    reuse = os.environ.get(COMPILED_MARKER)
    if reuse:
        return Path(reuse)
    wheels, site = work / "wheels", work / "site"
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels)]
    env = dict(os.environ, FHIR_ADAPTER_COMPILE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    result = subprocess.run([*command, str(ROOT)], env=env, capture_output=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"compiled build failed: {result.stderr.decode()[-1500:]}")
    (wheel,) = wheels.glob("fhir_oncology_adapter-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def rerun_compiled(script: str, argv: list[str]) -> None:
    """Re-run this benchmark process on the compiled wheel: build it, then ``exec`` the same
    script and arguments (without ``--compiled``) with the wheel first on ``PYTHONPATH``.

    For scripts that import the adapter at the top, in their own process: the replacement
    process imports the compiled modules from the start. The wheel's folder is left behind
    in the system temporary folder (a few MB) because this process is gone when it ends.
    """
    import tempfile

    site = compiled_site(Path(tempfile.mkdtemp(prefix="fhir-bench-compiled-")))
    env = dict(os.environ, PYTHONPATH=str(site), FHIR_ADAPTER_MAPPINGS=str(ROOT / "mappings"))
    env.update(FHIR_ADAPTER_EXAMPLES=str(EXAMPLES), **{COMPILED_MARKER: str(site)})
    arguments = [a for a in argv if a != "--compiled"]
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, script, *arguments], env)


def running_compiled() -> bool:
    """Whether the adapter this process imported is the compiled wheel's."""
    import adapter.pipeline

    return (adapter.pipeline.__file__ or "").endswith(".so")
