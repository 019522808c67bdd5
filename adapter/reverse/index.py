"""An index over pulled (or bundled) resources: by business key, and references resolved.

Resources come back from a server with server-assigned ids and ``Type/id`` references, or from
a bundle with ``urn:uuid`` fullUrls; the index hides the difference, so every reverse mapper
works on local keys (``t3``, ``dx1``, ``ae2``) exactly like the forward mappers did.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from adapter import terminology


@dataclass
class ResourceIndex:
    """Pulled resources keyed by (type, local key) with reference resolution."""

    record_id: str | None = None
    by_key: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    key_of_reference: dict[str, tuple[str, str]] = field(default_factory=dict)
    others: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        resources: Iterable[tuple[str | None, dict[str, Any]]],
        identifier_system: str,
        patient_system: str,
    ) -> ResourceIndex:
        """Index ``(fullUrl or None, resource)`` pairs by the adapter's business identifiers."""
        index = cls()
        for full_url, resource in resources:
            kind = resource.get("resourceType", "")
            key: str | None = None
            identifiers = resource.get("identifier", [])
            if isinstance(identifiers, dict):
                identifiers = [identifiers]
            for identifier in identifiers:
                if identifier.get("system") == patient_system:
                    index.record_id = identifier.get("value")
                    key = "patient"
                elif identifier.get("system") == identifier_system:
                    parts = str(identifier.get("value", "")).split("/", 2)
                    if len(parts) == 3:
                        key = parts[2]
            if key is None:
                index.others.append(resource)
                continue
            index.by_key[(kind, key)] = resource
            if full_url:
                index.key_of_reference[full_url] = (kind, key)
            if "id" in resource:
                index.key_of_reference[f"{kind}/{resource['id']}"] = (kind, key)
        return index

    def of_type(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        """``(key, resource)`` of one type, in natural key order (t2 before t10)."""
        items = [(k, r) for (t, k), r in self.by_key.items() if t == kind]
        return sorted(items, key=lambda item: natural_key(item[0]))

    def resolve(self, reference: dict[str, Any] | None) -> tuple[str, str] | None:
        """(type, key) a reference points at, whatever its form (urn:uuid, Type/id, absolute)."""
        if not reference or "reference" not in reference:
            return None
        target = str(reference["reference"])
        if target in self.key_of_reference:
            return self.key_of_reference[target]
        parts = target.rstrip("/").split("/")
        if len(parts) >= 2:
            tail = "/".join(parts[-2:])
            if parts[-2] == "_history" and len(parts) >= 4:
                tail = "/".join(parts[-4:-2])
            return self.key_of_reference.get(tail)
        return None


def natural_key(key: str) -> list[Any]:
    """Sort key that orders digits numerically (obs2 before obs10)."""
    import re

    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


def extension(resource: dict[str, Any], url_suffix: str) -> list[dict[str, Any]]:
    """Extensions whose URL ends with ``/url_suffix`` (the adapter's own, or HL7's)."""
    return [
        e for e in resource.get("extension", []) if str(e.get("url", "")).endswith("/" + url_suffix)
    ]


def sub_values(ext: dict[str, Any]) -> dict[str, Any]:
    """A complex extension's sub-extensions as ``{url: value}`` (repeated urls as lists)."""
    values: dict[str, Any] = {}
    for sub in ext.get("extension", []):
        value = next((v for k, v in sub.items() if k.startswith("value")), None)
        if sub["url"] in values:
            existing = values[sub["url"]]
            values[sub["url"]] = (
                [*existing, value] if isinstance(existing, list) else [existing, value]
            )
        else:
            values[sub["url"]] = value
    return values


def concept_key(table_name: str, concept: dict[str, Any] | None) -> str | None:
    """The table key a CodeableConcept stands for: by verified coding, else by display text."""
    if not concept:
        return None
    codes = {(c.get("system"), c.get("code")) for c in concept.get("coding", [])}
    concepts = terminology.table(table_name)
    text = concept.get("text")
    if codes:
        exact = [k for k, e in concepts.items() if {(c.system, c.code) for c in e.codings} == codes]
        overlapping = [
            k for k, e in concepts.items() if any((c.system, c.code) in codes for c in e.codings)
        ]
        for candidates in (exact, overlapping):
            named = [k for k in candidates if concepts[k].display == text]
            if named or candidates:
                return (named or candidates)[0]
    for key, entry in concepts.items():
        if text is not None and entry.display == text:
            return key
    return None


def concept_text(table_name: str, key: str | None, concept: dict[str, Any] | None) -> str | None:
    """The concept's text when it differs from the table display (i.e. the source's words)."""
    if not concept:
        return None
    text = concept.get("text")
    if key is not None and text == terminology.lookup(table_name, key).display:
        return None
    return str(text) if text is not None else None
