"""FastAPI dependencies: the running gateway, the authenticated caller, the request body.

Authentication runs as a dependency, so it is resolved before the handler touches the body:
an unauthenticated caller learns nothing about what the gateway would have thought of its
data. Each endpoint names the gateway scope it needs (``docs/authorization.md``); the
per-credential and failed-authentication rate limits are applied here too. The body is read
by :func:`read_body` inside handlers, after authentication, with the size limit enforced both
on ``Content-Length`` and on the bytes actually received (a chunked upload has no
Content-Length, and a lying one must not get past the limit), and a deadline on its arrival.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.requests import ClientDisconnect

from adapter.gateway.audit import audit_record
from adapter.gateway.auth import Access, Principal, forbidden
from adapter.gateway.http_guards import client_address
from adapter.gateway.outcomes import ClientGone, GatewayError, error
from adapter.gateway.rate_limit import too_many_requests
from adapter.gateway.runtime import Gateway

__all__ = [
    "ACCEPTED_MEDIA_TYPES",
    "AnyPrincipal",
    "ClientPrincipal",
    "ConvertPrincipal",
    "GatewayDep",
    "OptionalPrincipal",
    "ReadPrincipal",
    "RespondAsync",
    "WritePrincipal",
    "get_gateway",
    "optional_principal",
    "prefers_respond_async",
    "read_body",
]

ACCEPTED_MEDIA_TYPES = frozenset({"application/json", "application/fhir+json"})


async def get_gateway(request: Request) -> Gateway:
    """The gateway built by the lifespan; 503 if the app was not started through it.

    The dependencies here are ``async def`` although they never await: FastAPI runs a plain
    ``def`` dependency on its thread pool, a hop of its own for each (three per request), and
    what they do is bounded and in memory (a SHA-256 and constant-time compares, or one JWT
    signature check on a header the HTTP server already limits; token buckets), so it may run
    on the event loop.
    """
    gateway = getattr(request.app.state, "gateway", None)
    if not isinstance(gateway, Gateway):
        raise GatewayError(503, error("transient", "the gateway is not started"))
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def _authenticate(request: Request, gateway: Gateway) -> Principal:
    """The caller, after the limits: a blocked address is refused before its credential is
    even looked at, so a guesser learns nothing more once it is blocked."""
    limits = gateway.limits
    address = client_address(request.scope)
    wait = limits.auth_failures.wait(address)
    if wait:
        raise too_many_requests(wait, "after failed authentications from this address")
    header = request.headers.get("authorization")
    try:
        principal = gateway.authenticator.authenticate(header)
    except GatewayError as exc:
        if exc.status_code == 401 and header:
            limits.auth_failures.spend(address)
        raise
    record = audit_record(request.scope)
    if record is not None:
        record.principal = principal.name
        record.client = principal.client.id if principal.client else None
    wait = limits.credential.take(principal.name)
    if wait:
        raise too_many_requests(wait, "for this credential")
    return principal


def _requiring(access: Access | None, *, bound: bool) -> Any:
    async def dependency(request: Request, gateway: GatewayDep) -> Principal:
        principal = _authenticate(request, gateway)
        if bound and principal.client is None:
            raise forbidden(None)
        if access is not None:
            gateway.authenticator.authorize(principal, access)
        return principal

    what = f"the {access} scope" if access else "any scope"
    dependency.__doc__ = f"Authenticated caller with {what}" + (
        ", bound to a client." if bound else "."
    )
    return Depends(dependency)


WritePrincipal = Annotated[Principal, _requiring("write", bound=True)]
ReadPrincipal = Annotated[Principal, _requiring("read", bound=True)]
ConvertPrincipal = Annotated[Principal, _requiring("convert", bound=False)]
ClientPrincipal = Annotated[Principal, _requiring(None, bound=True)]
AnyPrincipal = Annotated[Principal, _requiring(None, bound=False)]


async def optional_principal(request: Request, gateway: GatewayDep) -> Principal | None:
    """The caller if it sent valid credentials, else ``None`` (for public endpoints that
    show more to some callers); failed attempts still count against the address."""
    if not request.headers.get("authorization"):
        return None
    try:
        return _authenticate(request, gateway)
    except GatewayError:
        return None


OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]


async def prefers_respond_async(request: Request) -> bool:
    """Whether the request carries ``Prefer: respond-async`` (RFC 7240).

    FHIR's asynchronous request pattern (hl7.org/fhir/async-bundle.html) starts with this
    preference; a push that asks for it is answered 202 as soon as it is durably queued,
    and the outbox delivers it. Preferences are a comma-separated list of ``token[=value]``
    with ``;`` parameters, tokens case-insensitive; any other preference is ignored, as RFC
    7240 asks of a server that does not apply it.
    """
    for header in request.headers.getlist("prefer"):
        for preference in header.split(","):
            token = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
            if token == "respond-async":
                return True
    return False


RespondAsync = Annotated[bool, Depends(prefers_respond_async)]


def _media_type(request: Request) -> None:
    """415 unless the body is declared JSON or FHIR JSON, in UTF-8 (FHIR requires UTF-8)."""
    header = request.headers.get("content-type")
    if not header:
        raise GatewayError(
            415,
            error("not-supported", "Content-Type is missing: send application/fhir+json"),
        )
    media_type, *params = (part.strip() for part in header.split(";"))
    if media_type.lower() not in ACCEPTED_MEDIA_TYPES:
        raise GatewayError(
            415,
            error(
                "not-supported",
                f"unsupported Content-Type {media_type!r}: send application/fhir+json "
                "or application/json",
            ),
        )
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise GatewayError(415, error("not-supported", "only charset=utf-8 is accepted"))


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        error(
            "too-long",
            f"the body exceeds the limit of {limit} bytes (FHIR_ADAPTER_MAX_BODY_BYTES): send "
            "the resources in several smaller Bundles, or ask the gateway's operator to raise "
            "the limit",
            "$",
        ),
    )


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The whole body, after the media-type (415) and size (413) checks.

    A body that takes longer than ``timeout`` seconds to arrive gets 408 (a slow-body client
    must not hold a connection and a worker forever); a client that disconnects mid-body
    ends the request without an answer and without an error in the log.
    """
    _media_type(request)
    if timeout is None:
        gateway = getattr(request.app.state, "gateway", None)
        timeout = gateway.settings.body_timeout if isinstance(gateway, Gateway) else None
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise GatewayError(400, error("structure", "Content-Length is not a number")) from None
        if length > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    received = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise GatewayError(
            408,
            error("timeout", f"the request body did not arrive within {timeout:g} s"),
            headers={"Connection": "close"},
        ) from None
    except ClientDisconnect:
        raise ClientGone() from None
    return b"".join(chunks)
