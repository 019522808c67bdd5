"""The outbox contract, run against SQLite and (when ``FHIR_TEST_POSTGRES_URL`` is set) Postgres.

The Postgres run needs a reachable server and psycopg (``pip install -e '.[postgres]'``);
scripts/test.sh starts a throwaway cluster (tests/postgres/pg.sh) and CI requires it (see
``tests.conftest.needs_postgres``). Each Postgres test drops the table first, so point the
variable at a scratch database.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapter.gateway.outbox import (
    TABLE,
    Lease,
    NewSubmission,
    Outbox,
    PostgresOutbox,
    SqliteOutbox,
    State,
    open_outbox,
)
from tests.conftest import needs_postgres, postgres_url


def _postgres() -> Outbox:
    url = postgres_url()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    return open_outbox(url)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres",
            marks=needs_postgres,
        ),
    ]
)
def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outbox]:
    store = (
        open_outbox(str(tmp_path / "outbox.sqlite3")) if request.param == "sqlite" else _postgres()
    )
    yield store
    store.close()


def new(
    submission_id: str | None = None, replay_safe: bool = True, record_key: str | None = None
) -> NewSubmission:
    return NewSubmission(
        id=submission_id or str(uuid.uuid4()),
        kind="case-record",
        bundle_type="transaction",
        principal="api-key:abc",
        payload=b'{"resourceType":"Bundle"}',
        replay_safe=replay_safe,
        warnings=("a warning",),
        record_key=record_key,
    )


def claim(outbox: Outbox, now: float = 1000.0, limit: int = 10, token: str = "t1") -> list[str]:
    rows = outbox.claim(limit=limit, owner="gw", token=token, until=now + 60, now=now)
    return [row.id for row in rows]


def test_add_and_get(outbox: Outbox) -> None:
    outbox.add(new("s1"), now=1000.0, lease=None)
    row = outbox.get("s1")
    assert row is not None
    assert row.state is State.QUEUED and row.attempts == 0
    assert row.payload == b'{"resourceType":"Bundle"}' and row.replay_safe
    assert row.warnings == ("a warning",) and row.principal == "api-key:abc"
    assert outbox.get("missing") is None


def test_add_with_lease_is_delivering(outbox: Outbox) -> None:
    outbox.add(new("s1"), now=1000.0, lease=Lease("tok", "gw", 1060.0))
    row = outbox.get("s1")
    assert row is not None and row.state is State.DELIVERING and row.attempts == 1
    assert claim(outbox) == []  # leased rows are not claimable


def test_row_queued_while_the_breaker_is_open_waits_until_it_closes(outbox: Outbox) -> None:
    outbox.add(new("s1"), now=1000.0, lease=None, due=1005.0)
    assert claim(outbox, now=1004.9) == []
    assert claim(outbox, now=1005.0) == ["s1"]


def test_claim_leases_due_rows_once(outbox: Outbox) -> None:
    outbox.add(new("s1"), now=1000.0, lease=None)
    outbox.add(new("s2"), now=1001.0, lease=None)
    assert claim(outbox, now=999.0) == []  # not due yet
    assert sorted(claim(outbox, now=1002.0)) == ["s1", "s2"]
    assert claim(outbox, now=1002.0, token="t2") == []
    row = outbox.get("s1")
    assert row is not None and row.state is State.DELIVERING and row.attempts == 1
    assert row.lease_token == "t1" and row.lease_owner == "gw"


def test_claim_respects_limit_and_order(outbox: Outbox) -> None:
    for index in range(5):
        outbox.add(new(f"s{index}"), now=1000.0 + index, lease=None)
    assert claim(outbox, now=2000.0, limit=2) == ["s0", "s1"]


def test_finish_delivered_drops_payload(outbox: Outbox) -> None:
    outbox.add(new("s1"), now=1000.0, lease=None)
    claim(outbox)
    stored = outbox.finish(
        "s1",
        "t1",
        state=State.DELIVERED,
        now=1001.0,
        upstream_status=200,
        response=b'{"resourceType":"Bundle"}',
        error=None,
    )
    assert stored
    row = outbox.get("s1")
    assert row is not None and row.state is State.DELIVERED
    assert row.payload is None and row.response == b'{"resourceType":"Bundle"}'
    assert row.lease_token is None


def test_finish_failed_keeps_payload(outbox: Outbox) -> None:
    outbox.add(new("s1"), now=1000.0, lease=Lease("tok", "gw", 1060.0))
    assert outbox.finish(
        "s1",
        "tok",
        state=State.FAILED,
        now=1001.0,
        upstream_status=422,
        response=b"{}",
        error="upstream answered HTTP 422",
    )
    row = outbox.get("s1")
    assert row is not None and row.state is State.FAILED and row.payload is not None
    assert row.upstream_status == 422 and row.error == "upstream answered HTTP 422"


def test_finish_requeue_schedules_next_attempt(outbox: Outbox) -> None:
    outbox.add(new("s1"), now=1000.0, lease=None)
    claim(outbox)
    outbox.finish(
        "s1",
        "t1",
        state=State.QUEUED,
        now=1001.0,
        upstream_status=503,
        response=None,
        error="HTTP 503",
        next_attempt_at=1010.0,
    )
    assert outbox.next_due() == 1010.0
    assert claim(outbox, now=1005.0, token="t2") == []
    assert claim(outbox, now=1010.0, token="t3") == ["s1"]
    row = outbox.get("s1")
    assert row is not None and row.attempts == 2


def test_lost_lease_cannot_overwrite(outbox: Outbox) -> None:
    outbox.add(new("s1"), now=1000.0, lease=None)
    claim(outbox)
    assert not outbox.finish(
        "s1",
        "wrong-token",
        state=State.DELIVERED,
        now=1001.0,
        upstream_status=200,
        response=None,
        error=None,
    )
    row = outbox.get("s1")
    assert row is not None and row.state is State.DELIVERING


def test_requeue_expired(outbox: Outbox) -> None:
    outbox.add(new("safe"), now=1000.0, lease=Lease("a", "gw", 1060.0))
    outbox.add(new("unsafe", replay_safe=False), now=1000.0, lease=Lease("b", "gw", 1060.0))
    outbox.add(new("fresh"), now=1000.0, lease=Lease("c", "gw", 5000.0))
    assert outbox.requeue_expired(1059.0) == 0
    assert outbox.requeue_expired(1061.0) == 2
    safe, unsafe, fresh = (outbox.get(i) for i in ("safe", "unsafe", "fresh"))
    assert safe is not None and safe.state is State.QUEUED
    assert unsafe is not None and unsafe.state is State.FAILED
    assert unsafe.error is not None and "not safe to send twice" in unsafe.error
    assert fresh is not None and fresh.state is State.DELIVERING


def test_counts_and_ping(outbox: Outbox) -> None:
    outbox.ping()
    outbox.add(new(), now=1000.0, lease=None)
    outbox.add(new(), now=1000.0, lease=Lease("x", "gw", 2000.0))
    counts = outbox.counts()
    assert counts == {
        "queued": 1,
        "delivering": 1,
        "delivered": 0,
        "failed": 0,
        "superseded": 0,
    }
    assert outbox.next_due() == 1000.0


def test_concurrent_claims_are_disjoint(outbox: Outbox) -> None:
    for index in range(40):
        outbox.add(new(f"s{index:02d}"), now=1000.0, lease=None)
    results: list[list[str]] = []
    lock = threading.Lock()

    def worker(token: str) -> None:
        mine: list[str] = []
        while batch := claim(outbox, now=2000.0, limit=3, token=token):
            mine.extend(batch)
        with lock:
            results.append(mine)

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [sid for mine in results for sid in mine]
    assert sorted(claimed) == [f"s{index:02d}" for index in range(40)]


def test_sqlite_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "outbox.sqlite3"
    first = SqliteOutbox(path)
    first.add(new("s1"), now=1000.0, lease=None)
    first.close()
    second = SqliteOutbox(path)
    row = second.get("s1")
    second.close()
    assert row is not None and row.state is State.QUEUED


def test_open_outbox_picks_the_backend(tmp_path: Path) -> None:
    store = open_outbox(str(tmp_path / "x.sqlite3"))
    assert isinstance(store, SqliteOutbox)
    store.close()


@needs_postgres
def test_gateway_on_postgres_queues_and_delivers(tmp_path: Path) -> None:
    """The whole app on Postgres: 202 while the upstream is down, delivered after."""
    from tests.unit.test_gateway_helpers import (
        HEADERS,
        fake_upstream,
        make_settings,
        record_bytes,
        running,
        wait_for_status,
    )

    _postgres().close()  # fresh table
    with fake_upstream() as upstream, running(make_settings(tmp_path, db=postgres_url())) as client:
        upstream.mode = "down"
        response = client.post("/case-records", content=record_bytes(), headers=HEADERS)
        assert response.status_code == 202
        upstream.mode = "ok"
        wait_for_status(client, response.headers["location"], "delivered")
        assert client.get("/readyz").status_code == 200


# -- one record, several versions: delivered one at a time, in order, never older after newer


RECORD = "https://ns.example.org/fhir/identifier/case-record|case-1"


def finish(outbox: Outbox, submission_id: str, token: str, state: State, now: float) -> None:
    assert outbox.finish(
        submission_id,
        token,
        state=state,
        now=now,
        upstream_status=200 if state is State.DELIVERED else 503,
        response=None,
        error=None if state is State.DELIVERED else "HTTP 503",
        next_attempt_at=now if state is State.QUEUED else None,
    )


def test_a_version_waits_while_the_previous_one_is_being_delivered(outbox: Outbox) -> None:
    outbox.add(new("v1", record_key=RECORD), now=1000.0, lease=Lease("a", "gw", 1060.0))
    row = outbox.add(new("v2", record_key=RECORD), now=1001.0, lease=Lease("b", "gw", 1061.0))
    assert row.state is State.QUEUED and row.lease_token is None and row.attempts == 0
    assert claim(outbox, now=1002.0) == []  # v1 is still being delivered
    assert outbox.next_due() is None  # and the worker does not spin on the blocked row
    finish(outbox, "v1", "a", State.DELIVERED, 1003.0)
    assert outbox.next_due() == 1001.0
    assert claim(outbox, now=1004.0) == ["v2"]


def test_waiting_tells_whether_a_version_of_the_record_is_queued(outbox: Outbox) -> None:
    outbox.add(new("v1", record_key=RECORD), now=1000.0, lease=Lease("a", "gw", 1060.0))
    assert not outbox.waiting(RECORD)  # the one being delivered does not count
    outbox.add(new("v2", record_key=RECORD), now=1001.0, lease=Lease("b", "gw", 1061.0))
    assert outbox.waiting(RECORD) and not outbox.waiting(RECORD + "-2")
    finish(outbox, "v1", "a", State.DELIVERED, 1003.0)
    assert claim(outbox, now=1004.0) == ["v2"]
    assert not outbox.waiting(RECORD)


def test_a_newer_version_supersedes_a_waiting_one(outbox: Outbox) -> None:
    outbox.add(new("v1", record_key=RECORD), now=1000.0, lease=None, due=1100.0)
    outbox.add(new("other", record_key=RECORD + "-2"), now=1000.5, lease=None)
    outbox.add(new("v2", record_key=RECORD), now=1001.0, lease=None)
    v1 = outbox.get("v1")
    assert v1 is not None and v1.state is State.SUPERSEDED and v1.payload is None
    assert v1.error is not None and "superseded by submission v2" in v1.error
    assert sorted(claim(outbox, now=2000.0)) == ["other", "v2"]  # other records unaffected
    assert outbox.counts()["superseded"] == 1


def test_an_older_version_retried_after_a_newer_arrived_is_never_sent(outbox: Outbox) -> None:
    outbox.add(new("v1", record_key=RECORD), now=1000.0, lease=Lease("a", "gw", 1060.0))
    outbox.add(new("v2", record_key=RECORD), now=1001.0, lease=Lease("b", "gw", 1061.0))
    finish(outbox, "v1", "a", State.QUEUED, 1002.0)  # v1's attempt failed: back to the queue
    assert claim(outbox, now=1003.0) == ["v2"]
    v1 = outbox.get("v1")
    assert v1 is not None and v1.state is State.SUPERSEDED
    finish(outbox, "v2", "t1", State.DELIVERED, 1004.0)
    assert claim(outbox, now=1005.0, token="t2") == []


def test_an_expired_lease_does_not_let_an_older_version_overtake(outbox: Outbox) -> None:
    outbox.add(new("v1", record_key=RECORD), now=1000.0, lease=Lease("a", "gw", 1060.0))
    outbox.add(new("v2", record_key=RECORD), now=1001.0, lease=None)
    assert outbox.requeue_expired(1061.0) == 1  # the gateway delivering v1 died
    assert claim(outbox, now=1062.0) == ["v2"]
    v1 = outbox.get("v1")
    assert v1 is not None and v1.state is State.SUPERSEDED


def test_versions_accepted_in_the_same_instant_are_ordered_by_id(outbox: Outbox) -> None:
    outbox.add(new("b", record_key=RECORD), now=1000.0, lease=None)
    outbox.add(new("a", record_key=RECORD), now=1000.0, lease=None)
    assert claim(outbox, now=1001.0) == ["b"]
    a = outbox.get("a")
    assert a is not None and a.state is State.SUPERSEDED


def test_rows_without_a_record_key_are_never_held_back(outbox: Outbox) -> None:
    outbox.add(new("x1"), now=1000.0, lease=Lease("a", "gw", 1060.0))
    row = outbox.add(new("x2"), now=1001.0, lease=Lease("b", "gw", 1061.0))
    assert row.state is State.DELIVERING
    outbox.add(new("x3"), now=1002.0, lease=None)
    outbox.add(new("x4"), now=1003.0, lease=None)
    assert sorted(claim(outbox, now=1004.0)) == ["x3", "x4"]


@needs_postgres
def test_gateways_starting_together_on_a_fresh_database_all_open_it() -> None:
    """Several gateways started at once on a new database each create the schema if needed;
    without the schema lock one of them failed on a catalogue unique index and exited."""
    from urllib.parse import urlsplit

    import psycopg

    admin = postgres_url()
    name = f"outbox_race_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlsplit(admin)._replace(path=f"/{name}").geturl()
    opened: list[PostgresOutbox] = []
    failures: list[BaseException] = []
    start = threading.Barrier(6)

    def open_one() -> None:
        start.wait()
        try:
            opened.append(PostgresOutbox(url))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert failures == []
        assert len(opened) == 6
        assert all(outbox.counts()["queued"] == 0 for outbox in opened)
    finally:
        for outbox in opened:
            outbox.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_superseded_rows_are_finished_and_purged(outbox: Outbox) -> None:
    """A superseded version is never sent: retention and ``fhir-adapter purge`` remove it."""
    outbox.add(new("v1", record_key=RECORD), now=1000.0, lease=None, due=1100.0)
    outbox.add(new("v2", record_key=RECORD), now=1001.0, lease=None)
    assert outbox.purge(finished_before=5000.0, states=[State.DELIVERED, State.FAILED]) == 0
    assert outbox.purge(finished_before=5000.0, states=[State.SUPERSEDED]) == 1
    assert outbox.get("v1") is None
    assert outbox.get("v2") is not None  # queued rows are never purged
    assert outbox.purge(finished_before=5000.0, states=list(State)) == 0


def test_an_attempt_that_fails_after_a_newer_version_arrived_ends_superseded(
    outbox: Outbox,
) -> None:
    outbox.add(new("v1", record_key=RECORD), now=1000.0, lease=Lease("a", "gw", 1060.0))
    outbox.add(new("v2", record_key=RECORD), now=1001.0, lease=None)  # v1 still in flight
    ended = outbox.finish(  # v1's attempt failed
        "v1",
        "a",
        state=State.QUEUED,
        now=1002.0,
        upstream_status=503,
        response=None,
        error="HTTP 503",
        next_attempt_at=1002.0,
    )
    assert ended is not None and ended.state is State.SUPERSEDED
    v1 = outbox.get("v1")
    assert v1 is not None and v1.state is State.SUPERSEDED and v1.payload is None
