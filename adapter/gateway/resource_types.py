"""Resource types a client may write through ``POST /fhir``, and why the others are refused.

Minimal version written for the write policy (``docs/authorization.md``, rule 7); the
EHR-bundle work owns the full list and the default accepted types. Clinical and
administrative data are accepted; what would change how the server behaves (conformance,
terminology, subscriptions), what records who did what (audit, provenance) and what links or
merges identities is refused, whatever ``FHIR_ADAPTER_ALLOWED_RESOURCE_TYPES`` says.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["REFUSED_RESOURCE_TYPES", "refusal_reason"]

_CONFORMANCE = "a conformance resource changes how the server validates and searches"
_TERMINOLOGY = "terminology is the server operator's, not a sending system's"
_AUDIT = "the audit trail is written by the gateway and the server, never by a client"
_INFRASTRUCTURE = "infrastructure resources change what the server does, not what it knows"

REFUSED_RESOURCE_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "StructureDefinition": _CONFORMANCE,
        "SearchParameter": _CONFORMANCE,
        "OperationDefinition": _CONFORMANCE,
        "CompartmentDefinition": _CONFORMANCE,
        "CapabilityStatement": _CONFORMANCE,
        "ImplementationGuide": _CONFORMANCE,
        "StructureMap": _CONFORMANCE,
        "GraphDefinition": _CONFORMANCE,
        "MessageDefinition": _CONFORMANCE,
        "TerminologyCapabilities": _CONFORMANCE,
        "CodeSystem": _TERMINOLOGY,
        "ValueSet": _TERMINOLOGY,
        "ConceptMap": _TERMINOLOGY,
        "NamingSystem": _TERMINOLOGY,
        "Provenance": _AUDIT,
        "AuditEvent": _AUDIT,
        "Subscription": _INFRASTRUCTURE,
        "SubscriptionTopic": _INFRASTRUCTURE,
        "Binary": _INFRASTRUCTURE,
        "Bundle": _INFRASTRUCTURE,
        "Parameters": _INFRASTRUCTURE,
        "OperationOutcome": _INFRASTRUCTURE,
        "Linkage": "links records of different patients; identity is not a sender's to merge",
        "Person": "links records of different patients; identity is not a sender's to merge",
    }
)
"""Type → why a client may not write it."""


def refusal_reason(resource_type: str) -> str | None:
    """Why ``resource_type`` may not be written by a client, or ``None`` if it may."""
    return REFUSED_RESOURCE_TYPES.get(resource_type)
