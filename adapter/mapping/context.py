"""What every mapper needs besides the record: ids, references, the target version, options.

Mappers are pure functions of ``(record, context)``; the context is immutable and derives
every id from the record, so the same record always yields the same bundle and pushing it twice
matches the same resources on the server.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

FhirVersion = Literal["R4", "R5"]

DEFAULT_NAMESPACE = "https://fhir-oncology-adapter.example.org"
"""Base of identifier systems and of the adapter's own code systems and extensions.

A deployment sets its own (``--namespace`` / ``FHIR_ADAPTER_NAMESPACE``) so that identifiers
from several registries never collide; changing it after records were pushed makes every record
look new to the server.
"""


_NAMESPACE_URL = uuid.NAMESPACE_URL.bytes
_VARIANT = {digit: "89ab"[int(digit, 16) & 0x3] for digit in "0123456789abcdef"}
"""The RFC 4122 variant nibble (``10xx``) for each hex digit the SHA-1 digest may give."""


def uuid5_url(name: str) -> str:
    """``str(uuid.uuid5(uuid.NAMESPACE_URL, name))`` without building UUID objects.

    Same RFC 4122 algorithm (SHA-1, version 5, RFC variant), written on the hex digest: the
    version is hex digit 12, the variant's two bits the top of digit 16. It runs once per
    bundle entry, and the UUID class's overhead was most of a conversion's cost.
    """
    h = hashlib.sha1(_NAMESPACE_URL + name.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


@dataclass(frozen=True)
class ConversionOptions:
    """Choices a caller makes for one conversion."""

    fhir_version: FhirVersion = "R4"
    namespace: str = DEFAULT_NAMESPACE
    recorded: str | None = None
    """Provenance.recorded when the record has no ``recorded_at`` (an instant with time zone)."""

    def __reduce__(self) -> tuple[type[ConversionOptions], tuple[FhirVersion, str, str | None]]:
        """Pickled by its fields: worker processes receive the options, and the compiled build
        (``FHIR_ADAPTER_COMPILE=1``, mypyc) cannot restore a frozen dataclass the default way."""
        return (ConversionOptions, (self.fhir_version, self.namespace, self.recorded))


@dataclass(frozen=True)
class MappingContext:
    """Per-record constants shared by all mappers."""

    record_id: str
    options: ConversionOptions
    cancer_condition: str | None = None
    """Local id of the primary diagnosis when it is a cancer (mCODE profiles apply only then)."""
    canonical: str = field(init=False)
    _urls: dict[tuple[str, str], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "canonical", self.options.namespace.rstrip("/") + "/fhir")
        object.__setattr__(self, "_urls", {})

    @property
    def version(self) -> FhirVersion:
        """The FHIR release being produced."""
        return self.options.fhir_version

    @cached_property
    def identifier_system(self) -> str:
        """System of every business identifier the adapter assigns (except the Patient's)."""
        return self.options.namespace.rstrip("/") + "/fhir/identifier/resource"

    @cached_property
    def patient_identifier_system(self) -> str:
        """System of the Patient identifier, whose value is the record_id."""
        return self.options.namespace.rstrip("/") + "/fhir/identifier/case-record"

    def local_key(self, resource_type: str, key: str) -> str:
        """Business identifier value of a resource: record, type and the item's local key."""
        return f"{self.record_id}/{resource_type}/{key}"

    def client_id(self, resource_type: str, key: str) -> str:
        """A FHIR id (``[A-Za-z0-9.-]{1,64}``) derived from a business identifier.

        For the types a server cannot find by identifier (Provenance, R4 AdverseEvent) and so
        are PUT: the record_id keeps it readable, the hash of the full identifier (namespace
        included) keeps two registries that reuse a record_id on one server apart.
        """
        full = f"{self.identifier_system}|{self.local_key(resource_type, key)}"
        return f"{self.record_id[:40]}-{hashlib.sha256(full.encode()).hexdigest()[:16]}"

    def full_url(self, resource_type: str, key: str) -> str:
        """Deterministic ``urn:uuid`` of a bundle entry (UUIDv5 over the business identifier).

        Cached per context: mappers ask for the same entry's URL many times (every reference
        to it), and computing UUIDs was the largest single cost of a conversion.
        """
        cached = self._urls.get((resource_type, key))
        if cached is None:
            name = f"{self.identifier_system}|{self.local_key(resource_type, key)}"
            cached = f"urn:uuid:{uuid5_url(name)}"
            self._urls[(resource_type, key)] = cached
        return cached

    def reference(self, resource_type: str, key: str, display: str | None = None) -> dict[str, Any]:
        """A Reference to another resource of the same bundle."""
        ref: dict[str, Any] = {"reference": self.full_url(resource_type, key)}
        if display:
            ref["display"] = display
        return ref

    def identifier(self, resource_type: str, key: str) -> dict[str, str]:
        """The business identifier of a resource."""
        return {"system": self.identifier_system, "value": self.local_key(resource_type, key)}

    @property
    def patient_reference(self) -> dict[str, Any]:
        """Reference to the case's Patient."""
        return {"reference": self.full_url("Patient", "patient")}

    def extension_url(self, name: str) -> str:
        """URL of one of the adapter's own extensions (documented in mappings/README.md)."""
        return f"{self.canonical}/StructureDefinition/{name}"

    def code_system(self, name: str) -> str:
        """URL of one of the adapter's own code systems (documented in mappings/README.md)."""
        return f"{self.canonical}/CodeSystem/{name}"
