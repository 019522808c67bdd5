"""The compiled build (``FHIR_ADAPTER_COMPILE=1``, mypyc) behaves byte for byte like the source.

setup.py compiles the conversion path to C extensions for speed. mypyc keeps Python's
semantics for type-checked code, with known gaps (a frozen dataclass could not be unpickled
into a worker process until ConversionOptions said how). So this builds the wheel as a user
would, unpacks it, and runs ``fhir-adapter convert`` from it and from the source tree on the
same inputs: the examples, synthetic records through worker processes, R4 and R5, JSON and
NDJSON, and every invalid example. Files, exit codes and messages must be identical.

It needs a C compiler and the package index (pip fetches setuptools and mypy into the build
environment). Without a compiler it is skipped, except under CI, where it must run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from adapter.synthetic import generate_cases
from tests.conftest import CASES, INVALID, ROOT

pytestmark = pytest.mark.compiled

COMPILED_MODULES = [
    "adapter.mapping.bundle",
    "adapter.mapping.medication",
    "adapter.record.validate",
    "adapter.pipeline",
    "adapter.terminology",
]


@pytest.fixture(scope="module")
def compiled_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled wheel, built from this checkout and unpacked (its own site directory)."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no C compiler: CI must test the compiled build")
        pytest.skip("no C compiler (cc/gcc) to build the compiled wheel")
    work = tmp_path_factory.mktemp("compiled")
    wheels = work / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels)]
    env = dict(os.environ, FHIR_ADAPTER_COMPILE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    result = subprocess.run(
        [*command, str(ROOT)], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"compiled wheel build failed:\n{result.stderr[-3000:]}"
    (wheel,) = wheels.glob("fhir_oncology_adapter-*.whl")
    assert "-cp3" in wheel.name, f"{wheel.name} is not a platform wheel: nothing was compiled"
    site = work / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def _cli(site: Path, arguments: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``fhir-adapter ...`` with ``site`` first on the path (run outside the checkout, so that
    the working directory does not put the source package ahead of it)."""
    env = dict(os.environ, PYTHONPATH=str(site), FHIR_ADAPTER_MAPPINGS=str(ROOT / "mappings"))
    return subprocess.run(
        [sys.executable, "-m", "adapter", *arguments],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synthetic-records")
    for record in generate_cases(300, seed=23):
        (folder / f"{record['record_id']}.json").write_text(json.dumps(record))
    return folder


def test_the_compiled_modules_are_the_ones_imported(compiled_site: Path, tmp_path: Path) -> None:
    code = "import importlib, sys; print('\\n'.join(importlib.import_module(m).__file__ or '' "
    code += f"for m in {COMPILED_MODULES!r}))"
    env = dict(os.environ, PYTHONPATH=str(compiled_site))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    files = result.stdout.split()
    assert len(files) == len(COMPILED_MODULES)
    assert all(f.startswith(str(compiled_site)) and f.endswith(".so") for f in files), files


RUNS: dict[str, tuple[str, list[str]]] = {
    "examples-json-r4": ("examples", ["--format", "json"]),
    "examples-json-r5": ("examples", ["--format", "json", "--fhir-version", "R5"]),
    "examples-ndjson-r4": ("examples", ["--format", "ndjson"]),
    "synthetic-json-r4-jobs2": ("synthetic", ["--format", "json", "--jobs", "2"]),
    "synthetic-ndjson-r5-jobs2": (
        "synthetic",
        ["--format", "ndjson", "--fhir-version", "R5", "--jobs", "2"],
    ),
}
"""What is compared: the worker-process runs carry the options and outcomes through pickle."""


@pytest.mark.parametrize("run", sorted(RUNS))
def test_compiled_convert_writes_the_same_bytes(
    compiled_site: Path, synthetic_folder: Path, tmp_path: Path, run: str
) -> None:
    inputs, options = RUNS[run]
    folder = CASES if inputs == "examples" else synthetic_folder
    outputs = {}
    for build, site in (("source", ROOT), ("compiled", compiled_site)):
        out = tmp_path / build
        result = _cli(site, ["convert", str(folder), "--out-dir", str(out), *options], tmp_path)
        assert result.returncode == 0, f"{build}: {result.stderr[-2000:]}"
        outputs[build] = (_tree(out), result.stderr)
    source_files, compiled_files = outputs["source"][0], outputs["compiled"][0]
    assert len(source_files) >= 3, f"{run}: too few files to compare"
    assert sorted(compiled_files) == sorted(source_files)
    differing = [f for f in source_files if source_files[f] != compiled_files[f]]
    assert not differing, f"{run}: compiled output differs in {differing[:5]}"
    assert outputs["compiled"][1] == outputs["source"][1]  # warnings, word for word


def test_compiled_validation_words_every_invalid_example_alike(
    compiled_site: Path, tmp_path: Path
) -> None:
    invalid = sorted(INVALID.glob("*.json"))
    assert invalid
    for path in invalid:
        arguments = ["convert", str(path), "--out-dir", str(tmp_path / "out")]
        source = _cli(ROOT, arguments, tmp_path)
        compiled = _cli(compiled_site, arguments, tmp_path)
        assert source.returncode != 0, path.name
        assert (compiled.returncode, compiled.stdout, compiled.stderr) == (
            source.returncode,
            source.stdout,
            source.stderr,
        ), path.name
