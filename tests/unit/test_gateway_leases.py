"""A dead gateway's leases come back even while the surviving gateway never runs out of work.

With several gateways on one outbox, a gateway killed mid-delivery leaves rows in
``delivering`` with a lease. A survivor must hand them back to the queue once the lease runs
out; if it only looked when idle, a busy survivor would leave them stranded for as long as
new pushes keep arriving.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from adapter.gateway.outbox import Lease, NewSubmission, SqliteOutbox, State
from tests.unit.test_gateway_helpers import fake_upstream, make_settings, running

QUEUED = 40
UPSTREAM_SECONDS = 0.1  # per delivery: 40 rows keep a one-at-a-time worker busy for 4 s


def submission(submission_id: str) -> NewSubmission:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "id": submission_id, "gender": "female"},
                "request": {"method": "PUT", "url": f"Patient/{submission_id}"},
            }
        ],
    }
    return NewSubmission(
        submission_id, "bundle", "transaction", "api-key:x", json.dumps(bundle).encode(), True
    )


def test_busy_worker_takes_over_an_expired_lease(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, worker_concurrency=1, poll_seconds=0.1)
    outbox = SqliteOutbox(settings.db)
    now = time.time()
    for index in range(QUEUED):
        outbox.add(submission(f"queued-{index}"), now=now - 60 + index * 0.001, lease=None)

    with fake_upstream() as upstream:
        answer = upstream._transaction

        def slow(request: httpx.Request) -> httpx.Response:
            time.sleep(UPSTREAM_SECONDS)
            upstream.mode = "ok"
            try:
                return answer(request)
            finally:
                upstream.mode = slow

        upstream.mode = slow
        with running(settings):
            # The worker is busy with the backlog; another gateway "dies" holding a lease
            # that runs out in a second.
            deadline = time.monotonic() + 30
            while outbox.counts()["delivered"] == 0:
                assert time.monotonic() < deadline, "the worker delivered nothing"
                time.sleep(0.02)
            outbox.add(
                submission("dead-gateway-row"),
                now=time.time(),
                lease=Lease("dead-token", "dead-gateway", time.time() + 1.0),
            )
            deadline = time.monotonic() + 60
            while (row := outbox.get("dead-gateway-row")) and row.state is State.DELIVERING:
                assert time.monotonic() < deadline, "the expired lease was never taken back"
                time.sleep(0.02)
            # Taken back while the backlog was still being delivered, not after it drained.
            backlog_left = outbox.counts()["queued"] + outbox.counts()["delivering"]
            assert backlog_left >= QUEUED // 4, outbox.counts()
            deadline = time.monotonic() + 60
            while (row := outbox.get("dead-gateway-row")) and row.state is not State.DELIVERED:
                assert time.monotonic() < deadline, row
                time.sleep(0.05)
    assert row is not None and row.attempts == 2
    assert row.error is None or "lease" in row.error
    outbox.close()
