"""Render the timeline of every example case and of every expected adapter bundle into a folder.

Why: a change to ``adapter/timeline/`` that should not change the pictures is proven by rendering
before and after and comparing the folders byte for byte (``diff -r``); a change that should
is reviewed by looking at the files. Both go through ``fhir-adapter timeline`` in-process, so a
bundle takes the user's path (bundle → record → validation → drawing). Next to each picture,
``.model.txt`` holds the placed model (``build_timeline``) so that a change to placement shows
even where it does not move a pixel.

    python scripts/render_timelines.py OUTDIR            # SVG, PNG and model of each
    python scripts/render_timelines.py OUTDIR --svg-only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from adapter.cli import main as fhir_adapter
from adapter.mapping.context import DEFAULT_NAMESPACE
from adapter.reverse import bundle_to_record
from adapter.timeline import build_timeline

ROOT = Path(__file__).resolve().parent.parent


def _sources() -> list[tuple[str, Path]]:
    cases = sorted((ROOT / "examples" / "cases").glob("*.json"))
    bundles = sorted((ROOT / "tests" / "expected").glob("*.R4.json"))
    return [(p.stem, p) for p in cases] + [(f"bundle-{p.name[:-8]}", p) for p in bundles]


def main() -> int:
    """Render everything; a non-zero exit when any rendering fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--svg-only", action="store_true")
    args = parser.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    suffixes = [".svg"] if args.svg_only else [".svg", ".png"]
    failures = 0
    for name, source in _sources():
        for suffix in suffixes:
            target = args.outdir / f"{name}{suffix}"
            failures += fhir_adapter(["timeline", str(source), "-o", str(target)]) != 0
        record = json.loads(source.read_text(encoding="utf-8"))
        if record.get("resourceType") == "Bundle":
            record = bundle_to_record(record, DEFAULT_NAMESPACE)
        (args.outdir / f"{name}.model.txt").write_text(f"{build_timeline(record)!r}\n")
    code = Path(build_timeline.__code__.co_filename).parent
    print(f"{len(_sources())} sources rendered to {args.outdir} by {code}, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
