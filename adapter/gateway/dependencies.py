"""FastAPI dependencies: the running gateway, the authenticated caller, the request body.

Authentication runs as a dependency, so it is resolved before the handler touches the body:
an unauthenticated caller learns nothing about what the gateway would have thought of its
data. The body is read by :func:`read_body` inside handlers, after authentication, with the
size limit enforced both on ``Content-Length`` and on the bytes actually received (a
chunked upload has no Content-Length, and a lying one must not get past the limit).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from adapter.gateway.audit import audit_record
from adapter.gateway.auth import Access, Principal, forbidden
from adapter.gateway.outcomes import GatewayError, error
from adapter.gateway.runtime import Gateway

__all__ = [
    "ACCEPTED_MEDIA_TYPES",
    "AnyPrincipal",
    "GatewayDep",
    "ReadPrincipal",
    "WritePrincipal",
    "get_gateway",
    "read_body",
]

ACCEPTED_MEDIA_TYPES = frozenset({"application/json", "application/fhir+json"})


def get_gateway(request: Request) -> Gateway:
    """The gateway built by the lifespan; 503 if the app was not started through it."""
    gateway = getattr(request.app.state, "gateway", None)
    if not isinstance(gateway, Gateway):
        raise GatewayError(503, error("transient", "the gateway is not started"))
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def _authenticate(request: Request, gateway: Gateway) -> Principal:
    principal = gateway.authenticator.authenticate(request.headers.get("authorization"))
    record = audit_record(request.scope)
    if record is not None:
        record.principal = principal.name
    return principal


def _requiring(access: Access | None) -> Any:
    def dependency(request: Request, gateway: GatewayDep) -> Principal:
        principal = _authenticate(request, gateway)
        if access is not None:
            gateway.authenticator.authorize(principal, access)
        elif not (principal.can("read") or principal.can("write")):
            raise forbidden("read")
        return principal

    dependency.__doc__ = f"Authenticated caller with {access or 'read or write'} access."
    return Depends(dependency)


WritePrincipal = Annotated[Principal, _requiring("write")]
ReadPrincipal = Annotated[Principal, _requiring("read")]
AnyPrincipal = Annotated[Principal, _requiring(None)]


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


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, after the media-type (415) and size (413) checks."""
    _media_type(request)
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
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)
