"""The JSON the gateway returns about submissions (201, 202 and ``GET /submissions/{id}``).

One shape for all three, so an EHR that polls after a 202 reads the same fields it would
have got in a 201. ``delivering`` is reported as ``queued``: it is an internal lease state,
and callers only need to know the work is not finished. ``superseded`` is a case record's
version that a newer version of the same record replaced before it was sent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from adapter.gateway.bundles import references
from adapter.gateway.outbox import State, Submission

__all__ = ["instant", "submission_location", "submission_view"]


def instant(epoch: float) -> str:
    """An ISO 8601 UTC instant with milliseconds."""
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def submission_location(submission_id: str) -> str:
    """Relative URL of a submission (relative so it stays right behind reverse proxies)."""
    return f"/submissions/{submission_id}"


def submission_view(row: Submission) -> dict[str, Any]:
    """Public view of an outbox row: state, upstream answer, references; never the payload."""
    status = State.QUEUED if row.state is State.DELIVERING else row.state
    view: dict[str, Any] = {
        "id": row.id,
        "status": status.value,
        "kind": row.kind,
        "bundleType": row.bundle_type,
        "location": submission_location(row.id),
        "created": instant(row.created_at),
        "updated": instant(row.updated_at),
        "attempts": row.attempts,
    }
    if status is State.QUEUED:
        view["nextAttempt"] = instant(row.next_attempt_at)
    if row.warnings:
        view["warnings"] = list(row.warnings)
    if row.error and status is not State.DELIVERED:
        view["error"] = row.error
    body = orjson.loads(row.response) if row.response else None
    if row.upstream_status is not None or body is not None:
        upstream: dict[str, Any] = {"status": row.upstream_status}
        if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
            upstream["outcome"] = body
        elif body is not None:
            upstream["response"] = body
        view["upstream"] = upstream
    if row.state is State.DELIVERED and isinstance(body, dict):
        view["references"] = references(body)
    return view
