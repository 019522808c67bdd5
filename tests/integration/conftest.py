"""Integration targets: the local HAPI started by scripts/test.sh, and an opt-in public sandbox.

``FHIR_TEST_SERVER_URL`` is set by scripts/test.sh after it builds and starts HAPI; the public
sandbox runs only when ``FHIR_SANDBOX_URL`` is set. Each target gets a unique namespace, so
runs never collide on a shared, never-reset server and never assume it is empty.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from adapter.fhir.client import FhirClient
from adapter.push import fhir_client

TARGETS = [
    pytest.param("FHIR_TEST_SERVER_URL", id="local-hapi"),
    pytest.param("FHIR_SANDBOX_URL", id="sandbox", marks=pytest.mark.sandbox),
]


@dataclass
class Target:
    """A FHIR server under test and the namespace this run tags its data with."""

    base_url: str
    namespace: str
    client: FhirClient


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Skips when the server's variable is unset; one unique namespace per module run."""
    base_url = os.environ.get(str(request.param))
    if not base_url:
        pytest.skip(f"{request.param} is not set")
    namespace = f"https://test.fhir-oncology-adapter.example.org/run-{uuid.uuid4().hex[:12]}"
    with fhir_client(base_url) as client:
        yield Target(base_url, namespace, client)
