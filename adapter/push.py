"""Pushing converted bundles to a FHIR server, and what the server answered.

Every entry is a conditional create or a PUT to a derived id, so a transaction is safe to
re-send: the client retries it on 409 too, the answer HAPI gives the losers of a race between
identical concurrent conditional creates (the re-sent request then finds the winner's
resource).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import httpx

from adapter.fhir.auth import BearerTokenAuth
from adapter.fhir.client import FhirClient
from adapter.fhir.retry import RetryPolicy

PUSH_RETRY = RetryPolicy(retry_statuses=frozenset({409, 429, 502, 503, 504}))


@dataclass
class PushResult:
    """References the server reports for one transaction, and how many it newly created."""

    references: list[str] = field(default_factory=list)
    created: int = 0


def fhir_client(server: str, token: str | None = None, timeout: float = 60.0) -> FhirClient:
    """A client for pushes and pulls: bearer token from the argument or ``FHIR_SERVER_TOKEN``."""
    token = token or os.environ.get("FHIR_SERVER_TOKEN")
    auth: httpx.Auth | None = BearerTokenAuth(token) if token else None
    return FhirClient(server, auth=auth, retry=PUSH_RETRY, timeout=timeout)


def push_bundle(client: FhirClient, bundle: dict[str, Any]) -> PushResult:
    """Post one transaction; the response's entries say what exists now and what was new."""
    response = client.transaction(bundle, idempotent=True)
    result = PushResult()
    for entry in response.get("entry", []):
        answer = entry.get("response", {})
        location = str(answer.get("location", ""))
        if location:
            result.references.append(location.split("/_history")[0])
        if str(answer.get("status", "")).startswith("201"):
            result.created += 1
    return result
