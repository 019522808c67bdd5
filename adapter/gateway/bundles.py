"""Bundle handling around delivery: checking EHR Bundles, stamping Provenance, reading replies.

EHR-supplied Bundles are checked here before they are accepted: the gateway must refuse a
Bundle it cannot deliver safely (wrong type, methods other than POST and PUT, resource types
outside the accepted list, structure the FHIR models reject) with a located OperationOutcome,
rather than accept it and fail later where the EHR no longer hears about it. The structural
checks run before normalisation (``adapter/gateway/normalise.py``), the model validation
after it, one entry at a time so that memory stays proportional to the largest resource
rather than to the Bundle.

The gateway's own Provenance (authorization rule 6) is built here too; see
:func:`provenance_id` for why a resend does not add another.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from adapter import __version__
from adapter.fhir_validation import model_class
from adapter.gateway.normalise import parse_identifier_condition
from adapter.gateway.outcomes import Issue, error
from adapter.gateway.resource_types import ACCEPTED_RESOURCE_TYPES, refusal_reason

__all__ = [
    "add_gateway_provenance",
    "check_structure",
    "entry_is_replay_safe",
    "model_issues",
    "provenance_id",
    "references",
    "trim_response",
]

BUNDLE_TYPES = ("transaction", "batch")
ENTRY_METHODS = ("POST", "PUT")
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_MAX_ISSUES = 100
_PROVENANCE_HEX = 40


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


def _resource_type_issue(value: Any, where: str, allowed: frozenset[str]) -> Issue | None:
    if not isinstance(value, str) or not value:
        return error("required", "resource.resourceType is missing", f"{where}.resource")
    if value in allowed:
        return None
    reason = refusal_reason(value)
    if reason is not None:
        message = f"resource type {value} is not accepted through this gateway: {reason}"
    elif value in ACCEPTED_RESOURCE_TYPES:
        message = (
            f"resource type {value} is not accepted by this deployment "
            "(FHIR_ADAPTER_ALLOWED_RESOURCE_TYPES)"
        )
    else:
        message = f"{value!r} is not a FHIR resource type"
    return error("not-supported", message, f"{where}.resource.resourceType")


def _check_entry(index: int, entry: Any, allowed: frozenset[str]) -> list[Issue]:
    where = f"Bundle.entry[{index}]"
    if not isinstance(entry, dict):
        return [error("structure", "a Bundle entry must be an object", where)]
    issues: list[Issue] = []
    resource = entry.get("resource")
    resource_type: str | None = None
    if not isinstance(resource, dict):
        issues.append(error("required", "each entry needs a resource", f"{where}.resource"))
    else:
        problem = _resource_type_issue(resource.get("resourceType"), where, allowed)
        if problem is None:
            resource_type = resource["resourceType"]
        else:
            issues.append(problem)
    full_url = entry.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        issues.append(error("structure", "fullUrl must be a string", f"{where}.fullUrl"))
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
    if_none_exist = request.get("ifNoneExist")
    if if_none_exist is not None and not isinstance(if_none_exist, str):
        issues.append(
            error("structure", "ifNoneExist must be a string", f"{where}.request.ifNoneExist")
        )
    return issues


def check_structure(bundle: dict[str, Any], *, allowed_types: Iterable[str]) -> list[Issue]:
    """Every reason to refuse an EHR Bundle before it is normalised (empty when none).

    What normalisation relies on: a transaction or batch whose entries each have a resource
    of an accepted type and a POST or PUT request addressing that type.
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
        issues.extend(_check_entry(index, entry, allowed))
        if len(issues) >= _MAX_ISSUES:
            break
    return issues[:_MAX_ISSUES]


def _expression(prefix: str, loc: Sequence[Any]) -> str:
    path = prefix
    for part in loc:
        if part == "root":
            continue
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _validation_issues(model: Any, data: dict[str, Any], prefix: str) -> list[Issue]:
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return [
            error("structure", str(err.get("msg", "invalid")), _expression(prefix, err["loc"]))
            for err in exc.errors()[:_MAX_ISSUES]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        # fhir.resources raises KeyError for resource types it does not know, among others.
        return [error("structure", f"invalid structure: {type(exc).__name__}", prefix)]
    return []


def model_issues(bundle: dict[str, Any], version: str) -> list[Issue]:
    """fhir.resources validation, one located issue per problem (empty when valid).

    Each entry's resource is validated on its own and its model dropped at once: validating
    the whole Bundle as one model would hold every resource's model in memory together
    (hundreds of MB for a 10,000-entry Synthea Bundle). The Bundle itself is checked without
    its resources.
    """
    shell = {
        **bundle,
        "entry": [
            {key: value for key, value in entry.items() if key != "resource"}
            for entry in bundle["entry"]
        ],
    }
    issues = _validation_issues(model_class(version, "Bundle"), shell, "Bundle")
    for index, entry in enumerate(bundle["entry"]):
        if len(issues) >= _MAX_ISSUES:
            break
        resource = entry["resource"]
        try:
            model = model_class(version, resource["resourceType"])
        except (ModuleNotFoundError, AttributeError):
            issues.append(
                error(
                    "not-supported",
                    f"{resource['resourceType']} is not a FHIR {version} resource type",
                    f"Bundle.entry[{index}].resource.resourceType",
                )
            )
            continue
        issues.extend(_validation_issues(model, resource, f"Bundle.entry[{index}].resource"))
    return issues[:_MAX_ISSUES]


def _now_instant(now: float) -> str:
    return (
        datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def provenance_id(client_id: str, bundle: dict[str, Any]) -> str:
    """The id of the gateway's Provenance for this content from this client.

    Derived from the client id, the Bundle type and the normalised entries (canonical JSON,
    keys sorted), so the same content from the same client always gets the same Provenance
    and a resend adds none: when the upstream already has it, it is left out of the Bundle
    (its ``recorded`` then stays the first delivery's). For a case record the record's state
    read asks for it (:mod:`adapter.reconcile`); for an EHR Bundle
    :class:`~adapter.gateway.runtime.Gateway` reads ``Provenance/<id>`` before storing it.
    Changed content gets a new id, so each distinct content a client sent has exactly one
    Provenance.

    The form ``gw-`` + 40 hex digits can never be a client's server id (``{client}-`` + 32
    hex digits), so no client can write over it.
    """
    digest = hashlib.sha256(f"{client_id}\n{bundle.get('type')}\n".encode())
    for entry in bundle["entry"]:
        digest.update(orjson.dumps(entry, option=orjson.OPT_SORT_KEYS))
        digest.update(b"\n")
    return f"gw-{digest.hexdigest()[:_PROVENANCE_HEX]}"


def _batch_target(request: dict[str, Any]) -> dict[str, Any] | None:
    """A batch's entries are independent: the final literal id, or the identifier matched."""
    url = str(request.get("url") or "")
    path, has_query, query = url.partition("?")
    if not has_query:
        return {"reference": path} if request.get("method") == "PUT" and "/" in path else None
    condition = parse_identifier_condition(query)
    if condition is None:
        return None
    system, value = condition
    return {"type": path, "identifier": {"system": system, "value": value}}


def add_gateway_provenance(
    bundle: dict[str, Any],
    *,
    provenance_id: str,
    client_id: str,
    principal: str,
    submission_id: str,
    instance_id: str,
    recorded: float,
    namespace: str,
    targets: Sequence[str] | None = None,
) -> None:
    """Append a Provenance saying which client pushed the Bundle, when, through which gateway.

    It is PUT to ``Provenance/<provenance_id>`` (see :func:`provenance_id`). Targets: in a
    transaction, every entry's ``fullUrl``, which the server rewrites to the final ids
    (entries without one get a ``urn:uuid`` derived from the Provenance id and the entry's
    request URL, so the stored Bundle is the same on every delivery); in a batch, where the
    server resolves nothing, the final literal reference, or ``Reference.identifier`` for a
    conditional update. ``activity`` is left out: the gateway does not know whether the
    server created or updated each target.

    ``targets`` (fullUrls) narrows what it points at; by default every entry. A case record
    passes its own Provenance's fullUrl, which names every resource in turn: pointing at
    the resources directly would make every later correction's deletions collide with the
    server's referential integrity.
    """
    entries: list[dict[str, Any]] = bundle["entry"]
    found: list[dict[str, Any]] = []
    batch = bundle.get("type") == "batch"
    for entry in entries:
        if batch:
            target = _batch_target(entry.get("request") or {})
            if target is not None:
                found.append(target)
            continue
        if not entry.get("fullUrl"):
            name = f"{provenance_id}/{entry['request']['url']}"
            entry["fullUrl"] = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}"
        found.append({"reference": entry["fullUrl"]})
    pointed = found if targets is None else [{"reference": t} for t in targets]
    base = namespace.rstrip("/")
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": provenance_id,
        "target": pointed,
        "recorded": _now_instant(recorded),
        "agent": [
            {
                "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "performer"}]},
                "who": {
                    "identifier": {
                        "system": f"{base}/fhir/identifier/gateway-client",
                        "value": client_id,
                    },
                    "display": client_id
                    if principal == client_id
                    else f"{client_id} ({principal})",
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
