"""Make a server mirror a case record: what a push must update, keep and remove.

A case record is a complete snapshot. Its bundle already updates what changed (every entry
is a conditional update or a PUT to a derived id, see :mod:`adapter.mapping.bundle`), but a
resource that a corrected record no longer produces (an adverse event struck from the case, a
dropped observation) is not in the bundle at all, so nothing in the bundle can remove it.
This module works out the removals from the server's current state and turns the bundle into
the one transaction that makes the server equal to the record.

**The manifest.** The record's own Provenance (PUT to an id derived from the record) lists
every resource the record produced as its targets; on the server those targets are the
literal ids the last applied push resolved. So the state of a record on a server is that
Provenance and its targets, read in one search (``Provenance?_id=…&_include=Provenance:target``),
sent inside a one-entry batch so that the record id travels in the body, never in a URL that
proxies and HTTP client logs record.
A target whose business identifier belongs to this record and that the new bundle no longer
produces is removed with ``DELETE``; anything else a Provenance may point at is never touched.

**Delete, not ``entered-in-error``.** R4 AdverseEvent has no status element at all, so it
cannot be marked; a deleted resource disappears from searches, ``$everything`` and ``pull``
without every reader having to filter statuses; and the server keeps the deleted resource's
versions in its history (``_history``), so nothing is lost for audit. ``entered-in-error``
would also claim the data was a mistake, which a restructured record does not say.

**Concurrency.** The Provenance entry carries ``ifMatch`` with the version that was read, so
the transaction applies only if nobody changed the manifest in between (a compare-and-swap
per record). A server answers a lost race with 409 or 412; the caller reads the state again
and re-plans (:func:`is_conflict`). Concurrent first pushes of a new record race on creating
the same resources; HAPI lets one win and answers the others 409, which re-plan the same way.

**Unchanged resends.** Servers do not version an update whose content is unchanged (HAPI:
"no changes were detected"). The one field a resend changes by itself is the Provenance's
``recorded`` of a record that has no ``recorded_at`` (the conversion time); when nothing else
of the Provenance differs, the server's value is kept, so a resend versions nothing. The
gateway adds a Provenance of its own whose id is a digest of the content and the client;
the state search asks for it too (``_id=record,gateway``), and when the server holds it
already the plan leaves it out, so an unchanged resend through the gateway versions
nothing either, at no extra round trip.

Everything here is pure: the callers (:mod:`adapter.push`, the gateway's delivery) do the
reading and sending.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapter.fhir.errors import FhirError, OperationOutcomeError
from adapter.mapping.context import ConversionOptions, MappingContext
from adapter.mapping.provenance import provenance_id

__all__ = [
    "CONFLICT_STATUSES",
    "Plan",
    "RecordKey",
    "RecordState",
    "is_conflict",
    "manifest_full_url",
    "plan_transaction",
    "record_key",
    "record_state",
    "state_request",
]

CONFLICT_STATUSES = frozenset({409, 412})
"""A lost race: the version read is no longer current (HAPI: 409 "not the current version",
412 for ``If-Match`` on some servers), or a concurrent create of the same resource won."""

_CASE_RECORD_SUFFIX = "/fhir/identifier/case-record"


@dataclass(frozen=True)
class RecordKey:
    """Which record a bundle carries, and the names of its resources on a server."""

    record_id: str
    namespace: str
    provenance_id: str
    """Server id of the record's Provenance (the manifest)."""
    identifier_system: str
    """System of the business identifiers of the record's resources (the Patient's aside)."""
    patient_system: str

    @property
    def label(self) -> str:
        """``system|record_id``: one key per record and namespace, for ordering deliveries."""
        return f"{self.patient_system}|{self.record_id}"

    def owns(self, resource_type: str, identifiers: Iterable[dict[str, Any]]) -> str | None:
        """The resource's business identifier (``system|value``) if it is one of this record's."""
        for identifier in identifiers:
            system, value = identifier.get("system"), identifier.get("value")
            if not isinstance(system, str) or not isinstance(value, str):
                continue
            if resource_type == "Patient" and system == self.patient_system:
                if value == self.record_id:
                    return f"{system}|{value}"
            elif system == self.identifier_system and value.startswith(f"{self.record_id}/"):
                return f"{system}|{value}"
        return None


@dataclass
class RecordState:
    """What a server holds for a record: its Provenance and the resources it targets."""

    provenance: dict[str, Any] | None = None
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Current resources by ``Type/id`` (targets already deleted are absent)."""
    present: set[str] = field(default_factory=set)
    """Ids of the bundle's content-addressed Provenances (the gateway's) the server holds."""

    @property
    def version(self) -> str | None:
        """``meta.versionId`` of the Provenance, the token of the compare-and-swap."""
        if self.provenance is None:
            return None
        version = (self.provenance.get("meta") or {}).get("versionId")
        return str(version) if version is not None else None


@dataclass(frozen=True)
class Plan:
    """The transaction to send and what it will do beyond the bundle's own entries."""

    bundle: dict[str, Any]
    removed: tuple[str, ...] = ()
    """``Type/id`` of the resources the record no longer produces, deleted by the transaction."""
    versions: dict[str, str] = field(default_factory=dict)
    """``Type/id`` → ``versionId`` of the record's resources before the push (for reporting
    which ones the push changed)."""


def is_conflict(status: int) -> bool:
    """Whether a refused transaction lost a race and should be re-planned, not reported."""
    return status in CONFLICT_STATUSES


def _identifiers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """``identifier`` as a list (R4 AdverseEvent has a single one)."""
    value = resource.get("identifier")
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    return []


def _request(entry: dict[str, Any]) -> dict[str, Any]:
    request = entry.get("request")
    return request if isinstance(request, dict) else {}


def record_key(bundle: dict[str, Any]) -> RecordKey | None:
    """The record a bundle from :func:`adapter.mapping.convert_record` carries.

    Found from its Patient (identifier ``{namespace}/fhir/identifier/case-record|record_id``)
    and confirmed by the Provenance PUT to the id the mapping derives from them. ``None`` for
    any other bundle (an EHR's own), which is then sent as it is.
    """
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
    for entry in entries:
        resource = entry.get("resource")
        if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
            continue
        for identifier in _identifiers(resource):
            system, value = identifier.get("system"), identifier.get("value")
            if not (isinstance(system, str) and isinstance(value, str)):
                continue
            if not system.endswith(_CASE_RECORD_SUFFIX):
                continue
            namespace = system[: -len(_CASE_RECORD_SUFFIX)]
            ctx = MappingContext(value, ConversionOptions(namespace=namespace))
            key = RecordKey(
                record_id=value,
                namespace=namespace,
                provenance_id=provenance_id(ctx),
                identifier_system=ctx.identifier_system,
                patient_system=ctx.patient_identifier_system,
            )
            if _provenance_entry(bundle, key) is not None:
                return key
    return None


def _provenance_entry(bundle: dict[str, Any], key: RecordKey) -> dict[str, Any] | None:
    for entry in bundle.get("entry") or []:
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        if (
            isinstance(resource, dict)
            and resource.get("resourceType") == "Provenance"
            and resource.get("id") == key.provenance_id
            and _request(entry).get("method") == "PUT"
        ):
            return entry
    return None


def manifest_full_url(bundle: dict[str, Any], key: RecordKey) -> str | None:
    """``fullUrl`` of the record's Provenance entry in the bundle.

    What the gateway's own Provenance of a case-record submission points at: the record's
    Provenance in turn names every resource, and the record's Provenance is never deleted,
    so the gateway's audit trail never blocks a correction from deleting a resource (servers
    refuse to delete a resource another one still references).
    """
    entry = _provenance_entry(bundle, key)
    full_url = entry.get("fullUrl") if entry is not None else None
    return full_url if isinstance(full_url, str) else None


def content_addressed_provenances(bundle: dict[str, Any], key: RecordKey) -> tuple[str, ...]:
    """Ids of the bundle's Provenances, other than the record's own, that are PUT by id.

    In a case record's bundle that is the gateway's Provenance, whose id is a digest of the
    content and the client (:func:`adapter.gateway.bundles.provenance_id`): if the server
    already holds it, this exact content from this client was delivered before, and sending
    it again would only give it a later ``recorded``.
    """
    found = []
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if (
            isinstance(resource, dict)
            and resource.get("resourceType") == "Provenance"
            and isinstance(resource.get("id"), str)
            and resource["id"] != key.provenance_id
            and _request(entry).get("method") == "PUT"
        ):
            found.append(resource["id"])
    return tuple(found)


def state_request(key: RecordKey, also: Sequence[str] = ()) -> dict[str, Any]:
    """The batch that reads a record's state: its Provenance and every target, in one search.

    ``also``: ids of further Provenances (:func:`content_addressed_provenances`) whose
    presence the same search answers, so that the gateway needs no round trip of its own
    to learn whether it delivered this content before.

    A batch rather than a plain GET: the Provenance id contains the record id, which must not
    appear in request URLs (they are logged by HTTP clients and proxies). The ids are FHIR ids
    (``[A-Za-z0-9-.]``), so they need no escaping in the search URL, and a comma never
    occurs in one (it separates them: either id matches).
    """
    ids = ",".join((key.provenance_id, *also))
    return {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "request": {
                    "method": "GET",
                    "url": f"Provenance?_id={ids}&_include=Provenance:target",
                }
            }
        ],
    }


def _literal(reference: str) -> str:
    """``Type/id`` from ``Type/id``, ``Type/id/_history/n`` or an absolute URL of either."""
    path = reference.split("/_history/", 1)[0]
    parts = [part for part in path.split("/") if part]
    return "/".join(parts[-2:]) if len(parts) >= 2 else path


def _searchset(response: dict[str, Any]) -> dict[str, Any]:
    """The searchset inside the answer to :func:`state_request`, or the server's refusal."""
    entries = response.get("entry") if response.get("resourceType") == "Bundle" else None
    entry = entries[0] if isinstance(entries, list) and entries else None
    if not isinstance(entry, dict):
        raise FhirError("the server answered the state read with no batch entry")
    answer = entry.get("response") if isinstance(entry.get("response"), dict) else {}
    status = str((answer or {}).get("status", "")).split(" ", 1)[0]
    if not status.startswith("2"):
        outcome = (answer or {}).get("outcome") or {"resourceType": "OperationOutcome"}
        code = int(status) if status.isdigit() else 502
        raise OperationOutcomeError(code, outcome, method="GET", url="Provenance?_id=…")
    searchset = entry.get("resource")
    if not isinstance(searchset, dict) or searchset.get("resourceType") != "Bundle":
        raise FhirError("the server answered the state read without a searchset")
    if any(
        isinstance(link, dict) and link.get("relation") == "next"
        for link in searchset.get("link") or []
    ):
        # One match and its includes fit one page on every server we know (HAPI includes up
        # to 1,000 per page); a record that does not fit is refused rather than half-read.
        raise FhirError("the record's state does not fit one search page; it cannot be planned")
    return searchset


def record_state(key: RecordKey, response: dict[str, Any], also: Sequence[str] = ()) -> RecordState:
    """The state from the server's answer to :func:`state_request` (with the same ``also``).

    Raises :class:`~adapter.fhir.errors.OperationOutcomeError` when the server refused the
    search, :class:`~adapter.fhir.errors.FhirError` when the answer is not a searchset.
    """
    searchset = _searchset(response)
    resources = [
        e["resource"]
        for e in searchset.get("entry") or []
        if isinstance(e, dict)
        and isinstance(e.get("resource"), dict)
        and (e.get("search") or {}).get("mode") != "outcome"
    ]
    state = RecordState()
    for resource in resources:
        resource_type, resource_id = resource.get("resourceType"), resource.get("id")
        if not isinstance(resource_type, str) or not isinstance(resource_id, str):
            continue
        if resource_type == "Provenance" and resource_id == key.provenance_id:
            state.provenance = resource
        elif resource_type == "Provenance" and resource_id in also:
            state.present.add(resource_id)
        else:
            state.targets[f"{resource_type}/{resource_id}"] = resource
    return state


def _new_keys(bundle: dict[str, Any], key: RecordKey) -> dict[str, str]:
    """``fullUrl`` → ``Type:system|value`` of every entry of the new bundle that is the record's."""
    keys: dict[str, str] = {}
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        resource_type = str(resource.get("resourceType"))
        owned = key.owns(resource_type, _identifiers(resource))
        if owned is not None and isinstance(entry.get("fullUrl"), str):
            keys[entry["fullUrl"]] = f"{resource_type}:{owned}"
    return keys


def _server_key(key: RecordKey, reference: str, resource: dict[str, Any]) -> str | None:
    resource_type = reference.split("/", 1)[0]
    owned = key.owns(resource_type, _identifiers(resource))
    return None if owned is None else f"{resource_type}:{owned}"


def _unchanged_but_recorded(
    new: dict[str, Any],
    old: dict[str, Any],
    new_target_keys: list[str | None],
    old_target_keys: list[str | None],
) -> bool:
    """Whether two Provenances say the same thing apart from ``recorded`` (and server meta)."""
    ignored = ("id", "meta", "text", "recorded", "target")
    same_body = {k: v for k, v in new.items() if k not in ignored} == {
        k: v for k, v in old.items() if k not in ignored
    }
    return same_body and None not in old_target_keys and new_target_keys == old_target_keys


def _already_present(entry: Any, state: RecordState) -> bool:
    """Whether ``entry`` is a content-addressed Provenance the server holds already."""
    resource = entry.get("resource") if isinstance(entry, dict) else None
    return (
        isinstance(resource, dict)
        and resource.get("resourceType") == "Provenance"
        and isinstance(resource.get("id"), str)
        and resource["id"] in state.present
    )


def plan_transaction(bundle: dict[str, Any], key: RecordKey, state: RecordState) -> Plan:
    """The transaction that makes the server equal to the record, given its current state.

    The bundle's entries go as they are, except the record's Provenance, which gains
    ``ifMatch`` on the version read (when there is one) and keeps the server's ``recorded``
    when nothing else of it changed, and a content-addressed Provenance the server already
    holds (``state.present``), which is left out; then one ``DELETE`` per resource of the
    record that the bundle no longer produces. The input bundle is not modified.
    """
    planned = copy.copy(bundle)
    entries = [
        copy.copy(e) if isinstance(e, dict) else e
        for e in bundle.get("entry") or []
        if not _already_present(e, state)
    ]
    planned["entry"] = entries
    new_keys = _new_keys(bundle, key)
    server_keys = {
        reference: _server_key(key, reference, resource)
        for reference, resource in state.targets.items()
    }
    versions = {
        reference: str((resource.get("meta") or {}).get("versionId"))
        for reference, resource in state.targets.items()
        if (resource.get("meta") or {}).get("versionId") is not None
    }
    provenance = state.provenance
    if provenance is not None and provenance.get("meta", {}).get("versionId") is not None:
        versions[f"Provenance/{key.provenance_id}"] = str(provenance["meta"]["versionId"])
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        if not (
            isinstance(resource, dict)
            and resource.get("resourceType") == "Provenance"
            and resource.get("id") == key.provenance_id
        ):
            continue
        request = dict(_request(entry))
        if state.version is not None:
            request["ifMatch"] = f'W/"{state.version}"'
        entry["request"] = request
        if provenance is not None:
            new_targets = [
                new_keys.get(str(t.get("reference"))) for t in resource.get("target") or []
            ]
            old_targets = [
                server_keys.get(_literal(str(t.get("reference"))))
                for t in provenance.get("target") or []
            ]
            if "recorded" in provenance and _unchanged_but_recorded(
                resource, provenance, new_targets, old_targets
            ):
                entry["resource"] = dict(resource, recorded=provenance["recorded"])
        entries[index] = entry
    kept = set(new_keys.values())
    removed = tuple(
        reference
        for reference, server_key in server_keys.items()
        if server_key is not None and server_key not in kept
    )
    entries.extend({"request": {"method": "DELETE", "url": reference}} for reference in removed)
    return Plan(planned, removed, versions)
