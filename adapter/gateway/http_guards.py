"""ASGI middleware that every response passes: security headers and the per-address limit.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware`` so that nothing buffers bodies or
changes how disconnects propagate.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapter.gateway.rate_limit import TokenBuckets, too_many_requests

__all__ = [
    "SECURITY_HEADERS",
    "UNLIMITED_PATHS",
    "AddressLimitMiddleware",
    "SecurityHeadersMiddleware",
    "client_address",
]

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    # Responses carry patient data (records, bundles, submissions): no cache may keep them.
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz"})
"""Orchestrator probes: never throttled, or a busy gateway would be restarted for it."""


def client_address(scope: Scope) -> str:
    """The caller's address (the proxy's ``X-Forwarded-For`` once uvicorn trusts the proxy)."""
    client = scope.get("client")
    if client and client[0]:
        return str(client[0])
    return "unknown"


class SecurityHeadersMiddleware:
    """Adds :data:`SECURITY_HEADERS` to every HTTP response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                headers = list(message.get("headers", []))
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class AddressLimitMiddleware:
    """429 with ``Retry-After`` for an address over its request rate (health probes exempt)."""

    def __init__(self, app: ASGIApp, buckets: TokenBuckets) -> None:
        self.app = app
        self.buckets = buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") not in UNLIMITED_PATHS:
            wait = self.buckets.take(client_address(scope))
            if wait:
                response = too_many_requests(wait, "from this address").response()
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
