"""``fhir-adapter push`` on an NDJSON of many records against the local HAPI: concurrent,
interrupted with Ctrl-C (SIGINT) part-way, resumed from its journal without resending.

Needs ``FHIR_TEST_SERVER_URL`` (set by scripts/test.sh); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapter.mapping.context import DEFAULT_NAMESPACE
from tests.conftest import load_case

SERVER_URL = os.environ.get("FHIR_TEST_SERVER_URL")
if not SERVER_URL:
    pytest.skip("FHIR_TEST_SERVER_URL is not set", allow_module_level=True)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PATIENT_SYSTEM = f"{DEFAULT_NAMESPACE}/fhir/identifier/case-record"
RECORDS = 24
INTERRUPT_AFTER = 4


def command(ndjson: Path, state: Path) -> list[str]:
    assert SERVER_URL
    script = Path(sys.executable).with_name("fhir-adapter")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "adapter"]
    return [
        *base,
        "push",
        str(ndjson),
        "--server",
        SERVER_URL,
        "--jobs",
        "3",
        "--state",
        str(state),
        "-q",
        "--no-progress",
        "--summary",
        "json",
    ]


def summary_of(stdout: str) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return summary


def test_bulk_push_interrupted_and_resumed(tmp_path: Path) -> None:
    template = load_case("caruso2022-12")
    run_id = uuid.uuid4().hex[:12]
    ids = [f"bulk-{run_id}-{i:03d}" for i in range(RECORDS)]
    ndjson = tmp_path / "cases.ndjson"
    ndjson.write_text("".join(json.dumps(dict(template, record_id=i)) + "\n" for i in ids))
    state = tmp_path / "push.state"

    # First run: Ctrl-C once a few records are on the server.
    first = subprocess.Popen(
        command(ndjson, state),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert first.stdout is not None
    lines = []
    for line in first.stdout:
        lines.append(line)
        if sum("resources," in seen for seen in lines) >= INTERRUPT_AFTER:
            first.send_signal(signal.SIGINT)
            break
    rest, errors = first.communicate(timeout=600)
    out = "".join(lines) + rest
    assert first.returncode == 130, errors
    interrupted = summary_of(out)
    assert interrupted["interrupted"] is True
    assert INTERRUPT_AFTER <= interrupted["pushed"] < RECORDS, interrupted
    assert interrupted["failed"] == interrupted["invalid"] == 0, errors
    journaled = sum(1 for line in state.read_text().splitlines() if '"digest"' in line)
    assert journaled == interrupted["pushed"]  # every answer that came back is journaled

    # Second run: the rest, nothing twice.
    second = subprocess.run(
        command(ndjson, state), cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert second.returncode == 0, second.stderr
    resumed = summary_of(second.stdout)
    assert resumed["skipped"] == journaled
    assert resumed["pushed"] == RECORDS - journaled
    # Everything the second run sent was new to the server: nothing already there was resent.
    assert resumed["created"] == resumed["resources"] > 0

    with httpx.Client(base_url=SERVER_URL.rstrip("/") + "/", timeout=60.0) as hapi:
        for record_id in ids:
            found = hapi.get(
                "Patient",
                params={"identifier": f"{PATIENT_SYSTEM}|{record_id}", "_summary": "count"},
                headers={"Cache-Control": "no-cache"},
            ).json()
            assert found["total"] == 1, record_id
