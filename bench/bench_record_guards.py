"""Linear time, measured: the record layer's cost against the size of its input.

The checks on request bodies must be linear in their size, or one hostile body stalls a
worker (#11: a 20,000-quote string took 9 s in the former nesting guard). For inputs of
growing size this prints the time of ``parse_json_object`` and ``validate_record`` and the
time per unit (per MB, per item): a flat "per unit" column is linear time.

* hostile bodies: an unterminated string of escaped quotes (the #11 reproduction), the same
  string closed, brackets nested millions deep, a deep spine of small bumps (malformed), up to
  5 MB (the gateway's default body limit);
* valid records grown by observations and by treatments with relative times (semantic rules);
* invalid records with N bad observations, all errors and capped with ``max_errors=100``.

    .venv/bin/python bench/bench_record_guards.py [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from benchutil import EXAMPLES, machine, machine_line

from adapter.record.errors import RecordInputError
from adapter.record.loader import parse_json_object
from adapter.record.validate import validate_record


def _seconds(fn: Callable[[], Any], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _parse_quietly(data: bytes) -> None:
    with contextlib.suppress(RecordInputError):
        parse_json_object(data)


def _hostile(kind: str, size: int) -> bytes:
    if kind == 'unterminated \\" string':
        return ('{"a":"' + '\\"' * (size // 2)).encode()
    if kind == 'closed \\" string':
        return ('{"a":"' + '\\"' * (size // 2) + '"}').encode()
    if kind == "[[[...]]] nesting":
        return b"[" * (size // 2) + b"]" * (size // 2)
    if kind == "deep spine of bumps":
        return (b"[" * 60 + b"[[[[[[[[[[]]]]]]]]]]" * (size // 20)) + b"]" * 60
    raise ValueError(kind)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    say(machine_line(machine()))
    results: dict[str, Any] = {"hostile": [], "valid": [], "invalid": []}

    say("\nhostile bodies, parse_json_object (best of 3):")
    for kind in [
        'unterminated \\" string',
        'closed \\" string',
        "[[[...]]] nesting",
        "deep spine of bumps",
    ]:
        for size in (20_000, 200_000, 2_000_000, 5_000_000):
            data = _hostile(kind, size)
            seconds = _seconds(functools.partial(_parse_quietly, data))
            per_mb = seconds / (len(data) / 1e6) * 1e3
            results["hostile"].append({"kind": kind, "bytes": len(data), "ms": seconds * 1e3})
            say(f"  {kind:24} {len(data):>9,} B  {seconds * 1e3:8.1f} ms  {per_mb:6.1f} ms/MB")

    base = json.loads((EXAMPLES / "caruso2022-02.json").read_text(encoding="utf-8"))
    first_treatment = base["treatments"][0]["id"]
    say("\nvalid records grown, validate_record (best of 3):")
    growers: list[tuple[str, Callable[[dict[str, Any], int], None]]] = [
        (
            "observations",
            lambda r, n: r.update(
                observations=[
                    {"kind": "lymphocytes", "value": 1.5, "date": "2019-07"} for _ in range(n)
                ]
            ),
        ),
        (
            "adverse events (relative)",
            lambda r, n: r.update(
                adverse_events=[
                    {
                        "id": f"ae{i}",
                        "term": "constipation",
                        "text": "constipation",
                        "onset_after": {"treatment": first_treatment, "days": 3},
                        "suspects": [{"treatment": first_treatment}],
                    }
                    for i in range(n)
                ]
            ),
        ),
    ]
    for what, grow in growers:
        for n in (10, 100, 1_000, 10_000):
            record = copy.deepcopy(base)
            grow(record, n)
            assert validate_record(record) == [], validate_record(record)[:3]
            seconds = _seconds(functools.partial(validate_record, record))
            per_item = seconds / n * 1e6
            size = len(json.dumps(record))
            results["valid"].append({"grown": what, "n": n, "bytes": size, "ms": seconds * 1e3})
            say(
                f"  {n:>6} {what:26} {size:>9,} B  {seconds * 1e3:8.1f} ms  {per_item:6.1f} µs/item"
            )

    say("\ninvalid records: N observations with an unknown property each (best of 3):")
    for n in (100, 1_000, 10_000, 40_000):
        record = copy.deepcopy(base)
        record["observations"] = [
            {"kind": "lymphocytes", "value": 1, "date": "2019-07", "bogus": i} for i in range(n)
        ]
        full = _seconds(functools.partial(validate_record, record), repeat=1)
        capped = _seconds(functools.partial(validate_record, record, max_errors=100), repeat=1)
        result = validate_record(record, max_errors=100)
        results["invalid"].append(
            {"n": n, "all_ms": full * 1e3, "capped_ms": capped * 1e3, "omitted": result.omitted}
        )
        say(
            f"  {n:>6} errors  all {full * 1e3:8.1f} ms ({full / n * 1e6:5.1f} µs/error)  "
            f"max_errors=100 {capped * 1e3:8.1f} ms, {len(result)} kept, {result.omitted} omitted"
        )
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
