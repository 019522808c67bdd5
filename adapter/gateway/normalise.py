"""Rewrite a client's Bundle into writes inside its own space (authorization rules 1, 2, 4).

An EHR's Bundle names its resources in its own terms: local ids (``PUT Patient/123``),
``fullUrl``s of plain POSTs, ``urn:uuid:`` links between entries. Forwarded as they are,
plain POSTs duplicate everything on a resend and local ids collide with other senders'. The
gateway therefore rewrites every entry before anything else looks at it:

* ``PUT Type/local-id`` → ``PUT Type/{server_id(client, Type, local-id)}`` (rule 1);
* ``POST Type`` with a ``fullUrl`` → ``PUT Type/{server_id(client, Type, fullUrl)}`` (rule 2),
  so a resend updates the same resource instead of creating another;
* ``POST Type`` with ``ifNoneExist: identifier=system|value`` and ``PUT Type?identifier=...``
  → the conditional update ``PUT Type?identifier=system|value`` (rule 3's rewriting; whether
  the caller owns ``system`` is the write policy's question), with ``resource.id`` removed,
  because a body id on a conditional update would choose the server id when nothing matches
  and contradict the match otherwise;
* relative references ``Type/id`` inside resources → ``Type/{server_id(client, Type, id)}``
  (rule 4), so a reference made in one Bundle finds a resource written by another;
* references to an entry's ``fullUrl`` keep working: ``urn:`` fullUrls are resolved by the
  server in a transaction and replaced here by the entry's final reference in a batch
  (where the server resolves nothing); other fullUrls become a ``urn:uuid`` derived from them.

Conditional references (``Practitioner?identifier=...``), contained references (``#x``)
and absolute URLs are left as they are: what the caller may match on, and which absolute
references are allowed, is decided by the write policy after this step. Forms this module
cannot put in the client's space (conditions other than one ``identifier``) are also left
for the policy, which refuses them.

What cannot be made idempotent or is self-contradictory is refused here with a located
issue (422): a POST with neither ``fullUrl`` nor ``ifNoneExist``, a ``urn:`` reference to no
entry, two entries writing one resource, a body id that contradicts the request URL.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

from adapter.gateway.clients import Client, server_id
from adapter.gateway.outcomes import Issue, error

__all__ = [
    "format_identifier_condition",
    "normalise_bundle",
    "parse_identifier_condition",
]

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_RELATIVE = re.compile(
    r"^(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?P<history>/_history/[A-Za-z0-9\-.]{1,64})?$"
)
_RESTFUL_URL = re.compile(
    r"^(?P<base>[a-z][a-z0-9+.-]*://.+)/(?P<local>[A-Z][A-Za-z]{1,63}/[^/]+)$"
)
# FHIR search escaping (http://hl7.org/fhir/R4/search.html#escaping): \ , | $
_SEARCH_SPECIALS = re.compile(r"([\\,|$])")
_UNESCAPED_PIPE = re.compile(r"(?<!\\)((?:\\\\)*)\|")
_FULL_URL_NAMESPACE = uuid.UUID("5b0c4f0e-3f3a-5a43-9d53-0d4c8b7e6a10")


def parse_identifier_condition(query: str) -> tuple[str, str] | None:
    """``(system, value)`` of a condition that is exactly one ``identifier=system|value``.

    The query is percent-decoded and FHIR search escapes are undone. Anything else (other
    parameters, several parameters, several values, no system) gives ``None``: such a
    condition could match resources that are not the caller's, and is the policy's to refuse.
    """
    query = query.lstrip("?")
    if not query or "&" in query:
        return None
    name, sep, raw = query.partition("=")
    if not sep or unquote(name) != "identifier":
        return None
    text = unquote(raw.replace("+", " "))
    if re.search(r"(?<!\\)(?:\\\\)*,", text):
        return None  # several values: an OR
    match = _UNESCAPED_PIPE.search(text)
    if match is None:
        return None
    cut = match.end() - 1
    system, value = _unescape(text[:cut]), _unescape(text[cut + 1 :])
    if not system or not value:
        return None
    return system, value


def _unescape(text: str) -> str:
    return re.sub(r"\\([\\,|$])", r"\1", text)


def format_identifier_condition(system: str, value: str) -> str:
    """``identifier=system|value``, FHIR-escaped and then percent-encoded.

    ``:`` and ``/`` stay readable (they are legal in a query); everything a client could
    use to add a parameter or a value (``&``, ``=``, ``#``, ``,``, ``|``) is escaped.
    """

    def encode(part: str) -> str:
        return quote(_SEARCH_SPECIALS.sub(r"\\\1", part), safe=":/")

    return f"identifier={encode(system)}|{encode(value)}"


class _Normaliser:
    """One Bundle's rewriting; keeps the entry index of each name so issues are located."""

    def __init__(self, bundle: dict[str, Any], client: Client) -> None:
        self.client = client
        self.batch = bundle.get("type") == "batch"
        self.entries: list[dict[str, Any]] = bundle["entry"]
        self.issues: list[Issue] = []
        self.targets: list[str | None] = [None] * len(self.entries)
        """Each entry's final reference: ``Type/id`` or ``Type?identifier=...``."""
        self.by_full_url: dict[str, int] = {}
        self.original_full_urls: list[str | None] = [None] * len(self.entries)
        self.by_restful: dict[tuple[str, str], int] = {}

    def run(self) -> list[Issue]:
        written: dict[str, int] = {}
        for index, entry in enumerate(self.entries):
            target = self._request(index, entry)
            self.targets[index] = target
            if target is None:
                continue
            earlier = written.setdefault(target, index)
            if earlier != index:
                self.issues.append(
                    error(
                        "duplicate",
                        f"entries {earlier} and {index} both write {target}; a Bundle may "
                        "write each resource once",
                        f"Bundle.entry[{index}].request.url",
                    )
                )
        self._full_urls()
        if self.issues:
            return self.issues
        for index, entry in enumerate(self.entries):
            self._references(index, entry["resource"])
        return self.issues

    # -- requests ---------------------------------------------------------------------------

    def _request(self, index: int, entry: dict[str, Any]) -> str | None:
        resource: dict[str, Any] = entry["resource"]
        resource_type: str = resource["resourceType"]
        request: dict[str, Any] = entry["request"]
        url: str = request["url"]
        where = f"Bundle.entry[{index}]"
        path, has_query, query = url.partition("?")
        if request["method"] == "PUT":
            if has_query:
                return self._conditional(entry, resource_type, query)
            local_id = path[len(resource_type) + 1 :] if "/" in path else ""
            if not _FHIR_ID.match(local_id):
                self.issues.append(
                    error(
                        "invalid",
                        f"a PUT's request.url must be {resource_type}/<id> (an id of 1-64 "
                        "letters, digits, '-' or '.') or "
                        f"{resource_type}?identifier=<system>|<value>, got {url!r}",
                        f"{where}.request.url",
                    )
                )
                return None
            body_id = resource.get("id")
            assigned = server_id(self.client, resource_type, local_id)
            if body_id is not None and body_id not in (local_id, assigned):
                self.issues.append(
                    error(
                        "invalid",
                        f"resource.id {body_id!r} contradicts request.url {url!r}",
                        f"{where}.resource.id",
                    )
                )
                return None
            return self._put(entry, resource_type, assigned)
        # POST
        if path != resource_type or has_query:
            self.issues.append(
                error(
                    "invalid",
                    f"a POST's request.url is the resource type ({resource_type!r}), got {url!r}",
                    f"{where}.request.url",
                )
            )
            return None
        if_none_exist = request.get("ifNoneExist")
        if isinstance(if_none_exist, str) and if_none_exist:
            return self._conditional(entry, resource_type, if_none_exist)
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and full_url:
            return self._put(entry, resource_type, server_id(self.client, resource_type, full_url))
        self.issues.append(
            error(
                "required",
                "a POST entry needs a fullUrl or request.ifNoneExist (identifier=system|value): "
                "without either the gateway cannot recognise a resend, which would create the "
                "resource again",
                where,
            )
        )
        return None

    def _put(self, entry: dict[str, Any], resource_type: str, resource_id: str) -> str:
        target = f"{resource_type}/{resource_id}"
        entry["resource"]["id"] = resource_id
        entry["request"] = _request_without_condition(entry["request"], "PUT", target)
        return target

    def _conditional(self, entry: dict[str, Any], resource_type: str, query: str) -> str | None:
        condition = parse_identifier_condition(query)
        if condition is None:
            return None  # not in the caller's space: the write policy refuses it
        target = f"{resource_type}?{format_identifier_condition(*condition)}"
        entry["resource"].pop("id", None)
        entry["request"] = _request_without_condition(entry["request"], "PUT", target)
        return target

    # -- fullUrls ---------------------------------------------------------------------------

    def _full_urls(self) -> None:
        """Index fullUrls; those that are not ``urn:`` become a ``urn:uuid`` derived from them.

        Entries without one get a ``urn:uuid`` derived from what they write, so that the
        gateway's Provenance can target them in a transaction.
        """
        for index, entry in enumerate(self.entries):
            full_url = entry.get("fullUrl")
            if not isinstance(full_url, str) or not full_url:
                target = self.targets[index]
                if target is not None:  # so that the Provenance can target every entry
                    derived = uuid.uuid5(_FULL_URL_NAMESPACE, f"{self.client.id}\n{target}")
                    entry["fullUrl"] = f"urn:uuid:{derived}"
                continue
            self.original_full_urls[index] = full_url
            earlier = self.by_full_url.setdefault(full_url, index)
            if earlier != index:
                self.issues.append(
                    error(
                        "duplicate",
                        f"entries {earlier} and {index} have the same fullUrl",
                        f"Bundle.entry[{index}].fullUrl",
                    )
                )
                continue
            if full_url.startswith("urn:"):
                continue
            restful = _RESTFUL_URL.match(full_url)
            if restful is not None:
                self.by_restful[(restful["base"], restful["local"])] = index
            derived = uuid.uuid5(_FULL_URL_NAMESPACE, f"{self.client.id}\n{full_url}")
            entry["fullUrl"] = f"urn:uuid:{derived}"

    # -- references -------------------------------------------------------------------------

    def _references(self, index: int, resource: dict[str, Any]) -> None:
        original = self.original_full_urls[index]
        restful = _RESTFUL_URL.match(original) if original else None
        base = restful["base"] if restful is not None else None
        for holder, path in _reference_holders(resource):
            reference = holder["reference"]
            replacement = self._translate(reference, base)
            if replacement is None:
                self.issues.append(
                    error(
                        "not-found",
                        f"reference {reference!r} names no entry of this Bundle (a urn: "
                        "reference must be the fullUrl of an entry)",
                        f"Bundle.entry[{index}].resource{path}.reference",
                    )
                )
            elif replacement != reference:
                holder["reference"] = replacement

    def _translate(self, reference: str, base: str | None) -> str | None:
        """The reference inside the caller's space; ``None`` for a dangling ``urn:``."""
        target = self.by_full_url.get(reference)
        if target is None and base is not None:
            target = self.by_restful.get((base, reference))
        if target is not None:
            return self._entry_reference(target, reference)
        if reference.startswith("urn:"):
            return None
        match = _RELATIVE.match(reference)
        if match is None:
            return reference  # contained, conditional or absolute: the policy's
        resource_type = match["type"]
        resource_id = server_id(self.client, resource_type, match["id"])
        return f"{resource_type}/{resource_id}{match['history'] or ''}"

    def _entry_reference(self, index: int, reference: str) -> str:
        """How one entry refers to another: by fullUrl in a transaction, by final id in a batch."""
        if not self.batch:
            return str(self.entries[index].get("fullUrl") or reference)
        return self.targets[index] or reference


def _request_without_condition(request: dict[str, Any], method: str, url: str) -> dict[str, Any]:
    kept = {k: v for k, v in request.items() if k not in ("method", "url", "ifNoneExist")}
    return {"method": method, "url": url, **kept}


def _reference_holders(node: Any) -> Iterator[tuple[dict[str, Any], str]]:
    """Every object with a string ``reference`` (a FHIR Reference), with its path from the root.

    The path (``.subject``, ``.performer[0]``) is built only for what is yielded, from a stack
    kept during the walk, so a 10,000-entry Bundle costs one pass and no string per node.
    """
    stack: list[str] = []

    def walk(value: Any) -> Iterator[tuple[dict[str, Any], str]]:
        if isinstance(value, dict):
            if isinstance(value.get("reference"), str):
                yield value, "".join(stack)
            for key, child in value.items():
                if isinstance(child, dict | list):
                    stack.append(f".{key}")
                    yield from walk(child)
                    stack.pop()
        elif isinstance(value, list):
            for position, child in enumerate(value):
                if isinstance(child, dict | list):
                    stack.append(f"[{position}]")
                    yield from walk(child)
                    stack.pop()

    yield from walk(node)


def normalise_bundle(bundle: dict[str, Any], client: Client) -> list[Issue]:
    """Rewrite ``bundle`` in place into writes inside ``client``'s space; the 422 issues.

    Expects a Bundle that passed the structural checks (type, entries with a resource, a
    resourceType, a POST or PUT request whose URL names that type). Entries keep their
    order and index, so issues found later still point at what the client sent.
    """
    return _Normaliser(bundle, client).run()
