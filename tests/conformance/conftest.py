"""The offline HL7 validator for the conformance tests: one JVM for the whole module.

Set ``SKIP_PROFILE_VALIDATION=1`` to skip these tests (for instance on a machine without Java,
Maven or npm); scripts/test.sh and CI never set it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from adapter.mapping.context import DEFAULT_NAMESPACE
from tests.conformance.validator import ProfileValidator


@pytest.fixture(scope="module")
def profile_validator() -> Iterator[ProfileValidator]:
    """A running validator; the adapter's own extensions (default namespace) need no definition."""
    if os.environ.get("SKIP_PROFILE_VALIDATION") == "1":
        pytest.skip("SKIP_PROFILE_VALIDATION=1")
    with ProfileValidator([DEFAULT_NAMESPACE + "/"]) as validator:
        yield validator
