"""The durable outbox: every accepted submission is written here before the EHR hears back.

A hospital EHR treats a 201 or 202 as "you have it now" and will not send again, so the
bundle must be on disk before either is sent; delivery to the upstream server happens from
here, synchronously on the request when the upstream answers quickly, otherwise from the
background worker. Rows move ``queued → delivering → delivered | failed``; ``delivering``
carries a lease (token and expiry) so that a crashed gateway's half-finished deliveries go
back to ``queued`` once the lease runs out, and a late answer from a lost lease cannot
overwrite the row's newer state.

Case records are full snapshots of one record, so their rows carry a ``record_key`` and are
delivered one at a time per record, in the order they were accepted (``created_at``): a row
is not claimed while another row of its record is being delivered, and a queued row becomes
``superseded`` (never sent) once a newer row of the same record is queued, being delivered
or delivered. An older version therefore never reaches the upstream after a newer one.

Two implementations of one interface: SQLite (default, one file, WAL and ``synchronous=FULL``
so a commit survives power loss) for a single gateway, and Postgres (``postgresql://...``,
claims with ``FOR UPDATE SKIP LOCKED``) for several gateways behind one load balancer. They
share all SQL except the schema and the claim query.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import orjson

__all__ = [
    "Lease",
    "NewSubmission",
    "Outbox",
    "PostgresOutbox",
    "SqliteOutbox",
    "State",
    "Submission",
    "open_outbox",
]

TABLE = "gateway_submissions"
PROBE_TABLE = "gateway_write_probe"
FILE_MODE = 0o600
"""The SQLite outbox holds patient data (queued and failed Bundles): owner only."""


class State(StrEnum):
    """Lifecycle of a submission."""

    QUEUED = "queued"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    """A case record's row that a newer version of the same record replaced before it was
    sent; it is never delivered (terminal, like delivered and failed)."""


@dataclass(frozen=True)
class NewSubmission:
    """What a request hands to the outbox: the bundle to deliver and who sent it."""

    id: str
    kind: str
    """``case-record`` or ``bundle``."""
    bundle_type: str
    """``transaction`` or ``batch``: which FHIR interaction delivers it."""
    principal: str
    payload: bytes
    replay_safe: bool
    """Whether sending it twice changes nothing on the server (conditional creates, PUTs)."""
    warnings: tuple[str, ...] = ()
    client: str | None = None
    """Id of the client that pushed it: only that client (or an admin) may read it back."""
    record_key: str | None = None
    """For case records: which record (``system|record_id``); rows with the same key are
    delivered one at a time, in order, and only the newest waiting one is sent."""


@dataclass(frozen=True)
class Lease:
    """Exclusive right to deliver one row until ``until``; ``token`` proves ownership."""

    token: str
    owner: str
    until: float


@dataclass(frozen=True)
class Submission:
    """One row of the outbox."""

    id: str
    kind: str
    bundle_type: str
    principal: str
    state: State
    payload: bytes | None
    replay_safe: bool
    attempts: int
    created_at: float
    updated_at: float
    next_attempt_at: float
    lease_token: str | None
    lease_owner: str | None
    lease_until: float | None
    upstream_status: int | None
    response: bytes | None
    error: str | None
    warnings: tuple[str, ...]
    client: str | None = None
    record_key: str | None = None


_COLUMNS = (
    "id",
    "kind",
    "bundle_type",
    "principal",
    "state",
    "payload",
    "replay_safe",
    "attempts",
    "created_at",
    "updated_at",
    "next_attempt_at",
    "lease_token",
    "lease_owner",
    "lease_until",
    "upstream_status",
    "response",
    "error",
    "warnings",
    "client",
    "record_key",
)
_SELECT = ", ".join(_COLUMNS)


def _row(row: Sequence[Any]) -> Submission:
    values = dict(zip(_COLUMNS, row, strict=True))
    warnings = values["warnings"]
    return Submission(
        id=str(values["id"]),
        kind=str(values["kind"]),
        bundle_type=str(values["bundle_type"]),
        principal=str(values["principal"]),
        state=State(values["state"]),
        payload=None if values["payload"] is None else bytes(values["payload"]),
        replay_safe=bool(values["replay_safe"]),
        attempts=int(values["attempts"]),
        created_at=float(values["created_at"]),
        updated_at=float(values["updated_at"]),
        next_attempt_at=float(values["next_attempt_at"]),
        lease_token=values["lease_token"],
        lease_owner=values["lease_owner"],
        lease_until=None if values["lease_until"] is None else float(values["lease_until"]),
        upstream_status=values["upstream_status"],
        response=None if values["response"] is None else bytes(values["response"]),
        error=values["error"],
        warnings=tuple(orjson.loads(warnings)) if warnings else (),
        client=values["client"],
        record_key=values["record_key"],
    )


class Outbox(Protocol):
    """What the gateway needs from a store; blocking calls, run off the event loop."""

    def add(
        self, new: NewSubmission, *, now: float, lease: Lease | None, due: float | None = None
    ) -> Submission:
        """Persist a submission: leased (being delivered right now) or queued for the worker,
        first due at ``due`` (default: now). A row with a ``record_key`` is queued instead of
        leased while another row of its record is being delivered, and supersedes the older
        rows of its record still waiting."""

    def get(self, submission_id: str) -> Submission | None:
        """One submission, or ``None``."""

    def claim(
        self, *, limit: int, owner: str, token: str, until: float, now: float
    ) -> list[Submission]:
        """Lease up to ``limit`` due queued rows (oldest due first) for delivery."""

    def finish(
        self,
        submission_id: str,
        token: str,
        *,
        state: State,
        now: float,
        upstream_status: int | None,
        response: bytes | None,
        error: str | None,
        next_attempt_at: float | None = None,
    ) -> Submission | None:
        """End a lease: delivered, failed, or back to queued at ``next_attempt_at``.

        Returns the updated row, or ``None`` (changing nothing) when the lease was lost.
        """

    def waiting(self, record_key: str) -> bool:
        """Whether a queued row of this record waits (for the delivery of an earlier one)."""

    def requeue_expired(self, now: float) -> int:
        """Return rows whose lease has run out to the queue (or fail the non-replayable)."""

    def next_due(self) -> float | None:
        """When the earliest queued row that may be claimed becomes due."""

    def counts(self) -> dict[str, int]:
        """Number of rows per state."""

    def purge(self, *, finished_before: float, states: Sequence[State]) -> int:
        """Delete finished rows (delivered, failed, superseded) last updated before
        ``finished_before``."""

    def ping(self) -> None:
        """Raise if the store is unreachable."""

    def probe_write(self) -> None:
        """Raise if the store cannot be written (read-only file, full disk, no rights)."""

    def close(self) -> None:
        """Release the connection."""


_UNKNOWN_OUTCOME = (
    "delivery outcome unknown: the gateway stopped mid-delivery and the bundle is not "
    "safe to send twice (it has non-conditional creates)"
)


class _SqlOutbox:
    """The SQL both stores share; subclasses provide ``_run`` and the claim statement."""

    _claim_sql: str

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def add(
        self, new: NewSubmission, *, now: float, lease: Lease | None, due: float | None = None
    ) -> Submission:
        if lease is not None and new.record_key is not None:
            busy = self._run(
                f"SELECT 1 FROM {TABLE} WHERE record_key = ? AND state = 'delivering' LIMIT 1",
                (new.record_key,),
            )
            if busy:  # wait for the delivery of the record's previous version
                lease, due = None, now
        state = State.DELIVERING if lease else State.QUEUED
        rows = self._run(
            f"INSERT INTO {TABLE} (id, kind, bundle_type, principal, state, payload, "
            "replay_safe, attempts, created_at, updated_at, next_attempt_at, lease_token, "
            "lease_owner, lease_until, warnings, client, record_key) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_SELECT}",
            (
                new.id,
                new.kind,
                new.bundle_type,
                new.principal,
                state.value,
                new.payload,
                int(new.replay_safe),
                1 if lease else 0,
                now,
                now,
                now if due is None else due,
                lease.token if lease else None,
                lease.owner if lease else None,
                lease.until if lease else None,
                orjson.dumps(list(new.warnings)).decode() if new.warnings else None,
                new.client,
                new.record_key,
            ),
        )
        if new.record_key is not None:
            self.supersede(now, new.record_key)
        return _row(rows[0])

    def supersede(self, now: float, record_key: str | None = None) -> int:
        """Mark waiting rows that a newer row of the same record replaced (all records, or
        one); returns how many. Their payload goes: it will never be sent."""
        rows = self._run(
            _SUPERSEDE
            + ("" if record_key is None else f" AND {TABLE}.record_key = ?")
            + " RETURNING id",
            (now, now) + (() if record_key is None else (record_key,)),
        )
        return len(rows)

    def get(self, submission_id: str) -> Submission | None:
        rows = self._run(f"SELECT {_SELECT} FROM {TABLE} WHERE id = ?", (submission_id,))
        return _row(rows[0]) if rows else None

    def claim(
        self, *, limit: int, owner: str, token: str, until: float, now: float
    ) -> list[Submission]:
        self.supersede(now)
        rows = self._run(self._claim_sql, (token, owner, until, now, now, limit))
        return [_row(row) for row in rows]

    def finish(
        self,
        submission_id: str,
        token: str,
        *,
        state: State,
        now: float,
        upstream_status: int | None,
        response: bytes | None,
        error: str | None,
        next_attempt_at: float | None = None,
    ) -> Submission | None:
        if state is State.DELIVERING:
            raise ValueError("finish() ends a lease; DELIVERING is not an end state")
        # Delivered rows drop their payload: the data now lives upstream, and patient data
        # should not accumulate in a gateway's spool. Failed rows keep it for inspection.
        clear_payload = state is State.DELIVERED
        rows = self._run(
            f"UPDATE {TABLE} SET state = ?, updated_at = ?, next_attempt_at = ?, "
            "upstream_status = ?, response = ?, error = ?, lease_token = NULL, "
            "lease_owner = NULL, lease_until = NULL"
            + (", payload = NULL" if clear_payload else "")
            + f" WHERE id = ? AND state = 'delivering' AND lease_token = ? RETURNING {_SELECT}",
            (
                state.value,
                now,
                next_attempt_at if next_attempt_at is not None else now,
                upstream_status,
                response,
                error,
                submission_id,
                token,
            ),
        )
        row = _row(rows[0]) if rows else None
        # A newer version may have arrived during this attempt: the row is superseded now,
        # not only at the next claim, so its status says so as soon as it is back.
        if (
            row is not None
            and row.state is State.QUEUED
            and row.record_key is not None
            and self.supersede(now, row.record_key)
        ):
            row = self.get(submission_id)
        return row

    def waiting(self, record_key: str) -> bool:
        rows = self._run(
            f"SELECT 1 FROM {TABLE} WHERE record_key = ? AND state = 'queued' LIMIT 1",
            (record_key,),
        )
        return bool(rows)

    def requeue_expired(self, now: float) -> int:
        rows = self._run(
            f"UPDATE {TABLE} SET "
            "state = CASE WHEN replay_safe = 1 THEN 'queued' ELSE 'failed' END, "
            "error = CASE WHEN replay_safe = 1 THEN 'lease expired; queued again' ELSE ? END, "
            "lease_token = NULL, lease_owner = NULL, lease_until = NULL, "
            "next_attempt_at = ?, updated_at = ? "
            "WHERE state = 'delivering' AND lease_until < ? RETURNING id",
            (_UNKNOWN_OUTCOME, now, now, now),
        )
        return len(rows)

    def next_due(self) -> float | None:
        rows = self._run(
            f"SELECT MIN(next_attempt_at) FROM {TABLE} q WHERE q.state = 'queued' AND {_CLAIMABLE}"
        )
        value = rows[0][0] if rows else None
        return None if value is None else float(value)

    def counts(self) -> dict[str, int]:
        rows = self._run(f"SELECT state, COUNT(*) FROM {TABLE} GROUP BY state")
        counts = {state.value: 0 for state in State}
        counts.update({str(state): int(count) for state, count in rows})
        return counts

    def purge(self, *, finished_before: float, states: Sequence[State]) -> int:
        finished = [state.value for state in states if state in _FINISHED]
        if not finished:
            return 0
        marks = ", ".join("?" for _ in finished)
        rows = self._run(
            f"DELETE FROM {TABLE} WHERE state IN ({marks}) AND updated_at < ? RETURNING id",
            (*finished, finished_before),
        )
        return len(rows)

    def ping(self) -> None:
        self._run("SELECT 1")

    def probe_write(self) -> None:
        # One small row rewritten in place: needs the file, its journal and the lock writable.
        self._run(
            f"INSERT INTO {PROBE_TABLE} (id, at) VALUES (1, 0) "
            "ON CONFLICT (id) DO UPDATE SET at = excluded.at + 1"
        )


_FINISHED = frozenset({State.DELIVERED, State.FAILED, State.SUPERSEDED})
"""States a row never leaves: only these are purged (a superseded row is never sent)."""


_NEWER = (
    "n.record_key = {row}.record_key AND n.id <> {row}.id "
    "AND n.state IN ('queued', 'delivering', 'delivered') "
    "AND (n.created_at > {row}.created_at OR (n.created_at = {row}.created_at AND n.id > {row}.id))"
)
"""A newer row of the same record that is waiting, being delivered or delivered."""

_SUPERSEDE = (
    f"UPDATE {TABLE} SET state = 'superseded', payload = NULL, updated_at = ?, "
    "next_attempt_at = ?, "
    "error = 'superseded by submission ' || (SELECT n.id FROM "
    f"{TABLE} n WHERE {_NEWER.format(row=TABLE)} ORDER BY n.created_at DESC, n.id DESC LIMIT 1) "
    "|| ', a newer version of the same record; not sent' "
    f"WHERE {TABLE}.state = 'queued' AND {TABLE}.record_key IS NOT NULL "
    f"AND EXISTS (SELECT 1 FROM {TABLE} n WHERE {_NEWER.format(row=TABLE)})"
)

_CLAIMABLE = (
    "(q.record_key IS NULL OR ("
    f"NOT EXISTS (SELECT 1 FROM {TABLE} d WHERE d.record_key = q.record_key "
    "AND d.state = 'delivering') "
    f"AND NOT EXISTS (SELECT 1 FROM {TABLE} n WHERE {_NEWER.format(row='q')})))"
)
"""A queued row ``q`` may be sent: no other version of its record is being delivered, and
none newer is waiting or done (one delivery per record at a time, oldest first, never an
older one after a newer)."""

# Claim parameters: token, owner, until, now (updated_at), now (due), limit.
_SQLITE_CLAIM = (
    f"UPDATE {TABLE} SET state = 'delivering', attempts = attempts + 1, lease_token = ?, "
    "lease_owner = ?, lease_until = ?, updated_at = ? "
    f"WHERE id IN (SELECT q.id FROM {TABLE} q WHERE q.state = 'queued' "
    f"AND q.next_attempt_at <= ? AND {_CLAIMABLE} "
    f"ORDER BY q.next_attempt_at, q.created_at LIMIT ?) RETURNING {_SELECT}"
)


class SqliteOutbox(_SqlOutbox):
    """One SQLite file; safe for one gateway process (and tolerable for a few on one host).

    One connection guarded by a lock: every operation is a single short statement, so
    serializing them costs less than a connection per thread, and autocommit makes each
    statement its own durable transaction.
    """

    _claim_sql = _SQLITE_CLAIM

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            _private_file(Path(self.path))
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} ("
            "id TEXT PRIMARY KEY, kind TEXT NOT NULL, bundle_type TEXT NOT NULL, "
            "principal TEXT NOT NULL, state TEXT NOT NULL, payload BLOB, "
            "replay_safe INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
            "created_at REAL NOT NULL, updated_at REAL NOT NULL, next_attempt_at REAL NOT NULL, "
            "lease_token TEXT, lease_owner TEXT, lease_until REAL, upstream_status INTEGER, "
            "response BLOB, error TEXT, warnings TEXT)"
        )
        self._conn.execute(
            f"CREATE INDEX IF NOT EXISTS {TABLE}_due ON {TABLE} (state, next_attempt_at)"
        )
        columns = {row[1] for row in self._conn.execute(f"PRAGMA table_info({TABLE})")}
        if "client" not in columns:  # outboxes created before clients existed
            self._conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN client TEXT")
        if "record_key" not in columns:  # outboxes created before per-record ordering
            self._conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN record_key TEXT")
        self._conn.execute(
            f"CREATE INDEX IF NOT EXISTS {TABLE}_record ON {TABLE} (record_key, state)"
        )
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (id INTEGER PRIMARY KEY, at INTEGER)"
        )
        if self.path != ":memory:":
            for suffix in ("-wal", "-shm"):
                _tighten(Path(self.path + suffix))

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    def free_bytes(self) -> int | None:
        """Free space on the file system of the database (``None`` in memory)."""
        if self.path == ":memory:":
            return None
        return shutil.disk_usage(Path(self.path).resolve().parent).free

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# FOR UPDATE SKIP LOCKED: concurrent gateways each claim different rows without waiting.
_POSTGRES_CLAIM = (
    f"UPDATE {TABLE} SET state = 'delivering', attempts = attempts + 1, lease_token = %s, "
    "lease_owner = %s, lease_until = %s, updated_at = %s "
    f"WHERE id IN (SELECT q.id FROM {TABLE} q WHERE q.state = 'queued' "
    f"AND q.next_attempt_at <= %s AND {_CLAIMABLE} "
    f"ORDER BY q.next_attempt_at, q.created_at LIMIT %s FOR UPDATE SKIP LOCKED) "
    f"RETURNING {_SELECT}"
)


_SCHEMA_LOCK = 0x6668_6972_6761_7465  # pg_advisory_lock key of the outbox schema ("fhirgate")


class PostgresOutbox(_SqlOutbox):
    """Postgres via psycopg 3 (``pip install 'fhir-oncology-adapter[postgres]'``).

    For several gateway instances sharing one queue. One autocommit connection per gateway,
    reconnected once if the server dropped it (a Postgres restart must not need a gateway
    restart).
    """

    _claim_sql = _POSTGRES_CLAIM

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise RuntimeError(
                "FHIR_ADAPTER_DB is a Postgres URL but psycopg is not installed; "
                "install fhir-oncology-adapter[postgres]"
            ) from exc
        self._psycopg: Any = psycopg
        self._url = url
        self._lock = threading.Lock()
        self._conn: Any = self._connect()
        with self._lock:
            # Gateways started together on a fresh database would race on CREATE ... IF NOT
            # EXISTS (Postgres checks the catalogue before it inserts, so two creators both
            # pass the check and one fails on a unique index): the schema is made under one
            # advisory lock, held by one gateway at a time.
            self._execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
            try:
                self._create_schema()
            finally:
                self._execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))

    def _create_schema(self) -> None:
        self._execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} ("
            "id TEXT PRIMARY KEY, kind TEXT NOT NULL, bundle_type TEXT NOT NULL, "
            "principal TEXT NOT NULL, state TEXT NOT NULL, payload BYTEA, "
            "replay_safe INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
            "created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL, "
            "next_attempt_at DOUBLE PRECISION NOT NULL, lease_token TEXT, lease_owner TEXT, "
            "lease_until DOUBLE PRECISION, upstream_status INTEGER, response BYTEA, "
            "error TEXT, warnings TEXT)",
            (),
        )
        self._execute(
            f"CREATE INDEX IF NOT EXISTS {TABLE}_due ON {TABLE} (state, next_attempt_at)", ()
        )
        self._execute(f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS client TEXT", ())
        self._execute(
            f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (id INTEGER PRIMARY KEY, at BIGINT)",
            (),
        )
        self._execute(f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS record_key TEXT", ())
        self._execute(
            f"CREATE INDEX IF NOT EXISTS {TABLE}_record ON {TABLE} (record_key, state)", ()
        )

    def _connect(self) -> Any:
        return self._psycopg.connect(self._url, autocommit=True, connect_timeout=10)

    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        cursor = self._conn.execute(sql, tuple(params))
        return list(cursor.fetchall()) if cursor.description is not None else []

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if sql is not self._claim_sql:
            sql = sql.replace("?", "%s")
        with self._lock:
            try:
                return self._execute(sql, params)
            except self._psycopg.OperationalError:
                if not self._conn.closed:
                    raise
                self._conn = self._connect()
                return self._execute(sql, params)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _tighten(path: Path) -> None:
    """Owner-only permissions on an existing file (an older outbox may be 0644)."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_mode & 0o077:
            path.chmod(FILE_MODE)


def _private_file(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it (SQLite then gives its -wal and
    -shm files the same permissions), in a directory made 0700 if it has to be created."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, FILE_MODE)
    os.close(descriptor)
    _tighten(path)


def open_outbox(location: str) -> Outbox:
    """SQLite for a path, Postgres for a ``postgres://`` or ``postgresql://`` URL."""
    if location.startswith(("postgresql://", "postgres://")):
        return PostgresOutbox(location)
    return SqliteOutbox(location)
