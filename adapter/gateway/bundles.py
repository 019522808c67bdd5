"""Bundle handling around delivery: checking EHR Bundles, stamping Provenance, reading replies.

EHR-supplied Bundles are checked here before they are accepted: the gateway must refuse a
Bundle it cannot deliver safely (wrong type, resource types outside the agreed list, entries
whose re-delivery would duplicate data) with a located OperationOutcome, rather than accept
it and fail later where the EHR no longer hears about it. Structure is checked with the
fhir.resources models (R4B for R4), which is affordable here because it happens once per
EHR push; the adapter's own bundles are not re-validated per request (tests cover them).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from adapter import __version__
from adapter.fhir_validation import model_class
from adapter.gateway.outcomes import Issue, error

__all__ = [
    "add_gateway_provenance",
    "check_ehr_bundle",
    "entry_is_replay_safe",
    "references",
    "trim_response",
]

BUNDLE_TYPES = ("transaction", "batch")
ENTRY_METHODS = ("POST", "PUT")
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
_MAX_VALIDATION_ISSUES = 100


def _type_in_url(url: str) -> str:
    """``Patient`` from ``Patient``, ``Patient/1`` or ``Patient?identifier=...``."""
    return url.split("?", 1)[0].split("/", 1)[0]


def entry_is_replay_safe(entry: dict[str, Any]) -> bool:
    """PUTs and conditional creates match on a second delivery instead of duplicating."""
    request = entry.get("request")
    if not isinstance(request, dict):
        return False
    method = request.get("method")
    if method == "PUT":
        return True
    return method == "POST" and bool(request.get("ifNoneExist"))


def _check_entry(
    index: int, entry: Any, allowed: frozenset[str], require_conditional: bool
) -> list[Issue]:
    where = f"Bundle.entry[{index}]"
    if not isinstance(entry, dict):
        return [error("structure", "a Bundle entry must be an object", where)]
    issues: list[Issue] = []
    resource = entry.get("resource")
    resource_type: str | None = None
    if not isinstance(resource, dict):
        issues.append(error("required", "each entry needs a resource", f"{where}.resource"))
    else:
        value = resource.get("resourceType")
        if not isinstance(value, str) or not value:
            issues.append(
                error("required", "resource.resourceType is missing", f"{where}.resource")
            )
        elif value not in allowed:
            issues.append(
                error(
                    "not-supported",
                    f"resource type {value} is not accepted here "
                    f"(accepted: {', '.join(sorted(allowed))})",
                    f"{where}.resource.resourceType",
                )
            )
        else:
            resource_type = value
    request = entry.get("request")
    if not isinstance(request, dict):
        issues.append(error("required", "each entry needs a request", f"{where}.request"))
        return issues
    method = request.get("method")
    url = request.get("url")
    if method not in ENTRY_METHODS:
        issues.append(
            error(
                "not-supported",
                f"request.method must be POST or PUT (this gateway only writes), got {method!r}",
                f"{where}.request.method",
            )
        )
    if not isinstance(url, str) or not url:
        issues.append(error("required", "request.url is missing", f"{where}.request.url"))
    elif resource_type is not None and _type_in_url(url) != resource_type:
        issues.append(
            error(
                "invalid",
                f"request.url must address {resource_type}, not {_type_in_url(url)!r}",
                f"{where}.request.url",
            )
        )
    if require_conditional and method == "POST" and not request.get("ifNoneExist"):
        issues.append(
            Issue(
                "error",
                "business-rule",
                "a POST entry needs request.ifNoneExist (a conditional create on a business "
                "identifier) so that re-delivery after an outage creates nothing twice; "
                "or use PUT",
                (f"{where}.request.ifNoneExist",),
            )
        )
    return issues


def _expression(loc: Sequence[Any]) -> str:
    path = "Bundle"
    for part in loc:
        if part == "root":
            continue
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _model_issues(bundle: dict[str, Any], version: str) -> list[Issue]:
    """fhir.resources validation of the whole Bundle, one located issue per problem."""
    try:
        model_class(version, "Bundle").model_validate(bundle)
    except ValidationError as exc:
        return [
            error("structure", str(err.get("msg", "invalid")), _expression(err.get("loc", ())))
            for err in exc.errors()[:_MAX_VALIDATION_ISSUES]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        # fhir.resources raises KeyError for resource types it does not know, among others.
        return [error("structure", f"Bundle structure is invalid: {type(exc).__name__}", "Bundle")]
    return []


def check_ehr_bundle(
    bundle: dict[str, Any],
    *,
    allowed_types: Iterable[str],
    require_conditional: bool,
    version: str,
) -> list[Issue]:
    """Every reason to refuse an EHR Bundle (empty when it may be forwarded).

    Our own rules run first and the model validation only on a Bundle that passes them,
    because fhir.resources fails opaquely on unknown resource types.
    """
    if bundle.get("resourceType") != "Bundle":
        return [
            error(
                "invalid",
                f"expected a Bundle, got {bundle.get('resourceType')!r}",
                "Bundle.resourceType",
            )
        ]
    issues: list[Issue] = []
    if bundle.get("type") not in BUNDLE_TYPES:
        issues.append(
            error(
                "code-invalid",
                f"Bundle.type must be transaction or batch, got {bundle.get('type')!r}",
                "Bundle.type",
            )
        )
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        issues.append(error("required", "the Bundle has no entries", "Bundle.entry"))
        return issues
    allowed = frozenset(allowed_types)
    for index, entry in enumerate(entries):
        issues.extend(_check_entry(index, entry, allowed, require_conditional))
    if issues:
        return issues
    return _model_issues(bundle, version)


def _now_instant(now: float) -> str:
    return (
        datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def add_gateway_provenance(
    bundle: dict[str, Any],
    *,
    submission_id: str,
    principal: str,
    instance_id: str,
    recorded: float,
    namespace: str,
    targets: Sequence[str] | None = None,
) -> None:
    """Append a Provenance saying who pushed the Bundle, when, through which gateway.

    ``targets`` (fullUrls) narrows what it points at; by default every entry. A case record
    passes its own Provenance's fullUrl, which names every resource in turn: pointing at
    the resources directly would make every later correction's deletions collide with the
    server's referential integrity.

    It is PUT to ``Provenance/gw-<submission id>`` so that re-delivering the stored Bundle
    updates the same resource instead of creating another. Its targets are the entries'
    ``fullUrl``s (the server rewrites them to the real ids), so entries without one get a
    deterministic ``urn:uuid``. Only transactions resolve such references, so the caller
    adds Provenance to transactions only.
    """
    entries: list[dict[str, Any]] = bundle["entry"]
    all_targets = []
    for index, entry in enumerate(entries):
        if not entry.get("fullUrl"):
            entry["fullUrl"] = (
                f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{submission_id}/{index}')}"
            )
        all_targets.append({"reference": entry["fullUrl"]})
    pointed = all_targets if targets is None else [{"reference": t} for t in targets]
    base = namespace.rstrip("/")
    provenance_id = f"gw-{submission_id}"
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": provenance_id,
        "target": pointed,
        "recorded": _now_instant(recorded),
        "activity": {"coding": [{"system": DATA_OPERATION, "code": "CREATE"}]},
        "agent": [
            {
                "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "performer"}]},
                "who": {
                    "identifier": {
                        "system": f"{base}/fhir/identifier/gateway-principal",
                        "value": principal,
                    },
                    "display": principal,
                },
            },
            {
                "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "assembler"}]},
                "who": {
                    "identifier": {
                        "system": f"{base}/fhir/identifier/gateway-instance",
                        "value": instance_id,
                    },
                    "display": f"fhir-oncology-adapter gateway {__version__} ({instance_id})",
                },
            },
        ],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {
                        "system": f"{base}/fhir/identifier/gateway-submission",
                        "value": submission_id,
                    }
                },
            }
        ],
    }
    entries.append(
        {
            "fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, provenance_id)}",
            "resource": provenance,
            "request": {"method": "PUT", "url": f"Provenance/{provenance_id}"},
        }
    )


def trim_response(body: dict[str, Any]) -> dict[str, Any]:
    """The transaction/batch response without the resources the server echoed back.

    What the EHR needs is each entry's status and location; the echoed resources would
    copy patient data into the gateway's database for no benefit.
    """
    if body.get("resourceType") != "Bundle":
        return body
    entries = []
    for entry in body.get("entry") or []:
        response = entry.get("response") if isinstance(entry, dict) else None
        if isinstance(response, dict):
            kept = {
                key: response[key]
                for key in ("status", "location", "etag", "lastModified")
                if key in response
            }
            if not str(response.get("status", "")).startswith("2") and "outcome" in response:
                kept["outcome"] = response["outcome"]
            entries.append({"response": kept})
    trimmed: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": body.get("type", "transaction-response"),
    }
    if entries:
        trimmed["entry"] = entries
    return trimmed


def references(response: dict[str, Any]) -> list[dict[str, str]]:
    """``Type/id`` of each entry the server created or matched, with its status line."""
    found = []
    for entry in response.get("entry") or []:
        answer = entry.get("response") if isinstance(entry, dict) else None
        if not isinstance(answer, dict):
            continue
        location = str(answer.get("location") or "")
        item = {"status": str(answer.get("status", ""))}
        if location:
            item["location"] = location
            path = location.split("/_history/", 1)[0]
            parts = [p for p in path.split("/") if p]
            if len(parts) >= 2:
                item["reference"] = f"{parts[-2]}/{parts[-1]}"
        found.append(item)
    return found
