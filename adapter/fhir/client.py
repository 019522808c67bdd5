"""FHIR REST client (sync and async) used by the CLI push/pull commands and the gateway.

Everything that does not touch the network (URL building, request bodies, result and
error interpretation, paging) lives in :class:`_FhirClientBase`, and the retry decisions
live in :class:`~adapter.fhir.retry.RetryController`; the two concrete clients only send
and sleep. That keeps :class:`FhirClient` and :class:`AsyncFhirClient` behaviourally
identical, which the gateway (async) and the CLI (sync) both depend on.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx

from .. import __version__
from .errors import (
    FhirError,
    JsonDict,
    dumps_json,
    loads_json,
    outcome_from_response,
    outcome_in_body,
    redact_url,
)
from .retry import RetryController, RetryPolicy

__all__ = [
    "FHIR_JSON",
    "AsyncFhirClient",
    "FhirClient",
    "SearchParams",
]

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
DEFAULT_CONNECT_TIMEOUT = 10.0
# Transactions carrying a whole oncology case can take the server tens of seconds, and a
# read timeout on a non-replay-safe transaction cannot be retried, so be generous.
TRANSACTION_READ_TIMEOUT = 60.0
# $validate answers with these when the resource is invalid; the outcome is the result.
_VALIDATION_RESULT_STATUSES = frozenset({200, 201, 400, 412, 422})

_RESOURCE_TYPE_RE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_ID_RE = re.compile(r"^(?=.*[A-Za-z0-9])[A-Za-z0-9\-.]{1,64}$")

_Scalar = str | int | float | bool
SearchParams = Mapping[str, _Scalar | Sequence[_Scalar]] | Sequence[tuple[str, _Scalar]] | None


@dataclass(frozen=True)
class _Call:
    """Everything needed to build one HTTP request, independent of sync/async."""

    method: str
    url: str
    params: tuple[tuple[str, str], ...] | None = None
    content: bytes | None = None
    headers: dict[str, str] | None = None
    timeout: httpx.Timeout | None = None
    idempotent: bool | None = None


def _coerce_timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    """A bare number applies to read/write/pool; connecting should fail fast regardless."""
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout, connect=min(float(timeout), DEFAULT_CONNECT_TIMEOUT))


def _transaction_timeout(timeout: httpx.Timeout) -> httpx.Timeout:
    read = timeout.read
    return httpx.Timeout(
        connect=timeout.connect,
        read=None if read is None else max(read, TRANSACTION_READ_TIMEOUT),
        write=timeout.write,
        pool=timeout.pool,
    )


def _format_scalar(value: _Scalar) -> str:
    """FHIR booleans are lowercase; Python's ``str(True)`` is not."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _query_items(params: SearchParams) -> tuple[tuple[str, str], ...]:
    """Flatten search params, keeping repeats: FHIR ANDs repeated parameters."""
    if params is None:
        return ()
    items: list[tuple[str, str]] = []
    if isinstance(params, Mapping):
        for name, value in params.items():
            if isinstance(value, str | int | float | bool):
                items.append((name, _format_scalar(value)))
            else:
                items.extend((name, _format_scalar(item)) for item in value)
    else:
        items.extend((name, _format_scalar(value)) for name, value in params)
    return tuple(items)


def _check_type(resource_type: str) -> str:
    """Reject anything that is not a resource type name before it is pasted into a URL."""
    if not isinstance(resource_type, str) or not _RESOURCE_TYPE_RE.match(resource_type):
        raise ValueError(f"invalid FHIR resource type: {resource_type!r}")
    return resource_type


def _check_id(resource_id: str) -> str:
    """FHIR ids are [A-Za-z0-9-.]{1,64}; enforcing it prevents path traversal via ids."""
    if not isinstance(resource_id, str) or not _ID_RE.match(resource_id):
        raise ValueError(f"invalid FHIR id: {resource_id!r}")
    return resource_id


def _resource_type_of(resource: Mapping[str, Any]) -> str:
    return _check_type(str(resource.get("resourceType", "")))


def _parse_body(response: httpx.Response) -> JsonDict:
    """Decode a successful response; an empty body (Prefer: return=minimal) is ``{}``."""
    if not response.content:
        return {}
    try:
        body = loads_json(response.content)
    except ValueError as exc:
        raise FhirError(
            f"HTTP {response.status_code} from {response.request.method} "
            f"{redact_url(response.request.url)} is not valid JSON: {exc}"
        ) from exc
    if not isinstance(body, dict):
        raise FhirError(
            f"HTTP {response.status_code} from {redact_url(response.request.url)}: "
            "expected a JSON object"
        )
    return body


def _check_ok(response: httpx.Response) -> httpx.Response:
    if not response.is_success:
        raise outcome_from_response(response)
    return response


def _result(response: httpx.Response) -> JsonDict:
    return _parse_body(_check_ok(response))


def _entry_resources(bundle: JsonDict) -> Iterator[JsonDict]:
    """Resources of a search page, minus search-mode 'outcome' entries (server warnings)."""
    for entry in bundle.get("entry") or []:
        if not isinstance(entry, dict):
            continue
        search = entry.get("search")
        if isinstance(search, dict) and search.get("mode") == "outcome":
            continue
        resource = entry.get("resource")
        if isinstance(resource, dict):
            yield resource


def _validation_result(response: httpx.Response) -> JsonDict:
    """Interpret a $validate answer: the OperationOutcome *is* the result, even on 4xx.

    Only the statuses servers use for "validated, found problems" are accepted this way;
    a 401/404/5xx OperationOutcome describes a failed call, not the resource, so it raises.
    """
    outcome = outcome_in_body(response)
    if outcome is not None and response.status_code in _VALIDATION_RESULT_STATUSES:
        return outcome
    body = _result(response)
    if body.get("resourceType") == "Parameters":
        for parameter in body.get("parameter") or []:
            if isinstance(parameter, dict) and parameter.get("name") == "return":
                resource = parameter.get("resource")
                if isinstance(resource, dict):
                    return resource
    if body.get("resourceType") != "OperationOutcome":
        raise FhirError(
            f"$validate returned {body.get('resourceType') or 'no resource'} "
            "instead of an OperationOutcome"
        )
    return body


class _FhirClientBase:
    """Request construction and response interpretation shared by both clients."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float | httpx.Timeout,
        retry: RetryPolicy | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        base = httpx.URL(base_url)
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError(f"base_url must be an absolute http(s) URL, got {base_url!r}")
        self.base_url = base.copy_with(path=base.path.rstrip("/") or "/", query=None)
        self.retry_policy = retry or RetryPolicy()
        self._timeout = _coerce_timeout(timeout)
        self._headers: dict[str, str] = {
            "Accept": FHIR_JSON,
            "User-Agent": f"fhir-oncology-adapter/{__version__}",
        }
        self._headers.update(headers or {})

    # -- URLs -------------------------------------------------------------------

    @property
    def _join_base(self) -> httpx.URL:
        """Base with a trailing slash, so relative links resolve under it, not beside it."""
        return httpx.URL(str(self.base_url).rstrip("/") + "/")

    def _url(self, *segments: str) -> str:
        return str(self._join_base.join("/".join(segments)))

    def _resolve_link(self, link: str) -> str:
        """Resolve a paging link, pinning it to our origin.

        Servers behind reverse proxies often advertise their internal host in Bundle links;
        following those would fail, or worse, send our bearer token to another origin.
        """
        target = self._join_base.join(link)
        base = self.base_url
        if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
            log.warning(
                "paging link %s is outside %s; rewriting it onto the configured origin",
                redact_url(target),
                redact_url(base),
            )
            target = target.copy_with(scheme=base.scheme, host=base.host, port=base.port)
        return str(target)

    # -- calls --------------------------------------------------------------------

    @staticmethod
    def _body_headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Content-Type": FHIR_JSON, "Prefer": "return=representation"}
        headers.update(extra or {})
        return headers

    def _capabilities_call(self) -> _Call:
        return _Call("GET", self._url("metadata"))

    def _read_call(self, resource_type: str, resource_id: str) -> _Call:
        return _Call("GET", self._url(_check_type(resource_type), _check_id(resource_id)))

    def _create_call(
        self, resource: Mapping[str, Any], if_none_exist: str | None, idempotent: bool | None
    ) -> _Call:
        extra: dict[str, str] = {}
        if if_none_exist:
            extra["If-None-Exist"] = if_none_exist.lstrip("?")
        return _Call(
            "POST",
            self._url(_resource_type_of(resource)),
            content=dumps_json(resource),
            headers=self._body_headers(extra),
            idempotent=idempotent,
        )

    def _update_call(self, resource: Mapping[str, Any], idempotent: bool | None) -> _Call:
        resource_type = _resource_type_of(resource)
        resource_id = resource.get("id")
        if not resource_id:
            raise ValueError("update needs a resource with an id; use create() otherwise")
        return _Call(
            "PUT",
            self._url(resource_type, _check_id(str(resource_id))),
            content=dumps_json(resource),
            headers=self._body_headers(),
            idempotent=idempotent,
        )

    def _bundle_call(
        self, bundle: Mapping[str, Any], bundle_type: str, idempotent: bool | None
    ) -> _Call:
        """POST a transaction/batch to the base URL (not ``/Bundle``, which would store it)."""
        if bundle.get("resourceType") != "Bundle":
            raise ValueError(f"{bundle_type} needs a Bundle resource")
        declared = bundle.get("type")
        if declared is None:
            bundle = {**bundle, "type": bundle_type}
        elif declared != bundle_type:
            raise ValueError(f"Bundle.type is {declared!r}, expected {bundle_type!r}")
        return _Call(
            "POST",
            str(self.base_url),
            content=dumps_json(bundle),
            headers=self._body_headers(),
            timeout=_transaction_timeout(self._timeout),
            idempotent=idempotent,
        )

    def _search_call(self, resource_type: str, params: SearchParams, no_cache: bool) -> _Call:
        return _Call(
            "GET",
            self._url(_check_type(resource_type)),
            params=_query_items(params),
            headers=self._cache_headers(no_cache),
        )

    def _everything_call(self, patient_id: str, params: SearchParams, no_cache: bool) -> _Call:
        return _Call(
            "GET",
            self._url("Patient", _check_id(patient_id), "$everything"),
            params=_query_items(params),
            headers=self._cache_headers(no_cache),
        )

    def _validate_call(
        self, resource: Mapping[str, Any], mode: str | None, profile: str | None
    ) -> _Call:
        """Send the bare resource unless mode/profile need the Parameters form."""
        resource_type = _resource_type_of(resource)
        body: Mapping[str, Any] = resource
        if mode is not None or profile is not None:
            parameters: list[JsonDict] = [{"name": "resource", "resource": dict(resource)}]
            if mode is not None:
                parameters.append({"name": "mode", "valueCode": mode})
            if profile is not None:
                parameters.append({"name": "profile", "valueUri": profile})
            body = {"resourceType": "Parameters", "parameter": parameters}
        return _Call(
            "POST",
            self._url(resource_type, "$validate"),
            content=dumps_json(body),
            headers={"Content-Type": FHIR_JSON},
        )

    @staticmethod
    def _cache_headers(no_cache: bool) -> dict[str, str] | None:
        """Some servers (HAPI) cache searches for a minute; pull-after-push needs fresh data."""
        return {"Cache-Control": "no-cache"} if no_cache else None

    def _next_call(
        self, bundle: JsonDict, seen: set[str], headers: dict[str, str] | None
    ) -> _Call | None:
        """Follow the Bundle's ``next`` link, refusing to loop on a server that repeats it."""
        for link in bundle.get("link") or []:
            if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
                url = self._resolve_link(str(link["url"]))
                if url in seen:
                    raise FhirError(f"paging loop: next link {redact_url(url)} already visited")
                seen.add(url)
                return _Call("GET", url, headers=headers)
        return None

    def _write_result(self, response: httpx.Response, resource_type: str) -> JsonDict:
        """Return the stored resource; fall back to Location when the server sent no body."""
        body = _result(response)
        if body:
            return body
        location = response.headers.get("Location") or response.headers.get("Content-Location")
        stub: JsonDict = {"resourceType": resource_type}
        if location:
            parts = [part for part in httpx.URL(location).path.split("/") if part]
            if "_history" in parts:
                index = parts.index("_history")
                if index + 1 < len(parts):
                    stub["meta"] = {"versionId": parts[index + 1]}
                parts = parts[:index]
            if len(parts) >= 2 and parts[-2] == resource_type:
                stub["id"] = parts[-1]
        return stub

    def _controller(self, request: httpx.Request, idempotent: bool | None) -> RetryController:
        return RetryController(
            self.retry_policy, request, idempotent=idempotent, base_url=self.base_url
        )


class FhirClient(_FhirClientBase):
    """Blocking FHIR client for the CLI and scripts.

    Non-2xx answers raise :class:`~adapter.fhir.errors.OperationOutcomeError`; connection
    failures raise :class:`~adapter.fhir.errors.FhirTransportError` once retries (where
    safe) are exhausted.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        timeout: float | httpx.Timeout = 30.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(base_url, timeout=timeout, retry=retry, headers=headers)
        self._http = httpx.Client(
            auth=auth, timeout=self._timeout, headers=self._headers, transport=transport
        )
        self._sleep = sleep or time.sleep

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self._http.close()

    def _send(self, call: _Call) -> httpx.Response:
        request = self._http.build_request(
            call.method,
            call.url,
            params=call.params or None,
            content=call.content,
            headers=call.headers,
            timeout=call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        controller = self._controller(request, call.idempotent)
        while True:
            try:
                response = self._http.send(request)
            except httpx.TransportError as exc:
                self._sleep(controller.after_exception(exc))
                continue
            delay = controller.after_response(response)
            if delay is None:
                return response
            response.close()
            self._sleep(delay)

    def _pages(self, call: _Call) -> Iterator[JsonDict]:
        seen: set[str] = set()
        next_call: _Call | None = call
        while next_call is not None:
            bundle = _result(self._send(next_call))
            yield bundle
            next_call = self._next_call(bundle, seen, call.headers)

    def capabilities(self) -> JsonDict:
        """Fetch the CapabilityStatement (``GET [base]/metadata``)."""
        return _result(self._send(self._capabilities_call()))

    def read(self, resource_type: str, id: str) -> JsonDict:
        """Read one resource by type and id."""
        return _result(self._send(self._read_call(resource_type, id)))

    def create(
        self,
        resource: Mapping[str, Any],
        *,
        if_none_exist: str | None = None,
        idempotent: bool | None = None,
    ) -> JsonDict:
        """Create a resource; ``if_none_exist`` (e.g. ``identifier=sys|1``) makes it conditional.

        Conditional creates are replay-safe and therefore retried on 502/503/504; plain
        creates are not, because a replay could duplicate the resource.
        """
        call = self._create_call(resource, if_none_exist, idempotent)
        return self._write_result(self._send(call), _resource_type_of(resource))

    def update(self, resource: Mapping[str, Any], *, idempotent: bool | None = None) -> JsonDict:
        """PUT a resource to ``[type]/[id]`` (create-or-update with client-assigned ids)."""
        call = self._update_call(resource, idempotent)
        return self._write_result(self._send(call), _resource_type_of(resource))

    def transaction(self, bundle: Mapping[str, Any], *, idempotent: bool | None = None) -> JsonDict:
        """Submit an all-or-nothing transaction Bundle and return the response Bundle."""
        return _result(self._send(self._bundle_call(bundle, "transaction", idempotent)))

    def batch(self, bundle: Mapping[str, Any], *, idempotent: bool | None = None) -> JsonDict:
        """Submit a batch Bundle; per-entry failures are in the response entries' status."""
        return _result(self._send(self._bundle_call(bundle, "batch", idempotent)))

    def search_bundles(
        self, resource_type: str, params: SearchParams = None, *, no_cache: bool = False
    ) -> Iterator[JsonDict]:
        """Yield each searchset page, following ``next`` links, for callers that need totals
        or included resources per page."""
        return self._pages(self._search_call(resource_type, params, no_cache))

    def search(
        self, resource_type: str, params: SearchParams = None, *, no_cache: bool = False
    ) -> Iterator[JsonDict]:
        """Yield matching (and included) resources across all pages, lazily."""
        for bundle in self.search_bundles(resource_type, params, no_cache=no_cache):
            yield from _entry_resources(bundle)

    def validate(
        self,
        resource: Mapping[str, Any],
        *,
        mode: str | None = None,
        profile: str | None = None,
    ) -> JsonDict:
        """Run ``[type]/$validate`` and return the OperationOutcome, whatever its verdict."""
        return _validation_result(self._send(self._validate_call(resource, mode, profile)))

    def everything(
        self, patient_id: str, params: SearchParams = None, *, no_cache: bool = False
    ) -> Iterator[JsonDict]:
        """Yield every resource in the patient compartment via ``$everything``, all pages."""
        for bundle in self._pages(self._everything_call(patient_id, params, no_cache)):
            yield from _entry_resources(bundle)


class AsyncFhirClient(_FhirClientBase):
    """Non-blocking twin of :class:`FhirClient` for the gateway; same methods, awaited."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        timeout: float | httpx.Timeout = 30.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(base_url, timeout=timeout, retry=retry, headers=headers)
        self._http = httpx.AsyncClient(
            auth=auth, timeout=self._timeout, headers=self._headers, transport=transport
        )
        self._sleep: Callable[[float], Awaitable[None]] = sleep or asyncio.sleep

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release pooled connections."""
        await self._http.aclose()

    async def _send(self, call: _Call) -> httpx.Response:
        request = self._http.build_request(
            call.method,
            call.url,
            params=call.params or None,
            content=call.content,
            headers=call.headers,
            timeout=call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        controller = self._controller(request, call.idempotent)
        while True:
            try:
                response = await self._http.send(request)
            except httpx.TransportError as exc:
                await self._sleep(controller.after_exception(exc))
                continue
            delay = controller.after_response(response)
            if delay is None:
                return response
            await response.aclose()
            await self._sleep(delay)

    async def _pages(self, call: _Call) -> AsyncIterator[JsonDict]:
        seen: set[str] = set()
        next_call: _Call | None = call
        while next_call is not None:
            bundle = _result(await self._send(next_call))
            yield bundle
            next_call = self._next_call(bundle, seen, call.headers)

    async def capabilities(self) -> JsonDict:
        """Fetch the CapabilityStatement (``GET [base]/metadata``)."""
        return _result(await self._send(self._capabilities_call()))

    async def read(self, resource_type: str, id: str) -> JsonDict:
        """Read one resource by type and id."""
        return _result(await self._send(self._read_call(resource_type, id)))

    async def create(
        self,
        resource: Mapping[str, Any],
        *,
        if_none_exist: str | None = None,
        idempotent: bool | None = None,
    ) -> JsonDict:
        """Create a resource; see :meth:`FhirClient.create` for the retry implications."""
        call = self._create_call(resource, if_none_exist, idempotent)
        return self._write_result(await self._send(call), _resource_type_of(resource))

    async def update(
        self, resource: Mapping[str, Any], *, idempotent: bool | None = None
    ) -> JsonDict:
        """PUT a resource to ``[type]/[id]``."""
        call = self._update_call(resource, idempotent)
        return self._write_result(await self._send(call), _resource_type_of(resource))

    async def transaction(
        self, bundle: Mapping[str, Any], *, idempotent: bool | None = None
    ) -> JsonDict:
        """Submit an all-or-nothing transaction Bundle and return the response Bundle."""
        return _result(await self._send(self._bundle_call(bundle, "transaction", idempotent)))

    async def batch(self, bundle: Mapping[str, Any], *, idempotent: bool | None = None) -> JsonDict:
        """Submit a batch Bundle; per-entry failures are in the response entries' status."""
        return _result(await self._send(self._bundle_call(bundle, "batch", idempotent)))

    def search_bundles(
        self, resource_type: str, params: SearchParams = None, *, no_cache: bool = False
    ) -> AsyncIterator[JsonDict]:
        """Async-iterate searchset pages, following ``next`` links."""
        return self._pages(self._search_call(resource_type, params, no_cache))

    async def search(
        self, resource_type: str, params: SearchParams = None, *, no_cache: bool = False
    ) -> AsyncIterator[JsonDict]:
        """Async-iterate matching (and included) resources across all pages."""
        async for bundle in self.search_bundles(resource_type, params, no_cache=no_cache):
            for resource in _entry_resources(bundle):
                yield resource

    async def validate(
        self,
        resource: Mapping[str, Any],
        *,
        mode: str | None = None,
        profile: str | None = None,
    ) -> JsonDict:
        """Run ``[type]/$validate`` and return the OperationOutcome, whatever its verdict."""
        call = self._validate_call(resource, mode, profile)
        return _validation_result(await self._send(call))

    async def everything(
        self, patient_id: str, params: SearchParams = None, *, no_cache: bool = False
    ) -> AsyncIterator[JsonDict]:
        """Async-iterate the patient compartment via ``$everything``, all pages."""
        async for bundle in self._pages(self._everything_call(patient_id, params, no_cache)):
            for resource in _entry_resources(bundle):
                yield resource
