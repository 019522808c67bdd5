"""FHIR → case record, mirroring :mod:`adapter.mapping`; plus pulling a patient from a server."""

from __future__ import annotations

import contextlib
from typing import Any

from adapter.fhir.errors import FhirError
from adapter.fhir.search import identifier_token
from adapter.mapping.context import ConversionOptions, MappingContext
from adapter.mapping.provenance import provenance_id
from adapter.reverse.record import NOT_CARRIED, resources_to_record

__all__ = ["NOT_CARRIED", "bundle_to_record", "pull_case_record", "resources_to_record"]


def _systems(namespace: str) -> tuple[str, str]:
    ctx = MappingContext("x", ConversionOptions(namespace=namespace))
    return ctx.identifier_system, ctx.patient_identifier_system


def bundle_to_record(bundle: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A case record from a bundle the adapter produced (or a searchset/$everything result)."""
    identifier_system, patient_system = _systems(namespace)
    pairs = [(e.get("fullUrl"), e["resource"]) for e in bundle.get("entry", []) if "resource" in e]
    return resources_to_record(pairs, identifier_system, patient_system)


def pull_case_record(client: Any, identifier: str, namespace: str) -> dict[str, Any]:
    """Fetch a patient's resources (search by identifier, then ``$everything``) and map back.

    Two round trips plus paging: the Patient search, then ``Patient/{id}/$everything``, which
    brings every resource of the patient compartment; the trial's ResearchStudy and the
    Provenance are read from the references when the server leaves them out.
    """
    identifier_system, patient_system = _systems(namespace)
    # Escaped: an identifier with a comma would otherwise OR in a match on any system.
    token = identifier_token(patient_system, identifier)
    patients = list(client.search("Patient", {"identifier": token}, no_cache=True))
    if not patients:
        raise LookupError(f"no Patient with identifier {patient_system}|{identifier}")
    patient_id = patients[0]["id"]
    resources = [r for r in client.everything(patient_id) if isinstance(r, dict)]
    provenance_key = provenance_id(
        MappingContext(identifier, ConversionOptions(namespace=namespace))
    )
    have_own = any(
        r.get("resourceType") == "Provenance" and r.get("id") == provenance_key for r in resources
    )
    if not have_own:  # $everything may leave it out, or bring only a gateway's Provenance
        with contextlib.suppress(FhirError):  # a missing provenance only costs the citation
            resources.append(client.read("Provenance", provenance_key))
    pairs: list[tuple[str | None, dict[str, Any]]] = [(None, r) for r in resources]
    return resources_to_record(pairs, identifier_system, patient_system)
