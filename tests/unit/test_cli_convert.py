"""``fhir-adapter convert``: outputs, NDJSON, exit codes, a broken file among good ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from adapter.cli import main
from adapter.fhir_validation import validate_resource
from adapter.mapping import ConversionOptions
from adapter.pipeline import PARALLEL_FROM, default_jobs, render_sources
from adapter.synthetic import generate_cases
from tests.conftest import CASES, INVALID


def test_single_file_to_output(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    assert main(["convert", str(CASES / "caruso2022-02.json"), "-o", str(out), "-q"]) == 0
    bundle = json.loads(out.read_text())
    assert bundle["type"] == "transaction" and len(bundle["entry"]) > 20


def test_folder_with_one_broken_file_converts_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("caruso2022-02", "lhes-01"):
        shutil.copy(CASES / f"{name}.json", folder)
    shutil.copy(INVALID / "06-unknown-drug.json", folder / "broken.json")
    out = tmp_path / "out"
    assert main(["convert", str(folder), "--out-dir", str(out), "--summary", "json"]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["caruso2022-02.json", "lhes-01.json"]
    captured = capsys.readouterr()
    assert "broken.json: $.treatments[0].agents[0].drug" in captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["converted"] == 2 and summary["failed"] == 1
    assert summary["failed_inputs"] == [str(folder / "broken.json")]


def test_ndjson_rereads_into_valid_resources(tmp_path: Path) -> None:
    out = tmp_path / "nd"
    assert main(["convert", str(CASES), "--out-dir", str(out), "--format", "ndjson", "-q"]) == 0
    files = {p.stem: p for p in out.glob("*.ndjson")}
    assert {"Patient", "Condition", "MedicationAdministration", "Provenance"} <= set(files)
    patients = files["Patient"].read_text().splitlines()
    assert len(patients) == 22
    for path in files.values():
        for line in path.read_text().splitlines()[:5]:
            resource = json.loads(line)
            assert validate_resource(resource, "R4") == []


@pytest.mark.parametrize(
    "argv",
    [
        ["convert", "a.json", "b.json"],  # several inputs without --out-dir
        ["convert", "a.json", "--format", "ndjson"],  # ndjson without --out-dir
        ["convert", "a.json", "--jobs", "0", "--out-dir", "x"],
        ["convert", "a.json", "--fhir-version", "R3"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    assert main(argv) == 2


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("output_format", ["json", "ndjson"])
def test_parallel_jobs_give_the_same_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], output_format: str
) -> None:
    """Enough inputs for worker processes (``PARALLEL_FROM``), one of them broken: files,
    error lines and summary are the same for --jobs 1, --jobs 2 and the default."""
    folder = tmp_path / "in"
    folder.mkdir()
    for record in generate_cases(PARALLEL_FROM + 6, seed=9):
        (folder / f"{record['record_id']}.json").write_text(json.dumps(record))
    shutil.copy(INVALID / "06-unknown-drug.json", folder / "synth-000030-broken.json")
    runs = {}
    for jobs in (["--jobs", "1"], ["--jobs", "2"], []):
        out = tmp_path / f"out{len(runs)}"
        args = ["convert", str(folder), "--out-dir", str(out), "--format", output_format]
        assert main([*args, "--summary", "json", *jobs]) == 1
        captured = capsys.readouterr()
        runs[" ".join(jobs) or "default"] = (_outputs(out), captured.err, captured.out)
    serial = runs.pop("--jobs 1")
    assert "synth-000030-broken.json: $.treatments[0].agents[0].drug" in serial[1]
    for other in runs.values():
        assert other == serial


def test_render_sources_in_workers_equals_in_process(tmp_path: Path) -> None:
    sources = []
    for record in generate_cases(PARALLEL_FROM, seed=4):
        path = tmp_path / f"{record['record_id']}.json"
        path.write_text(json.dumps(record))
        sources.append(str(path))
    options = ConversionOptions()
    serial = list(render_sources(sources, options, "ndjson", jobs=1))
    parallel = list(render_sources(sources, options, "ndjson", jobs=2))
    assert parallel == serial
    assert all(r.ok for r in serial)


def test_default_jobs_is_the_usable_core_count() -> None:
    import os

    assert default_jobs() == len(os.sched_getaffinity(0))


def test_validate_flag_and_r5(tmp_path: Path) -> None:
    out = tmp_path / "r5.json"
    args = ["convert", str(CASES / "caruso2022-12.json"), "--fhir-version", "R5", "--validate"]
    assert main([*args, "-o", str(out), "-q"]) == 0
    assert any(
        e["resource"]["resourceType"] == "AdverseEvent"
        for e in json.loads(out.read_text())["entry"]
    )
