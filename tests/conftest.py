"""Shared fixtures: the example records and where they live."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "examples" / "cases"
INVALID = ROOT / "examples" / "invalid"
EXPECTED = Path(__file__).resolve().parent / "expected"

CASE_FILES = sorted(CASES.glob("*.json"))

# PostgreSQL for the gateway's Postgres outbox: scripts/test.sh starts a throwaway cluster
# (tests/postgres/pg.sh) and sets both variables. Without a cluster the Postgres tests are
# skipped, except where FHIR_TEST_REQUIRE_POSTGRES=1 (CI): there a missing one fails them.
POSTGRES_URL = os.environ.get("FHIR_TEST_POSTGRES_URL")
POSTGRES_REQUIRED = os.environ.get("FHIR_TEST_REQUIRE_POSTGRES") == "1"
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL and not POSTGRES_REQUIRED,
    reason="FHIR_TEST_POSTGRES_URL not set (scripts/test.sh starts a PostgreSQL cluster)",
)


def postgres_url() -> str:
    """The test cluster's URL; fails (never skips) when Postgres is required but missing."""
    if not POSTGRES_URL:
        pytest.fail("FHIR_TEST_REQUIRE_POSTGRES=1 but FHIR_TEST_POSTGRES_URL is not set")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail("psycopg is not installed: pip install -e '.[postgres]'")
    return POSTGRES_URL


def load_case(name: str) -> dict[str, Any]:
    """One example record by file stem."""
    data: dict[str, Any] = json.loads((CASES / f"{name}.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture(params=[p.stem for p in CASE_FILES], ids=[p.stem for p in CASE_FILES])
def case_name(request: pytest.FixtureRequest) -> str:
    """Each example record's name, one test per record."""
    return str(request.param)
