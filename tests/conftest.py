"""Shared fixtures: the example records and where they live."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "examples" / "cases"
INVALID = ROOT / "examples" / "invalid"
EXPECTED = Path(__file__).resolve().parent / "expected"

CASE_FILES = sorted(CASES.glob("*.json"))


def load_case(name: str) -> dict[str, Any]:
    """One example record by file stem."""
    data: dict[str, Any] = json.loads((CASES / f"{name}.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture(params=[p.stem for p in CASE_FILES], ids=[p.stem for p in CASE_FILES])
def case_name(request: pytest.FixtureRequest) -> str:
    """Each example record's name, one test per record."""
    return str(request.param)
