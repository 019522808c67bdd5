"""Property-based API test: schemathesis drives every operation of ``/openapi.json``.

Whatever schemathesis sends (schema-conforming case records and Bundles, and its deliberately
broken variants: wrong types, missing fields, odd headers and path values), the gateway must
never answer 5xx. The upstream is mocked with respx, answering every transaction, so a 5xx
could only come from the gateway itself. Examples per operation are bounded so the module
runs well under a minute.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from adapter.gateway.main import create_app
from tests.unit.test_gateway_helpers import API_KEY, UPSTREAM, make_settings

# Loaded at import (schemathesis parametrizes from the schema), so the outbox lives in a
# directory of its own rather than in a per-test tmp_path.
_DB_DIR = Path(tempfile.mkdtemp(prefix="gateway-schemathesis-"))
# Loading the schema starts the app (lifespan and worker) for the rest of the session; a
# slow poll keeps that idle worker cheap (new pushes wake it at once anyway).
APP = create_app(make_settings(_DB_DIR, sync_timeout=5.0, poll_seconds=5.0, docs=True))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


def _answer_transaction(request: httpx.Request) -> httpx.Response:
    bundle: dict[str, Any] = json.loads(request.content)
    entries = [{"response": {"status": "200 OK"}} for _ in bundle.get("entry", [])]
    kind = "batch-response" if bundle.get("type") == "batch" else "transaction-response"
    return httpx.Response(200, json={"resourceType": "Bundle", "type": kind, "entry": entries})


@pytest.fixture(scope="module", autouse=True)
def mocked_upstream() -> Iterator[None]:
    """The upstream for the whole module, then the app's lifespan (and worker) stopped."""
    with respx.mock(assert_all_called=False) as router:
        router.post(UPSTREAM).mock(side_effect=_answer_transaction)
        router.get(f"{UPSTREAM}/metadata").respond(
            200, json={"resourceType": "CapabilityStatement"}
        )
        router.route(url__startswith=UPSTREAM).respond(
            404, json={"resourceType": "OperationOutcome", "issue": []}
        )
        yield
        from schemathesis.python import asgi

        asgi.shutdown_lifespans()


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {API_KEY}"}, checks=[not_a_server_error]
    )
