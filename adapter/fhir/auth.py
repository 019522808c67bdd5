"""httpx authentication for FHIR servers: static bearer tokens and SMART Backend Services.

SMART Backend Services (client-credentials grant with a signed JWT assertion) is what
hospital FHIR endpoints expect from a system-to-system adapter: there is no user to log
in, and shared secrets are discouraged. The token request is yielded from inside httpx's
auth flow, so the same object works for ``httpx.Client`` and ``httpx.AsyncClient`` and
the token request goes through the same transport (proxies, TLS settings, test mocks).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .errors import AuthError, loads_json, redact_url

__all__ = [
    "DEFAULT_SCOPE",
    "AuthError",
    "BearerTokenAuth",
    "SmartBackendAuth",
]

DEFAULT_SCOPE = "system/*.read system/*.write"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# SMART Backend Services caps assertion lifetime at five minutes.
MAX_ASSERTION_LIFETIME = 300
# Used when a token response omits expires_in; SMART requires it, but be lenient.
DEFAULT_TOKEN_LIFETIME = 300.0
_TOKEN_REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class BearerTokenAuth(httpx.Auth):
    """Static bearer token, for sandboxes and tokens minted by an external process."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("token must not be empty")
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Set the header on every request (including retries, which re-run the flow)."""
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


@dataclass(frozen=True)
class _Token:
    access_token: str
    expires_at: float


def _load_signing_key(
    private_key_pem: str | bytes, algorithm: str | None
) -> tuple[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, str]:
    """Load the key once and pick the SMART algorithm that matches it.

    Deriving the algorithm from the key avoids a class of misconfiguration where an EC key
    is registered but RS384 is requested (or vice versa), which token endpoints report only
    as an opaque ``invalid_client``.
    """
    pem = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        detected = "RS384"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP384R1):
            raise ValueError(f"ES384 requires a P-384 key, got curve {key.curve.name}")
        detected = "ES384"
    else:
        raise ValueError(f"unsupported key type {type(key).__name__}; use RSA or EC P-384")
    if algorithm is not None and algorithm != detected:
        raise ValueError(f"algorithm {algorithm} does not match the key (expected {detected})")
    return key, detected


class SmartBackendAuth(httpx.Auth):
    """SMART Backend Services client-credentials auth with token caching.

    One token fetch is shared by all concurrent requests: a thread lock guards the sync
    flow and an asyncio lock the async flow, held across the token request so that a burst
    of requests at startup does not stampede the authorization server. A 401 from the FHIR
    server triggers exactly one refresh and resend, which covers tokens revoked or expired
    early server-side without looping on a genuinely unauthorized client.
    """

    requires_request_body = True  # the body must be replayable after a 401

    def __init__(
        self,
        token_url: str,
        client_id: str,
        private_key_pem: str | bytes,
        *,
        kid: str,
        scope: str = DEFAULT_SCOPE,
        algorithm: str | None = None,
        assertion_lifetime: int = MAX_ASSERTION_LIFETIME,
        expiry_skew: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not token_url or not client_id or not kid:
            raise ValueError("token_url, client_id and kid are required")
        self.token_url = token_url
        self.client_id = client_id
        self.kid = kid
        self.scope = scope
        self._key, self.algorithm = _load_signing_key(private_key_pem, algorithm)
        self._assertion_lifetime = max(1, min(assertion_lifetime, MAX_ASSERTION_LIFETIME))
        self._skew = expiry_skew
        self._clock = clock
        self._token: _Token | None = None
        self._thread_lock = threading.Lock()
        self._async_lock = asyncio.Lock()

    # -- pieces shared by both flows -------------------------------------------------

    def client_assertion(self) -> str:
        """Sign a fresh assertion; a new ``jti`` each time because servers reject replays."""
        now = int(self._clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "iat": now,
            "exp": now + self._assertion_lifetime,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(
            claims, self._key, algorithm=self.algorithm, headers={"kid": self.kid, "typ": "JWT"}
        )

    def _token_request(self, original: httpx.Request) -> httpx.Request:
        """Build the token request, inheriting the FHIR request's timeouts when it has any."""
        timeout = original.extensions.get("timeout") or _TOKEN_REQUEST_TIMEOUT.as_dict()
        return httpx.Request(
            "POST",
            self.token_url,
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": self.client_assertion(),
                "scope": self.scope,
            },
            headers={"Accept": "application/json"},
            extensions={"timeout": timeout},
        )

    def _current_token(self) -> _Token | None:
        token = self._token
        if token is None:
            return None
        if self._clock() >= token.expires_at:
            return None
        return token

    def _store_token(self, response: httpx.Response) -> _Token:
        """Parse the token response, raising AuthError with the server's own explanation."""
        body = _json_object(response)
        where = redact_url(self.token_url)
        if not response.is_success:
            error = _str_or_none(body.get("error"))
            description = _str_or_none(body.get("error_description"))
            detail = ": ".join(part for part in (error, description) if part)
            if not detail:
                detail = response.text[:200].strip() or "empty body"
            raise AuthError(
                f"token endpoint {where} returned HTTP {response.status_code}: {detail}",
                status_code=response.status_code,
                error=error,
                error_description=description,
            )
        access_token = body.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise AuthError(f"token endpoint {where} returned no access_token")
        token_type = str(body.get("token_type", "bearer"))
        if token_type.lower() != "bearer":
            raise AuthError(f"token endpoint {where} returned unsupported token_type {token_type}")
        try:
            lifetime = float(body.get("expires_in", DEFAULT_TOKEN_LIFETIME))
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME
        # Short-lived tokens would otherwise be "expired" on arrival and fetched per request.
        skew = min(self._skew, lifetime / 2)
        token = _Token(access_token=access_token, expires_at=self._clock() + lifetime - skew)
        self._token = token
        return token

    def _invalidate(self, token: _Token) -> None:
        """Drop ``token`` unless another request already replaced it with a fresh one."""
        if self._token is token:
            self._token = None

    @staticmethod
    def _authorize(request: httpx.Request, token: _Token) -> None:
        request.headers["Authorization"] = f"Bearer {token.access_token}"

    # -- flows ---------------------------------------------------------------------

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Blocking flow for ``httpx.Client``; see the class docstring for the locking."""
        request.read()
        with self._thread_lock:
            token = self._current_token()
            if token is None:
                token_response = yield self._token_request(request)
                token_response.read()
                token = self._store_token(token_response)
        self._authorize(request, token)
        response = yield request
        if response.status_code != 401:
            return
        with self._thread_lock:
            self._invalidate(token)
            fresh = self._current_token()
            if fresh is None:
                token_response = yield self._token_request(request)
                token_response.read()
                fresh = self._store_token(token_response)
        self._authorize(request, fresh)
        yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Non-blocking flow for ``httpx.AsyncClient``; mirrors :meth:`sync_auth_flow`."""
        await request.aread()
        async with self._async_lock:
            token = self._current_token()
            if token is None:
                token_response = yield self._token_request(request)
                await token_response.aread()
                token = self._store_token(token_response)
        self._authorize(request, token)
        response = yield request
        if response.status_code != 401:
            return
        async with self._async_lock:
            self._invalidate(token)
            fresh = self._current_token()
            if fresh is None:
                token_response = yield self._token_request(request)
                await token_response.aread()
                fresh = self._store_token(token_response)
        self._authorize(request, fresh)
        yield request


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = loads_json(response.content) if response.content else {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
