"""The synthetic case generator: deterministic, valid, realistic in size and mix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from adapter.mapping import ConversionOptions, convert_record
from adapter.record.validate import validate_record
from adapter.synthetic import (
    build_seed_model,
    generate_case,
    generate_cases,
    record_id,
    seed_model,
)
from tests.conftest import CASES

ROOT = Path(__file__).resolve().parents[2]


def test_same_seed_same_records_and_other_seed_other_records() -> None:
    first = list(generate_cases(25, seed=5))
    assert first == list(generate_cases(25, seed=5))
    assert first != list(generate_cases(25, seed=6))


def test_a_range_of_the_stream_equals_the_same_slice_of_the_whole_stream() -> None:
    whole = list(generate_cases(30, seed=2))
    assert list(generate_cases(10, seed=2, start=21)) == whole[20:30]
    assert generate_case(7, seed=2) == whole[6]


def test_records_do_not_depend_on_the_hash_seed_of_the_process() -> None:
    script = (
        "import json; from adapter.synthetic import generate_cases; "
        "print(json.dumps(list(generate_cases(5, seed=3))))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env=os.environ | {"PYTHONHASHSEED": hash_seed},
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert json.loads(outputs.pop()) == list(generate_cases(5, seed=3))


def test_generate_cases_streams_and_numbers_its_records() -> None:
    stream = generate_cases(10**9)
    assert isinstance(stream, types.GeneratorType)  # lazy: a billion costs nothing up front
    first, second = next(stream), next(stream)
    assert (first["record_id"], second["record_id"]) == ("synth-000001", "synth-000002")
    assert first["source"]["case_number"] == 1
    assert record_id(1_234_567) == "synth-1234567"


def test_generated_records_are_valid() -> None:
    problems = {
        record["record_id"]: errors[:3]
        for record in generate_cases(300, seed=11)
        if (errors := validate_record(record))
    }
    assert problems == {}


def test_bundles_have_a_realistic_size() -> None:
    sizes = [
        len(convert_record(record, ConversionOptions()).bundle["entry"])
        for record in generate_cases(300, seed=0)
    ]
    mean = sum(sizes) / len(sizes)
    assert 32 <= mean <= 50, mean  # tuned for about 40 (bench/README.md)
    assert min(sizes) >= 3  # Patient, a Condition, Provenance at least


def test_day_precise_starts_follow_the_knob() -> None:
    def day_share(share: float | None) -> float:
        starts = [
            t["start"]
            for r in generate_cases(400, seed=1, day_start_share=share)
            for t in r.get("treatments", [])
            if "start" in t
        ]
        return sum(len(s) == 10 for s in starts) / len(starts)

    assert day_share(1.0) == 1.0
    assert day_share(None) < day_share(0.8)


def test_diagnosis_and_sex_mix_follow_the_seed_cases() -> None:
    model = seed_model()
    n = 3000
    records = list(generate_cases(n, seed=4))
    primaries = Counter(r["diagnoses"][0]["condition"] for r in records)
    seeds = Counter(model.primaries)
    for condition, count in seeds.items():
        expected = count / len(model.primaries)
        assert abs(primaries[condition] / n - expected) < 0.04, (condition, primaries)
    assert set(primaries) <= set(seeds)
    sexes = Counter(r["patient"]["sex"] for r in records)
    expected_female = model.sexes.count("female") / len(model.sexes)
    assert abs(sexes["female"] / n - expected_female) < 0.04


def test_staging_mix_follows_the_seed_cases() -> None:
    model = seed_model()
    records = list(generate_cases(3000, seed=8))
    for condition in ("sezary_syndrome", "mycosis_fungoides"):
        profile = model.profiles.get(condition)
        if profile is None:
            continue
        staged_seed = sum(bool(s) for s in profile.stagings) / len(profile.stagings)
        cases = [r for r in records if r["diagnoses"][0]["condition"] == condition]
        staged = sum("stagings" in r["diagnoses"][0] for r in cases) / len(cases)
        assert abs(staged - staged_seed) < 0.08, (condition, staged, staged_seed)
    lhes = [
        r
        for r in records
        if r["diagnoses"][0]["condition"] == "lymphocytic_variant_hypereosinophilic_syndrome"
    ]
    assert lhes and not any("stagings" in r["diagnoses"][0] for r in lhes)


def test_agents_come_from_the_seed_cases_of_the_same_diagnosis() -> None:
    seed_drugs: dict[str, set[str]] = {}
    for path in sorted(CASES.glob("*.json")):
        seed = json.loads(path.read_text(encoding="utf-8"))
        primary = next(d["condition"] for d in seed["diagnoses"] if d["role"] == "primary")
        for treatment in seed.get("treatments", []):
            for agent in treatment.get("agents", []):
                seed_drugs.setdefault(primary, set()).add(agent["drug"])
    for record in generate_cases(500, seed=9):
        primary = record["diagnoses"][0]["condition"]
        for treatment in record.get("treatments", []):
            for agent in treatment.get("agents", []):
                assert agent["drug"] in seed_drugs[primary], (primary, agent["drug"])


def test_unreadable_seeds_are_skipped_and_unknown_concepts_left_out(tmp_path: Path) -> None:
    seed = json.loads((CASES / "lhes-03.json").read_text(encoding="utf-8"))
    seed["adverse_events"][0]["term"] = "not_a_known_term"
    (tmp_path / "a.json").write_text(json.dumps(seed), encoding="utf-8")
    (tmp_path / "b.json").write_text('{"record_id": "half-writ', encoding="utf-8")
    model = build_seed_model(tmp_path)
    assert model.files == ("a.json",)
    assert "not_a_known_term" not in {e["term"] for e in model.adverse_events}
    for record in generate_cases(50, seed=1, model=model):
        assert validate_record(record) == []


def test_an_empty_seed_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no usable seed"):
        build_seed_model(tmp_path)
