"""Pushing converted bundles to a FHIR server so that it mirrors the record, and the answer.

A case record's bundle is sent as one transaction planned against the server's current state
(:mod:`adapter.reconcile`): changed resources are updated, resources the record no longer
produces are deleted, and an unchanged resend changes nothing. The plan is a
compare-and-swap on the record's Provenance; a lost race (409/412, also what HAPI answers the
losers of concurrent first pushes) is re-planned from a fresh read, a few times with jitter.
Other bundles (not produced by the converter) are sent as they are.

The sync and async variants share everything but the I/O: the CLI and bulk pushes use
:func:`push_bundle`, the gateway's delivery :func:`send_record_async`.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from adapter.fhir.auth import BearerTokenAuth
from adapter.fhir.client import AsyncFhirClient, FhirClient
from adapter.fhir.errors import OperationOutcomeError
from adapter.fhir.retry import RetryPolicy
from adapter.reconcile import (
    Plan,
    content_addressed_provenances,
    is_conflict,
    plan_transaction,
    record_key,
    record_state,
    state_request,
)

PUSH_RETRY = RetryPolicy(retry_statuses=frozenset({429, 502, 503, 504}))
"""409 is not retried blindly: a conflict means the plan is stale, so :func:`push_bundle`
reads the state again and re-plans instead of re-sending the same transaction."""

MAX_PLANS = 8
"""Plans per push before a conflict is reported: concurrent pushes of one record settle in
two (one wins, the others then find its state and send no-ops)."""
_REPLAN_DELAY = (0.05, 0.5)


@dataclass
class PushResult:
    """What the server reports for one push.

    ``references`` are the resources that exist now (``Type/id``), ``created`` how many of
    them the push created, ``updated`` how many it gave a new version, ``removed`` the
    resources of the record it deleted, ``plans`` how many transactions it took (more than
    one after a lost race).
    """

    references: list[str] = field(default_factory=list)
    created: int = 0
    updated: int = 0
    removed: list[str] = field(default_factory=list)
    plans: int = 1


def fhir_client(server: str, token: str | None = None, timeout: float = 60.0) -> FhirClient:
    """A client for pushes and pulls: bearer token from the argument or ``FHIR_SERVER_TOKEN``."""
    token = token or os.environ.get("FHIR_SERVER_TOKEN")
    auth: httpx.Auth | None = BearerTokenAuth(token) if token else None
    return FhirClient(server, auth=auth, retry=PUSH_RETRY, timeout=timeout)


def _replan_delay() -> float:
    return random.uniform(*_REPLAN_DELAY)


def send_record(client: FhirClient, bundle: dict[str, Any]) -> tuple[dict[str, Any], Plan, int]:
    """Plan and send until the transaction applies; returns the response, the plan and the
    number of plans. Raises the last conflict after :data:`MAX_PLANS`."""
    key = record_key(bundle)
    if key is None:
        return client.transaction(bundle, idempotent=True), Plan(bundle), 1
    for attempt in range(1, MAX_PLANS + 1):
        also = content_addressed_provenances(bundle, key)
        state = record_state(key, client.batch(state_request(key, also), idempotent=True), also)
        plan = plan_transaction(bundle, key, state)
        try:
            return client.transaction(plan.bundle, idempotent=True), plan, attempt
        except OperationOutcomeError as exc:
            if not is_conflict(exc.status_code) or attempt == MAX_PLANS:
                raise
        time.sleep(_replan_delay())
    raise AssertionError("unreachable")  # pragma: no cover


async def send_record_async(
    client: AsyncFhirClient, bundle: dict[str, Any]
) -> tuple[dict[str, Any], Plan, int]:
    """:func:`send_record` for the gateway's async client (same plan, same loop)."""
    key = record_key(bundle)
    if key is None:
        return await client.transaction(bundle, idempotent=True), Plan(bundle), 1
    for attempt in range(1, MAX_PLANS + 1):
        also = content_addressed_provenances(bundle, key)
        answer = await client.batch(state_request(key, also), idempotent=True)
        state = record_state(key, answer, also)
        plan = plan_transaction(bundle, key, state)
        try:
            return await client.transaction(plan.bundle, idempotent=True), plan, attempt
        except OperationOutcomeError as exc:
            if not is_conflict(exc.status_code) or attempt == MAX_PLANS:
                raise
        await asyncio.sleep(_replan_delay())
    raise AssertionError("unreachable")  # pragma: no cover


def _location_parts(location: str) -> tuple[str, str | None]:
    """``Type/id`` and the version from a response location (absolute or relative)."""
    path, _, version = location.partition("/_history/")
    parts = [part for part in path.split("/") if part]
    reference = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return reference, (version.split("/")[0] or None) if version else None


def push_result(response: dict[str, Any], plan: Plan, plans: int = 1) -> PushResult:
    """Read a transaction-response: what exists, what was created, changed and removed."""
    result = PushResult(plans=plans)
    removed = set(plan.removed)
    for entry in response.get("entry", []):
        answer = entry.get("response", {})
        location = str(answer.get("location", ""))
        status = str(answer.get("status", ""))
        if not location:
            continue
        reference, version = _location_parts(location)
        if reference in removed:
            result.removed.append(reference)
            continue
        result.references.append(reference)
        if status.startswith("201"):
            result.created += 1
        elif version is not None and plan.versions.get(reference) not in (None, version):
            result.updated += 1
    return result


def push_bundle(client: FhirClient, bundle: dict[str, Any]) -> PushResult:
    """Push one bundle so the server mirrors it; see the module docstring for how."""
    response, plan, plans = send_record(client, bundle)
    return push_result(response, plan, plans)
