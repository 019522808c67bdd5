"""Operations: rate limits, security headers, capped errors, timeouts, disconnects, storage
failures, readiness caching, file modes, retention and purge, startup refusals."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from adapter.cli import main as cli_main
from adapter.gateway.dependencies import read_body
from adapter.gateway.outbox import NewSubmission, SqliteOutbox, State
from adapter.gateway.outcomes import ClientGone, GatewayError
from adapter.gateway.rate_limit import TokenBuckets
from adapter.gateway.server import serve
from tests.conftest import load_case
from tests.unit.test_gateway_helpers import (
    ADMIN_AUTH,
    API_KEY,
    AUTH,
    HEADERS,
    FakeUpstream,
    admin_clients,
    fake_upstream,
    make_settings,
    record_bytes,
    running,
)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as fake:
        yield fake


# -- rate limits --------------------------------------------------------------------------------


def test_token_bucket_refills_and_tells_the_wait() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3.0)
    assert [buckets.take("k", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k", now=0.0) == pytest.approx(0.5)
    assert buckets.take("other", now=0.0) == 0.0  # buckets are per key
    assert buckets.take("k", now=0.5) == 0.0  # one token back after 1/rate seconds
    assert TokenBuckets(rate=0.0, burst=0.0).take("k") == 0.0  # 0 = off


def test_token_buckets_are_bounded() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1.0, max_keys=10)
    for index in range(100):
        buckets.take(f"address-{index}", now=0.0)
    assert len(buckets._buckets) == 10


def test_per_credential_limit_is_429_with_retry_after(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with running(make_settings(tmp_path, credential_rate=1.0)) as client:
        statuses = [client.get("/metadata", headers=AUTH).status_code for _ in range(4)]
        limited = client.get("/metadata", headers=AUTH)
        assert client.get("/healthz").status_code == 200  # probes are never limited
    assert statuses[:2] == [200, 200]  # the burst: two seconds' worth
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["issue"][0]["code"] == "throttled"


def test_failed_authentications_block_the_address(tmp_path: Path, upstream: FakeUpstream) -> None:
    with running(make_settings(tmp_path, auth_failures_per_minute=3.0)) as client:
        guesses = [
            client.get("/metadata", headers={"Authorization": f"Bearer guess-{n}"}).status_code
            for n in range(10)
        ]
        # Blocked before the credential is looked at: a right key learns nothing either.
        right_key = client.get("/metadata", headers=AUTH)
    assert guesses[:6] == [401] * 6  # the burst: two minutes' worth
    assert set(guesses[6:]) == {429}
    assert right_key.status_code == 429
    assert int(right_key.headers["retry-after"]) >= 1


def test_per_address_limit(tmp_path: Path, upstream: FakeUpstream) -> None:
    with running(make_settings(tmp_path, address_rate=2.0, credential_rate=0.0)) as client:
        statuses = [client.get("/metadata", headers=AUTH).status_code for _ in range(6)]
        probes = {client.get("/healthz").status_code for _ in range(10)}
    assert statuses[:4] == [200] * 4 and 429 in statuses[4:]
    assert probes == {200}


# -- headers and capped errors --------------------------------------------------------------------


def test_security_headers_on_every_response(tmp_path: Path, upstream: FakeUpstream) -> None:
    with running(make_settings(tmp_path)) as client:
        responses = [
            client.post("/case-records/$convert", content=record_bytes(), headers=HEADERS),
            client.post("/case-records", content=record_bytes(), headers=HEADERS),
            client.get("/metadata"),  # 401
            client.get("/nope", headers=AUTH),  # 404
            client.get("/healthz"),
        ]
    for response in responses:
        assert response.headers["cache-control"] == "no-store", response.url
        assert response.headers["x-content-type-options"] == "nosniff", response.url


def test_error_lists_are_capped_with_a_count(tmp_path: Path, upstream: FakeUpstream) -> None:
    record = load_case("caruso2022-02")
    bad = {"kind": "wbc", "value": "x", "date": "2020-13", "context": "nope", "text": 1}
    record["observations"] = [dict(bad) for _ in range(300)]
    with running(make_settings(tmp_path)) as client:
        response = client.post("/case-records", content=json.dumps(record), headers=HEADERS)
    assert response.status_code == 422
    issues = response.json()["issue"]
    assert len(issues) == 101
    assert issues[0]["expression"][0].startswith("$.observations[")
    last = issues[-1]
    assert last["severity"] == "information"
    left_out = int(last["diagnostics"].split()[0])
    assert last["diagnostics"] == f"{left_out} more problems not shown"
    assert left_out >= 300 * 4 - 100  # every bad field of every observation was counted


def test_converted_records_are_bounded_like_bundles(tmp_path: Path, upstream: FakeUpstream) -> None:
    with running(make_settings(tmp_path, max_bundle_entries=5)) as client:
        response = client.post("/case-records/$convert", content=record_bytes(), headers=HEADERS)
    assert response.status_code == 413
    assert "FHIR_ADAPTER_MAX_BUNDLE_ENTRIES" in response.json()["issue"][0]["diagnostics"]


# -- reading the body: timeouts and disconnects ----------------------------------------------------


def _request(receive: Any) -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/case-records",
        "headers": [(b"content-type", b"application/fhir+json")],
        "query_string": b"",
    }
    return Request(scope, receive)


def test_slow_body_is_408() -> None:
    async def trickle() -> dict[str, Any]:
        await asyncio.sleep(0.05)
        return {"type": "http.request", "body": b"x", "more_body": True}

    with pytest.raises(GatewayError) as caught:
        asyncio.run(read_body(_request(trickle), 1024 * 1024, timeout=0.3))
    assert caught.value.status_code == 408
    assert caught.value.headers == {"Connection": "close"}


def test_disconnect_while_reading_is_not_an_error() -> None:
    async def gone() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    with pytest.raises(ClientGone):
        asyncio.run(read_body(_request(gone), 1024, timeout=1.0))


def test_disconnect_is_logged_as_499_not_as_an_error(
    tmp_path: Path, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/case-records",
        "raw_path": b"/case-records",
        "query_string": b"",
        "root_path": "",
        "client": ("192.0.2.7", 50000),
        "server": ("testserver", 80),
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {API_KEY}".encode()),
            (b"content-type", b"application/fhir+json"),
            (b"content-length", b"100"),
        ],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with running(make_settings(tmp_path)) as client, caplog.at_level(logging.INFO):
        client.portal.call(client.app, scope, receive, send)  # type: ignore[union-attr]
    assert sent == []  # nobody to answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    [line] = [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "adapter.gateway.audit"
    ]
    assert line["status"] == 499 and line["address"] == "192.0.2.7"
    assert line["principal"].startswith("api-key:") and line["client"] == "default"


# -- storage failures and readiness ---------------------------------------------------------------


def test_full_database_is_503_and_not_ready(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = make_settings(
        tmp_path, clients_file=admin_clients(tmp_path), ready_cache_seconds=0.0
    )
    with running(settings) as client:
        gateway = client.app.state.gateway  # type: ignore[attr-defined]
        connection = gateway.outbox._conn
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        # SQLite's own "database or disk is full" (SQLITE_FULL), as on a full disk.
        connection.execute(f"PRAGMA max_page_count = {pages}")
        big = load_case("caruso2022-01")
        big["record_id"] = "full-disk-1"
        refused = client.post("/case-records", content=json.dumps(big), headers=HEADERS)
        ready = client.get("/readyz", headers=ADMIN_AUTH)
        connection.execute("PRAGMA max_page_count = 1073741823")
        accepted = client.post("/case-records", content=json.dumps(big), headers=HEADERS)
        ready_again = client.get("/readyz", headers=ADMIN_AUTH)
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "30"
    assert "nothing was accepted" in refused.json()["issue"][0]["diagnostics"]
    assert ready.status_code == 503
    assert any("last write to the queue failed" in i["diagnostics"] for i in ready.json()["issue"])
    assert accepted.status_code == 201
    assert ready_again.status_code == 200


def test_low_disk_space_is_not_ready(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = make_settings(tmp_path, clients_file=admin_clients(tmp_path), min_free_bytes=1 << 62)
    with running(settings) as client:
        response = client.get("/readyz", headers=ADMIN_AUTH)
    assert response.status_code == 503
    assert "MIN_FREE_BYTES" in response.json()["issue"][0]["diagnostics"]


def test_readiness_is_cached(tmp_path: Path, upstream: FakeUpstream) -> None:
    with running(make_settings(tmp_path, ready_cache_seconds=60.0)) as client:
        statuses = {client.get("/readyz").status_code for _ in range(20)}
    assert statuses == {200}
    assert upstream.metadata_route.call_count == 1


def test_no_credentials_is_not_ready(tmp_path: Path, upstream: FakeUpstream) -> None:
    with running(make_settings(tmp_path, api_keys=())) as client:
        assert client.get("/readyz").status_code == 503


# -- the outbox on disk ----------------------------------------------------------------------------


def test_outbox_files_are_private(tmp_path: Path, upstream: FakeUpstream) -> None:
    db = tmp_path / "spool" / "outbox.sqlite3"
    with running(make_settings(tmp_path, db=str(db))) as client:
        assert client.post("/case-records", content=record_bytes(), headers=HEADERS).is_success
        modes = {
            p.name: stat.S_IMODE(p.stat().st_mode)
            for p in db.parent.iterdir()
            if p.name.startswith("outbox.sqlite3")
        }
    assert set(modes) >= {"outbox.sqlite3", "outbox.sqlite3-wal"}
    assert set(modes.values()) == {0o600}, modes
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


def test_existing_outbox_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    SqliteOutbox(db).close()
    db.chmod(0o644)
    SqliteOutbox(db).close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def _finished_rows(db: Path, now: float) -> None:
    outbox = SqliteOutbox(db)
    for name, state, age_days in (
        ("old-failed", State.FAILED, 40),
        ("old-delivered", State.DELIVERED, 40),
        ("new-failed", State.FAILED, 1),
        ("old-queued", State.QUEUED, 40),
    ):
        then = now - age_days * 86400
        outbox.add(
            NewSubmission(name, "bundle", "transaction", "p", b"{}", True, client="default"),
            now=then,
            lease=None,
        )
        if state is not State.QUEUED:
            outbox._run(
                "UPDATE gateway_submissions SET state = ?, updated_at = ? WHERE id = ?",
                (state.value, then, name),
            )
    outbox.close()


def test_purge_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "outbox.sqlite3"
    _finished_rows(db, time.time())
    assert cli_main(["purge", "--db", str(db), "--older-than-days", "30", "--state", "failed"]) == 0
    assert capsys.readouterr().out.strip() == "deleted 1 failed submission"
    assert cli_main(["purge", "--db", str(db), "--older-than-days", "0"]) == 0
    assert capsys.readouterr().out.strip() == "deleted 2 finished submissions"
    outbox = SqliteOutbox(db)
    remaining = {row[0] for row in outbox._run("SELECT id FROM gateway_submissions")}
    outbox.close()
    assert remaining == {"old-queued"}  # never data not yet delivered


def test_gateway_applies_the_retention(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = make_settings(tmp_path, retention_days=30.0)
    _finished_rows(Path(settings.db), time.time())
    with running(settings) as client:
        deadline = time.monotonic() + 10
        while client.get("/submissions/old-failed", headers=AUTH).status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.get("/submissions/new-failed", headers=AUTH).status_code == 200
        assert client.get("/submissions/old-queued", headers=AUTH).status_code == 200


# -- startup refusals (exit 2, one line naming the variable) ---------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("FHIR_ADAPTER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FHIR_ADAPTER_DB", str(tmp_path / "outbox.sqlite3"))
    return monkeypatch


def _refusal(capsys: pytest.CaptureFixture[str]) -> str:
    [line] = capsys.readouterr().err.strip().splitlines()
    return line


def test_startup_refuses_missing_credentials(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert serve("127.0.0.1", 0) == 2
    line = _refusal(capsys)
    assert "FHIR_ADAPTER_CLIENTS" in line and "FHIR_ADAPTER_API_KEYS" in line
    assert "FHIR_ADAPTER_DEVELOPMENT" in line


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("FHIR_ADAPTER_API_KEYS", "x", "FHIR_ADAPTER_API_KEYS"),  # a 1-character key
        ("FHIR_ADAPTER_CLIENTS", "/nonexistent/clients.json", "FHIR_ADAPTER_CLIENTS"),
    ],
)
def test_startup_refuses_weak_or_missing_credentials(
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    named: str,
) -> None:
    clean_env.setenv(variable, value)
    assert serve("127.0.0.1", 0) == 2
    assert named in _refusal(capsys)


def test_startup_refuses_an_unusable_database(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    clean_env.setenv("FHIR_ADAPTER_API_KEYS", API_KEY)
    clean_env.setenv("FHIR_ADAPTER_DB", str(blocker / "outbox.sqlite3"))
    assert serve("127.0.0.1", 0) == 2
    line = _refusal(capsys)
    assert line.startswith("fhir-adapter serve: configuration error: FHIR_ADAPTER_DB: cannot")
    assert "Traceback" not in line


def test_startup_refuses_a_bad_certificate(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    clean_env.setenv("FHIR_ADAPTER_API_KEYS", API_KEY)
    bogus = tmp_path / "cert.pem"
    bogus.write_text("not a certificate")
    assert cli_main(["serve", "--ssl-certfile", str(bogus), "--ssl-keyfile", str(bogus)]) == 2
    assert "--ssl-certfile" in _refusal(capsys)
    assert cli_main(["serve", "--ssl-certfile", str(bogus)]) == 2  # one without the other
