"""Checksums of everything ``fhir-adapter convert`` writes, to prove a speed change changed no byte.

Speed work must not change output: for the same input and the same mappers, bundles and NDJSON
must be byte-identical before and after. This script runs the real command line (as a user
does) on fixed inputs and prints one SHA-256 per run plus one over all of them:

* the 22 example records of ``examples/cases/``: one JSON bundle each (R4 and R5) and NDJSON
  (R4 and R5);
* ``--cases`` synthetic records (default 2,000, seed 11, written as files): JSON bundles (R4)
  and NDJSON (R4 and R5).

Each run's digest covers every output file (name and bytes, in name order), the command's
stdout, stderr and exit code. Run it on the commit before a change and after it, and compare:

    .venv/bin/python bench/output_checksum.py > before.txt
    (change the code)
    .venv/bin/python bench/output_checksum.py > after.txt && diff before.txt after.txt

``--jobs N`` passes ``--jobs N`` to every run (default: leave the command's own default), so
the same script shows that ``--jobs 1`` and ``--jobs 2`` write the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchutil import EXAMPLES, ROOT

from adapter.synthetic import generate_cases


def _digest_run(command: list[str], out_dir: Path) -> str:
    """SHA-256 over the files ``command`` writes to ``out_dir`` and what it prints."""
    result = subprocess.run(command, cwd=ROOT, capture_output=True, check=False)
    digest = hashlib.sha256()
    digest.update(f"exit {result.returncode}\n".encode())
    digest.update(b"stdout\n" + result.stdout)
    digest.update(b"stderr\n" + result.stderr.replace(str(out_dir).encode(), b"OUT"))
    for path in sorted(out_dir.rglob("*")):
        if path.is_file():
            digest.update(f"\nfile {path.relative_to(out_dir)}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000, help="synthetic records (seed 11)")
    parser.add_argument("--jobs", type=int, default=None, help="pass --jobs N to every run")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fhir-adapter-checksum-"))
    try:
        synthetic = work / "synthetic"
        synthetic.mkdir()
        for record in generate_cases(args.cases, seed=11):
            (synthetic / f"{record['record_id']}.json").write_text(json.dumps(record, indent=1))
        runs = [
            ("examples", EXAMPLES, "json", "R4"),
            ("examples", EXAMPLES, "json", "R5"),
            ("examples", EXAMPLES, "ndjson", "R4"),
            ("examples", EXAMPLES, "ndjson", "R5"),
            ("synthetic", synthetic, "json", "R4"),
            ("synthetic", synthetic, "ndjson", "R4"),
            ("synthetic", synthetic, "ndjson", "R5"),
        ]
        total = hashlib.sha256()
        for name, folder, output_format, version in runs:
            out_dir = work / f"out-{name}-{output_format}-{version}"
            command = [sys.executable, "-m", "adapter", "convert", str(folder)]
            command += ["--out-dir", str(out_dir), "--format", output_format]
            command += ["--fhir-version", version]
            if args.jobs is not None:
                command += ["--jobs", str(args.jobs)]
            digest = _digest_run(command, out_dir)
            total.update(digest.encode())
            print(f"{name:9} {output_format:6} {version}  {digest}")
            shutil.rmtree(out_dir)
        print(f"all ({args.cases} synthetic)  {total.hexdigest()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
