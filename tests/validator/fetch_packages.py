#!/usr/bin/env python3
"""Fetch the pinned npm IG packages (packages.json) into a cache and print their paths.

Stdlib only, so it runs before any virtualenv exists. A package already in the cache whose
sha512 matches its pin is used as is: CI fetches each package once per machine, not once per
run. A fresh download goes through ``npm pack`` (the registry client, which also checks the
registry's own integrity), is checked against our pin, and only then enters the cache.

Usage: fetch_packages.py [--cache DIR]; prints one tarball path per line, in packages.json
order (the validator's precedence). Progress and errors go to stderr.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "fhir-oncology-adapter"
    / "ig-packages"
)


def integrity_of(path: Path) -> str:
    """The npm-style integrity string (``sha512-<base64>``) of a file."""
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode("ascii")


def fetch(name: str, version: str, integrity: str, cache: Path) -> Path:
    """The cached tarball of ``name@version``, downloaded with npm when missing or altered."""
    target = cache / f"{name}-{version}.tgz"
    if target.is_file() and integrity_of(target) == integrity:
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(f"fetch_packages: npm not found; needed to fetch {name}@{version}")
    print(f"fetch_packages: npm pack {name}@{version}", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        result = subprocess.run(
            [npm, "pack", f"{name}@{version}", "--pack-destination", tmp, "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(
                f"fetch_packages: npm pack {name}@{version} failed:\n{result.stderr[-2000:]}"
            )
        filename = json.loads(result.stdout)[0]["filename"]
        downloaded = Path(tmp) / filename
        actual = integrity_of(downloaded)
        if actual != integrity:
            raise SystemExit(
                f"fetch_packages: {name}@{version} has integrity {actual}, pinned {integrity}"
            )
        os.replace(downloaded, target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    pins = json.loads((HERE / "packages.json").read_text(encoding="utf-8"))["packages"]
    for pin in pins:
        print(fetch(pin["name"], pin["version"], pin["integrity"], args.cache))


if __name__ == "__main__":
    main()
