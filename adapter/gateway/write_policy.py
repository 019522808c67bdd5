"""What a client's (normalised) Bundle may not write: rules 3, 5, 6, 7 of ``docs/authorization.md``.

Runs after the normalisation step has rewritten the client's entries into its own space and
before the Bundle is validated, stamped and stored. It re-checks that space as well (every
``PUT Type/id`` and relative reference addresses an id the gateway assigned to this client),
so a Bundle that bypassed or outwitted normalisation still cannot touch another sender's data.

Every refusal is an issue located at the offending element (``Bundle.entry[3].request.url``);
one refused entry refuses the whole Bundle. Authorization refusals are 403, content ones 422;
a Bundle with both answers 403 with all of them. The walk is linear in the Bundle's size.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from adapter.gateway.client_registry import ClientRegistry
from adapter.gateway.clients import Client
from adapter.gateway.outcomes import GatewayError, Issue
from adapter.gateway.resource_types import refusal_reason

__all__ = [
    "ConditionError",
    "PolicyRefusal",
    "check_resource_types",
    "check_write_policy",
    "identifier_condition",
]

FORBIDDEN = 403
INVALID = 422
_METHODS = frozenset({"POST", "PUT"})
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_INTERNAL_PREFIXES = ("urn:uuid:", "urn:oid:")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


class ConditionError(ValueError):
    """A conditional URL that is not one ``identifier=system|value``."""


def _split_unescaped(text: str, separator: str) -> list[str]:
    """Split on ``separator`` where it is not backslash-escaped; escapes are kept."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    out: list[str] = []
    escaped = False
    for char in text:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def identifier_condition(query: str) -> tuple[str, str]:
    """``(system, value)`` of a condition that is exactly ``identifier=system|value``.

    Strict on purpose: one parameter, no modifier, no ``+`` or stray ``%`` (whose decoding
    servers disagree on), one unescaped ``|``, no unescaped ``,`` (an OR) or ``$``, and both
    parts non-empty (``system|`` would match every identifier of the system).
    """
    if "&" in query or ";" in query:
        raise ConditionError("a condition must be a single identifier=system|value")
    if "+" in query or "#" in query or _PERCENT.search(query):
        raise ConditionError("the condition must be percent-encoded, without '+' or '#'")
    name, separator, raw = query.partition("=")
    if unquote(name) != "identifier" or not separator:
        raise ConditionError(
            f"only identifier=system|value may be used as a condition, not {unquote(name)!r}"
        )
    value = unquote(raw)
    for special in (",", "$"):
        if len(_split_unescaped(value, special)) > 1:
            raise ConditionError(f"the identifier condition has an unescaped {special!r}")
    parts = _split_unescaped(value, "|")
    if len(parts) != 2:
        raise ConditionError("the identifier condition must be system|value")
    system, code = (_unescape(part) for part in parts)
    if not system or not code:
        raise ConditionError("the identifier condition needs both a system and a value")
    return system, code


@dataclass(frozen=True)
class PolicyRefusal:
    """Why a Bundle is refused: 403 when any issue is an authorization refusal, else 422."""

    status: int
    issues: tuple[Issue, ...]

    def error(self) -> GatewayError:
        """The refusal as the error the route raises."""
        return GatewayError(self.status, list(self.issues))


@dataclass
class _Checker:
    client: Client
    registry: ClientRegistry
    upstream: tuple[str, str] | None
    """(host, path) of the upstream base, lower-cased host, path without trailing slash."""
    found: list[tuple[int, Issue]]

    def refuse(self, status: int, diagnostics: str, where: str) -> None:
        code = "forbidden" if status == FORBIDDEN else "invalid"
        self.found.append((status, Issue("error", code, diagnostics, (where,))))

    # -- conditions, ids, references ----------------------------------------------------------

    def condition(self, query: str, where: str, what: str) -> None:
        try:
            system, _ = identifier_condition(query)
        except ConditionError as exc:
            self.refuse(FORBIDDEN, f"{what}: {exc}", where)
            return
        if self.registry.is_reserved(system) or not self.client.owns_system(system):
            self.refuse(
                FORBIDDEN,
                f"{what}: identifier system {system!r} is not one this client owns",
                where,
            )

    def server_id(self, resource_id: str, where: str, what: str) -> None:
        if not _ID.match(resource_id):
            self.refuse(INVALID, f"{what}: {resource_id!r} is not a FHIR id", where)
        elif not self.client.owns_server_id(resource_id):
            self.refuse(
                FORBIDDEN,
                f"{what}: id {resource_id!r} was not assigned by the gateway to this client",
                where,
            )

    def upstream_url(self, url: str) -> bool:
        """Whether an absolute URL points into the upstream server's base."""
        if self.upstream is None:
            return False
        try:
            parts = urlsplit(url)
        except ValueError:
            return False
        host, path = self.upstream
        return (parts.hostname or "").lower() == host and (parts.path.rstrip("/") + "/").startswith(
            path + "/"
        )

    def reference(self, reference: str, where: str) -> None:
        if reference.startswith("#") or reference.startswith(_INTERNAL_PREFIXES):
            return
        scheme = _SCHEME.match(reference)
        if scheme:
            if scheme.group(0).lower() not in ("http:", "https:"):
                self.refuse(INVALID, f"{reference!r} is not a reference accepted here", where)
            elif self.upstream_url(reference):
                self.refuse(
                    FORBIDDEN,
                    "absolute references to the upstream server are not accepted; use a "
                    "relative reference to a resource of this client",
                    where,
                )
            return
        if "?" in reference:
            resource_type, _, query = reference.partition("?")
            if not _TYPE.match(resource_type):
                self.refuse(INVALID, f"{resource_type!r} is not a resource type", where)
            else:
                self.condition(query, where, "conditional reference")
            return
        segments = reference.split("/")
        if len(segments) == 4 and segments[2] == "_history":
            segments = segments[:2]
        if len(segments) != 2 or not _TYPE.match(segments[0]):
            self.refuse(INVALID, f"{reference!r} is not a reference accepted here", where)
            return
        self.server_id(segments[1], where, "reference")

    # -- entries --------------------------------------------------------------------------

    def request(self, request: dict[str, Any], where: str) -> None:
        method = request.get("method")
        url = request.get("url")
        if method not in _METHODS:
            self.refuse(
                FORBIDDEN,
                f"request.method {method!r} is not allowed: a client may only create and "
                "update (POST, PUT)",
                f"{where}.method",
            )
            return
        if not isinstance(url, str):
            return  # the structural checks report it
        url_where = f"{where}.url"
        if _SCHEME.match(url):
            status = FORBIDDEN if self.upstream_url(url) else INVALID
            self.refuse(status, "request.url must be relative (Type, Type/id)", url_where)
            return
        path, question, query = url.partition("?")
        segments = path.split("/")
        if not _TYPE.match(segments[0]):
            self.refuse(INVALID, f"request.url {url!r} does not start with a type", url_where)
            return
        if method == "PUT":
            if question:
                if len(segments) != 1:
                    self.refuse(INVALID, "a conditional update is Type?identifier=...", url_where)
                else:
                    self.condition(query, url_where, "conditional update")
            elif len(segments) != 2:
                self.refuse(INVALID, "a PUT's request.url must be Type/id", url_where)
            else:
                self.server_id(segments[1], url_where, "PUT")
        elif question or len(segments) != 1:
            self.refuse(INVALID, "a POST's request.url must be the resource type alone", url_where)
        if_none_exist = request.get("ifNoneExist")
        if if_none_exist is not None:
            if not isinstance(if_none_exist, str):
                self.refuse(INVALID, "ifNoneExist must be a string", f"{where}.ifNoneExist")
            else:
                self.condition(if_none_exist.lstrip("?"), f"{where}.ifNoneExist", "ifNoneExist")

    def resource_type(self, resource: dict[str, Any], where: str) -> None:
        issue = _type_refusal(resource, where)
        if issue is not None:
            self.found.append((FORBIDDEN, issue))

    def identifiers(self, resource: dict[str, Any], where: str) -> None:
        value = resource.get("identifier")
        items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
        for index, identifier in enumerate(items):
            if not isinstance(identifier, dict):
                continue
            system = identifier.get("system")
            if not isinstance(system, str):
                continue
            path = (
                f"{where}.identifier[{index}].system"
                if isinstance(value, list)
                else f"{where}.identifier.system"
            )
            if self.registry.is_reserved(system):
                self.refuse(FORBIDDEN, f"identifier system {system!r} is the gateway's", path)
                continue
            owner = self.registry.owner_of(system)
            if owner is not None and owner.id != self.client.id:
                self.refuse(
                    FORBIDDEN,
                    f"identifier system {system!r} belongs to another client",
                    path,
                )

    def resource(self, resource: dict[str, Any], where: str) -> None:
        self.resource_type(resource, where)
        self.identifiers(resource, where)
        contained = resource.get("contained")
        if isinstance(contained, list):
            for index, inner in enumerate(contained):
                if isinstance(inner, dict):
                    self.resource_type(inner, f"{where}.contained[{index}]")
                    self.identifiers(inner, f"{where}.contained[{index}]")
        for reference, path in _references(resource, where):
            self.reference(reference, path)

    def entry(self, index: int, entry: Any) -> None:
        where = f"Bundle.entry[{index}]"
        if not isinstance(entry, dict):
            return
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and self.upstream_url(full_url):
            self.refuse(
                FORBIDDEN, "fullUrl may not name a resource on the upstream", f"{where}.fullUrl"
            )
        request = entry.get("request")
        if isinstance(request, dict):
            self.request(request, f"{where}.request")
        resource = entry.get("resource")
        if isinstance(resource, dict):
            self.resource(resource, f"{where}.resource")


def _type_refusal(resource: dict[str, Any], where: str) -> Issue | None:
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return None
    reason = refusal_reason(resource_type)
    if reason is None:
        return None
    return Issue(
        "error",
        "forbidden",
        f"{resource_type} may not be written by a client: {reason}",
        (f"{where}.resourceType",),
    )


def _references(node: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every ``Reference.reference`` string under ``node`` with its path (iterative walk)."""
    stack: list[tuple[Any, str]] = [(node, where)]
    children: list[tuple[Any, str]] = []
    while stack:
        current, path = stack.pop()
        if isinstance(current, dict):
            reference = current.get("reference")
            if isinstance(reference, str):
                yield reference, f"{path}.reference"
            for key, value in current.items():
                if isinstance(value, dict | list):
                    children.append((value, f"{path}.{key}"))
        elif isinstance(current, list):
            for index, value in enumerate(current):
                if isinstance(value, dict | list):
                    children.append((value, f"{path}[{index}]"))
        stack.extend(reversed(children))  # document order
        children.clear()


def _upstream(base: str | None) -> tuple[str, str] | None:
    if not base:
        return None
    parts = urlsplit(base)
    return (parts.hostname or "").lower(), parts.path.rstrip("/")


def check_resource_types(bundle: dict[str, Any]) -> PolicyRefusal | None:
    """403 for every entry (or contained resource) of a type no client may write (rule 7).

    Run before the structural checks and normalisation: a forbidden type is an authorization
    refusal whatever else is wrong with the entry, and the caller hears it as such.
    """
    found: list[Issue] = []
    entries = bundle.get("entry")
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        where = f"Bundle.entry[{index}].resource"
        contained = resource.get("contained")
        inner = contained if isinstance(contained, list) else []
        for node, path in [
            (resource, where),
            *((c, f"{where}.contained[{i}]") for i, c in enumerate(inner)),
        ]:
            issue = _type_refusal(node, path) if isinstance(node, dict) else None
            if issue is not None:
                found.append(issue)
    return PolicyRefusal(FORBIDDEN, tuple(found)) if found else None


def check_write_policy(
    bundle: dict[str, Any],
    *,
    client: Client,
    registry: ClientRegistry,
    upstream_base: str | None,
) -> PolicyRefusal | None:
    """Every reason the client may not write this (normalised) Bundle, or ``None``."""
    checker = _Checker(client, registry, _upstream(upstream_base), [])
    entries = bundle.get("entry")
    if isinstance(entries, list):
        for index, entry in enumerate(entries):
            checker.entry(index, entry)
    if not checker.found:
        return None
    status = FORBIDDEN if any(s == FORBIDDEN for s, _ in checker.found) else INVALID
    return PolicyRefusal(status, tuple(issue for _, issue in checker.found))
