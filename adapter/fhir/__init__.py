"""FHIR REST client for pushing and pulling oncology case records.

Re-exports the public API so the CLI, gateway and tests import from one place.
"""

from .auth import BearerTokenAuth, SmartBackendAuth
from .client import AsyncFhirClient, FhirClient, SearchParams
from .errors import (
    AuthError,
    FhirError,
    FhirTransportError,
    OperationOutcomeError,
    OutcomeIssue,
    outcome_from_response,
)
from .retry import RetryPolicy, request_is_replay_safe

__all__ = [
    "AsyncFhirClient",
    "AuthError",
    "BearerTokenAuth",
    "FhirClient",
    "FhirError",
    "FhirTransportError",
    "OperationOutcomeError",
    "OutcomeIssue",
    "RetryPolicy",
    "SearchParams",
    "SmartBackendAuth",
    "outcome_from_response",
    "request_is_replay_safe",
]
