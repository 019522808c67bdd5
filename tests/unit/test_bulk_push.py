"""Bulk push (``adapter.bulk_push`` and ``fhir-adapter push``) against a mocked FHIR server:
inputs, concurrency, per-record retries, the resume journal, the summary and exit codes."""

from __future__ import annotations

import json
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx

from adapter.bulk_push import (
    PushJournal,
    RecordResult,
    RetrySettings,
    bulk_push,
    count_records,
    expand_push_paths,
    iter_push_inputs,
    record_digest,
)
from adapter.cli import main
from adapter.fhir import FhirClient, RetryPolicy
from adapter.mapping import ConversionOptions
from tests.conftest import CASES, INVALID, load_case

BASE = "http://fhir.test/fhir"
OPTIONS = ConversionOptions()
NO_CLIENT_RETRY = RetryPolicy(max_attempts=1)
INSTANT = RetrySettings(retries=3, base_seconds=0.0, max_seconds=0.0)


class FakeServer:
    """Answers transactions like a FHIR server; can fail chosen records a number of times.

    Records are recognised by their Patient identifier value (the record_id).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: Counter[str] = Counter()
        self.failures: dict[str, list[int]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = threading.Event()  # set: answer at once; cleared: hold answers briefly

    def __call__(self, request: httpx.Request) -> httpx.Response:
        bundle = orjson.loads(request.content)
        if bundle.get("type") == "batch":
            # push_bundle first reads the record's state (a batch of one search): none here.
            searchset = {"resourceType": "Bundle", "type": "searchset", "total": 0}
            answer = {
                "resourceType": "Bundle",
                "type": "batch-response",
                "entry": [{"resource": searchset, "response": {"status": "200 OK"}}],
            }
            return httpx.Response(200, json=answer)
        record_id = next(
            e["resource"]["identifier"][0]["value"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "Patient"
        )
        with self.lock:
            self.received[record_id] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            planned = self.failures.get(record_id)
            status = planned.pop(0) if planned else 200
        try:
            threading.Event().wait(0.02)  # long enough for concurrent requests to overlap
            if status != 200:
                outcome = {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "processing", "diagnostics": "no"}],
                }
                return httpx.Response(status, json=outcome)
            entries = [
                {
                    "response": {
                        "status": "201 Created",
                        "location": f"{e['resource']['resourceType']}/{i}/_history/1",
                    }
                }
                for i, e in enumerate(bundle["entry"], start=1)
            ]
            answer = {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
            return httpx.Response(200, json=answer)
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    with respx.mock(assert_all_called=False) as router:
        router.post(BASE).mock(side_effect=fake)
        yield fake


def write_records(folder: Path, count: int, *, ndjson: str | None = None) -> list[str]:
    """``count`` copies of a small example with distinct record_ids: files, or one NDJSON."""
    folder.mkdir(parents=True, exist_ok=True)
    template = load_case("caruso2022-12")
    ids = []
    lines = []
    for index in range(count):
        record = dict(template, record_id=f"bulk-{index:04d}")
        ids.append(record["record_id"])
        if ndjson:
            lines.append(json.dumps(record))
        else:
            (folder / f"r{index:04d}.json").write_text(json.dumps(record))
    if ndjson:
        (folder / ndjson).write_text("\n".join(lines) + "\n\n")  # a blank line is skipped
    return ids


def run(paths: list[str], **kwargs: Any) -> tuple[Any, list[RecordResult]]:
    results: list[RecordResult] = []
    with FhirClient(BASE, retry=NO_CLIENT_RETRY) as client:
        summary = bulk_push(
            iter_push_inputs(paths),
            client=client,
            server=BASE,
            options=OPTIONS,
            on_result=results.append,
            retry=kwargs.pop("retry", INSTANT),
            **kwargs,
        )
    return summary, results


# -- inputs -------------------------------------------------------------------------------


def test_folders_yield_json_and_ndjson_records(tmp_path: Path) -> None:
    write_records(tmp_path / "in", 3)
    write_records(tmp_path / "in", 4, ndjson="more.ndjson")
    paths = list(expand_push_paths([str(tmp_path / "in")]))
    names = [Path(p).name for p in paths]
    assert names == ["r0000.json", "r0001.json", "r0002.json", "more.ndjson"]
    inputs = list(iter_push_inputs(paths))
    assert count_records(paths) == len(inputs) == 7
    assert inputs[3].source == f"{tmp_path / 'in' / 'more.ndjson'}:1"
    assert json.loads(inputs[6].read())["record_id"] == "bulk-0003"


# -- concurrency and the summary -----------------------------------------------------------


def test_pushes_everything_concurrently(tmp_path: Path, server: FakeServer) -> None:
    ids = write_records(tmp_path, 24, ndjson="cases.ndjson")
    summary, results = run([str(tmp_path / "cases.ndjson")], jobs=4)
    assert summary.ok and summary.pushed == 24 and summary.failed == summary.invalid == 0
    assert set(server.received) == set(ids) and set(server.received.values()) == {1}
    assert 2 <= server.max_in_flight <= 4  # concurrent, and never more than --jobs
    assert summary.resources == sum(r.resources for r in results) > 24 * 10
    assert summary.created == summary.resources  # the fake server creates everything


def test_one_job_sends_one_at_a_time(tmp_path: Path, server: FakeServer) -> None:
    write_records(tmp_path, 5)
    summary, _ = run(sorted(str(p) for p in tmp_path.glob("*.json")), jobs=1)
    assert summary.pushed == 5 and server.max_in_flight == 1


# -- retries ------------------------------------------------------------------------------


def test_transient_failures_are_retried_per_record(tmp_path: Path, server: FakeServer) -> None:
    write_records(tmp_path, 3)
    server.failures = {"bulk-0000": [503, 503], "bulk-0001": [409]}
    summary, results = run(sorted(str(p) for p in tmp_path.glob("*.json")), jobs=2)
    # A 409 (a lost race) is re-planned inside the single-record push, so the record needs
    # no second attempt of its own; a 503 is retried per record.
    assert summary.ok and summary.pushed == 3 and summary.retried == 1
    attempts = {Path(r.source).stem: r.attempts for r in results}
    assert attempts == {"r0000": 3, "r0001": 1, "r0002": 1}
    assert server.received["bulk-0001"] == 2


def test_a_refusal_is_final_and_retries_are_bounded(tmp_path: Path, server: FakeServer) -> None:
    write_records(tmp_path, 3)
    server.failures = {"bulk-0000": [422], "bulk-0001": [503] * 10}
    summary, results = run(
        sorted(str(p) for p in tmp_path.glob("*.json")),
        jobs=2,
        retry=RetrySettings(retries=2, base_seconds=0.0),
    )
    assert (summary.pushed, summary.failed) == (1, 2)
    by_name = {Path(r.source).stem: r for r in results}
    assert by_name["r0000"].attempts == 1 and "HTTP 422" in (by_name["r0000"].error or "")
    assert by_name["r0001"].attempts == 3  # first try + 2 retries
    assert server.received["bulk-0001"] == 3
    assert summary.failed_inputs == sorted(summary.failed_inputs)  # the two failed files


# -- resume -------------------------------------------------------------------------------


def test_interrupted_run_resumes_without_resending(tmp_path: Path, server: FakeServer) -> None:
    write_records(tmp_path, 30, ndjson="cases.ndjson")
    paths = [str(tmp_path / "cases.ndjson")]
    state = tmp_path / "push.state"

    seen: list[RecordResult] = []

    def ctrl_c_after_ten(result: RecordResult) -> None:
        seen.append(result)
        if len(seen) == 10:
            raise KeyboardInterrupt  # what Ctrl-C does to the main thread

    journal = PushJournal(state)
    with FhirClient(BASE, retry=NO_CLIENT_RETRY) as client:
        summary = bulk_push(
            iter_push_inputs(paths),
            client=client,
            server=BASE,
            options=OPTIONS,
            jobs=3,
            journal=journal,
            retry=INSTANT,
            on_result=ctrl_c_after_ten,
        )
    journal.close()
    assert summary.interrupted and not summary.ok
    first_run = sum(server.received.values())
    assert 10 <= first_run < 30
    journaled = len(PushJournal(state))
    assert journaled >= 10  # every answer that came back is journaled, in flight ones too

    journal = PushJournal(state)
    summary, _ = run(paths, jobs=3, journal=journal)
    journal.close()
    assert summary.ok and summary.skipped == journaled and summary.pushed == 30 - journaled
    assert set(server.received.values()) == {1}  # nothing sent twice
    assert len(server.received) == 30


def test_changed_record_or_other_server_is_pushed_again(tmp_path: Path) -> None:
    journal = PushJournal(tmp_path / "state")
    data = (CASES / "lhes-01.json").read_bytes()
    digest = record_digest(data, server=BASE, options=OPTIONS)
    journal.record(digest, RecordResult("lhes-01.json", "pushed"))
    journal.close()
    reopened = PushJournal(tmp_path / "state")
    assert reopened.done(record_digest(data, server=BASE + "/", options=OPTIONS))
    assert not reopened.done(record_digest(data + b" ", server=BASE, options=OPTIONS))
    assert not reopened.done(record_digest(data, server="http://other/fhir", options=OPTIONS))
    r5 = ConversionOptions(fhir_version="R5")
    assert not reopened.done(record_digest(data, server=BASE, options=r5))
    reopened.close()


def test_torn_journal_line_is_ignored(tmp_path: Path) -> None:
    state = tmp_path / "state"
    journal = PushJournal(state)
    journal.record("a" * 64, RecordResult("x", "pushed"))
    journal.close()
    with state.open("a") as handle:
        handle.write('{"digest": "bbbb')  # the process died mid-line
    reopened = PushJournal(state)
    assert reopened.done("a" * 64) and not reopened.done("bbbb") and reopened.ignored_lines == 1
    reopened.close()


# -- the command ---------------------------------------------------------------------------


def test_cli_summary_exit_code_and_resume(
    tmp_path: Path, server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    write_records(folder, 5)
    shutil.copy(INVALID / "05-enum-violation.json", folder / "zz-invalid.json")
    state = tmp_path / "push.state"
    argv = ["push", str(folder), "--server", BASE, "--jobs", "3", "-q", "--summary", "json"]
    assert main([*argv, "--state", str(state)]) == 1  # one invalid record
    captured = capsys.readouterr()
    assert "zz-invalid.json: $.patient.sex" in captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert (summary["pushed"], summary["invalid"], summary["failed"]) == (5, 1, 0)
    assert summary["failed_inputs"] == [str(folder / "zz-invalid.json")]
    assert summary["resources"] > 0 and summary["records_per_s"] > 0
    assert sum(1 for line in captured.out.splitlines() if "resources," in line) == 5

    (folder / "zz-invalid.json").unlink()
    assert main([*argv, "--state", str(state)]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert (summary["pushed"], summary["skipped"]) == (0, 5)
    assert captured.out.count("skipped, already pushed") == 5
    assert set(server.received.values()) == {1}


def test_cli_text_summary_and_usage_errors(
    tmp_path: Path, server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    write_records(tmp_path, 2, ndjson="two.ndjson")
    assert main(["push", str(tmp_path / "two.ndjson"), "--server", BASE, "-q"]) == 0
    captured = capsys.readouterr()
    assert "pushed 2, skipped 0 (already pushed), invalid 0, failed 0" in captured.err
    assert main(["push", str(tmp_path), "--server", BASE, "--jobs", "0"]) == 2
    assert main(["push", str(tmp_path / "empty-*.json"), "--server", BASE]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_a_file_that_is_not_a_journal_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "record.json"
    shutil.copy(CASES / "lhes-01.json", record)
    before = record.read_bytes()
    argv = ["push", str(CASES / "lhes-01.json"), "--server", BASE, "--state", str(record)]
    assert main(argv) == 2
    assert "not a push journal" in capsys.readouterr().err
    assert record.read_bytes() == before  # nothing appended to someone else's file
    # A journal that cannot be created (its folder would be inside a file): a usage error.
    assert main([*argv[:-1], str(record / "journal")]) == 2
    assert "--state:" in capsys.readouterr().err
