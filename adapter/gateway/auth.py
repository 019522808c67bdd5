"""Who is calling, and may they: API keys (stored hashed) and verified JWTs, each bound to a client.

Two credential kinds cover the deployments we meet: an integration engine configured with a
static key, and a hospital identity provider issuing SMART-style system tokens. Keys are
kept only as SHA-256 digests (the configuration may hold digests too, so plain keys need not
sit in a deployment manifest) and compared in constant time. JWTs are verified for
signature, issuer, audience and expiry.

Every credential acts as one client (``docs/authorization.md``): an API key as the client
whose key it is, a JWT as the client its subject is bound to, with the token's SMART scopes
intersected with the client's. The result is a :class:`Principal` carrying the gateway's own
scopes (``read``, ``write``, ``convert``, ``admin``), which is all the routes look at.

Failures are 401 with a ``WWW-Authenticate`` challenge (RFC 6750) and 403 for a valid
caller without the scope; both are OperationOutcomes like every other error.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from adapter.gateway.client_registry import ClientRegistry, load_registry
from adapter.gateway.clients import Client
from adapter.gateway.config import PREFIX, ConfigError, Settings
from adapter.gateway.outcomes import GatewayError, Issue

__all__ = [
    "READ_SCOPE",
    "WRITE_SCOPE",
    "Access",
    "Authenticator",
    "Principal",
    "hash_api_key",
    "scopes_grant",
]

Access = Literal["read", "write", "convert", "admin"]
SmartAccess = Literal["read", "write"]
READ_SCOPE = "system/*.read"
WRITE_SCOPE = "system/*.write"
REALM = "fhir-oncology-adapter"
_SCOPE = re.compile(r"^system/\*\.(?P<permission>[A-Za-z*]+)$")
_V2_ORDER = "cruds"
_HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``name`` identifies the credential (``api-key:<12 hex>``, ``jwt:<sub>``) in Provenance
    and audit lines; ``scopes`` are the gateway scopes it may use, already intersected with
    its client's.
    """

    name: str
    scopes: frozenset[str]
    client: Client | None = None
    """The sending system the credential is bound to (``docs/authorization.md``); ``None``
    for a verified JWT whose subject no client claims, which may only convert."""

    def can(self, access: Access) -> bool:
        """Whether the caller was granted the gateway scope ``access``."""
        return access in self.scopes


def hash_api_key(key: str) -> str:
    """Hex SHA-256 of a key; what ``sha256:<hex>`` entries in the environment contain."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def scopes_grant(scopes: Iterable[str], access: SmartAccess) -> bool:
    """SMART system scopes on all types: v1 ``system/*.read|write|*`` or v2 ``system/*.cruds``.

    Type-specific or query-restricted scopes do not count: the gateway's endpoints write
    and read several resource types at once. v2 write needs create and update (the gateway
    PUTs its Provenance); v2 read needs read and search.
    """
    for scope in scopes:
        match = _SCOPE.match(scope)
        if not match:
            continue
        permission = match.group("permission")
        if permission == "*" or permission == access:
            return True
        if set(permission) <= set(_V2_ORDER):
            needed = {"c", "u"} if access == "write" else {"r", "s"}
            if needed <= set(permission):
                return True
    return False


def granted_scopes(smart_scopes: Iterable[str], client: Client | None) -> frozenset[str]:
    """Gateway scopes of a JWT: its SMART scopes intersected with its client's.

    ``system/*.read`` grants ``read``, ``system/*.write`` grants ``write``, either grants
    ``convert``; ``admin`` comes from the client entry alone, and only to a token that may
    read (admin is a power to see). A token bound to no client may only convert.
    """
    smart = list(smart_scopes)
    granted: set[str] = set()
    if scopes_grant(smart, "read"):
        granted.add("read")
    if scopes_grant(smart, "write"):
        granted.add("write")
    if granted:
        granted.add("convert")
    if client is None:
        return frozenset(granted & {"convert"})
    effective = set(client.scopes) & granted
    if "admin" in client.scopes and "read" in granted:
        effective.add("admin")
    return frozenset(effective)


def _scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    """``scope`` is a space-separated string (RFC 8693/SMART); some IdPs send ``scp`` lists."""
    found: list[str] = []
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.extend(value.split())
        elif isinstance(value, list):
            found.extend(str(item) for item in value)
    return frozenset(found)


@dataclass(frozen=True)
class _JwtKey:
    key: Any
    algorithms: tuple[str, ...]


def _read_pem(value: str) -> bytes:
    """PEM text in the variable (``\\n`` escapes allowed, for one-line env files) or a path."""
    text = value.replace("\\n", "\n").strip()
    if text.startswith("-----BEGIN"):
        return text.encode("ascii")
    path = Path(value)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{PREFIX}JWT_PUBLIC_KEY is neither PEM text nor a readable file: {exc.strerror}"
        ) from None


def _public_key(value: str, configured: Sequence[str]) -> _JwtKey:
    """Load the key at startup and restrict algorithms to its family (no alg confusion)."""
    try:
        key = serialization.load_pem_public_key(_read_pem(value))
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}JWT_PUBLIC_KEY is not a PEM public key: {exc}") from None
    family: tuple[str, ...]
    if isinstance(key, rsa.RSAPublicKey):
        family = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        family = ("ES256", "ES384", "ES512")
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        family = ("EdDSA",)
    else:
        raise ConfigError(f"{PREFIX}JWT_PUBLIC_KEY: unsupported key type {type(key).__name__}")
    algorithms = tuple(a for a in configured if a in family) if configured else family
    if not algorithms:
        raise ConfigError(f"{PREFIX}JWT_ALGORITHMS allows none of {', '.join(family)} for this key")
    return _JwtKey(key, algorithms)


def _secret(value: str, configured: Sequence[str]) -> _JwtKey:
    if len(value.encode()) < 32:
        raise ConfigError(f"{PREFIX}JWT_SECRET must be at least 32 bytes (RFC 7518 3.2)")
    algorithms = tuple(a for a in configured if a in _HMAC_ALGORITHMS) if configured else ("HS256",)
    if not algorithms:
        raise ConfigError(f"{PREFIX}JWT_ALGORITHMS allows no HMAC algorithm for the secret")
    return _JwtKey(value, algorithms)


def _challenge(error: str | None = None, description: str | None = None, scope: str = "") -> str:
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{description}"')
    if scope:
        parts.append(f'scope="{scope}"')
    return "Bearer " + ", ".join(parts)


def unauthorized(diagnostics: str, error: str | None = "invalid_token") -> GatewayError:
    """401 with the RFC 6750 challenge; no error code when no credentials were sent at all."""
    challenge = _challenge(error, diagnostics if error else None)
    return GatewayError(
        401,
        Issue("error", "login", diagnostics),
        headers={"WWW-Authenticate": challenge},
    )


_SMART_HINT = {
    "read": READ_SCOPE,
    "write": WRITE_SCOPE,
    "convert": f"{READ_SCOPE} or {WRITE_SCOPE}",
}


def forbidden(access: Access | None, diagnostics: str | None = None) -> GatewayError:
    """403 naming the scope the caller lacks, so the fix is obvious to whoever reads it."""
    if diagnostics is None and access is None:
        diagnostics = "this credential is bound to no client (docs/authorization.md)"
    elif diagnostics is None:
        hint = _SMART_HINT.get(access or "")
        where = f"for a JWT: {hint}" if hint else "granted by the client entry only"
        diagnostics = f"this endpoint needs the {access} scope ({where})"
    smart_scope = {"read": READ_SCOPE, "write": WRITE_SCOPE}.get(access or "", "")
    return GatewayError(
        403,
        Issue("error", "forbidden", diagnostics),
        headers={"WWW-Authenticate": _challenge("insufficient_scope", None, smart_scope)},
    )


class Authenticator:
    """Checks bearer tokens against the clients' API keys and the JWT verification keys."""

    def __init__(self, settings: Settings, registry: ClientRegistry | None = None) -> None:
        self.registry = registry if registry is not None else load_registry(settings)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway
        keys: list[_JwtKey] = []
        if settings.jwt_public_key:
            keys.append(_public_key(settings.jwt_public_key, settings.jwt_algorithms))
        if settings.jwt_secret:
            keys.append(_secret(settings.jwt_secret, settings.jwt_algorithms))
        self._jwt_keys = tuple(keys)

    @property
    def configured(self) -> bool:
        """Whether any credential can succeed (otherwise every request is refused)."""
        return bool(self.registry.key_digests or self._jwt_keys)

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind an ``Authorization`` header, or a 401 GatewayError."""
        if not authorization:
            raise unauthorized("authentication required: send Authorization: Bearer <token>", None)
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized(
                "the Authorization header must be 'Bearer <token>'", "invalid_request"
            )
        if not self.configured:
            raise unauthorized("the gateway has no API keys or JWT keys configured")
        principal = self._api_key(token)
        if principal is not None:
            return principal
        if self._jwt_keys and token.count(".") == 2:
            return self._verify_jwt(token)
        raise unauthorized("unknown API key or invalid token")

    def _api_key(self, token: str) -> Principal | None:
        """Constant-time comparison against every digest, so timing reveals nothing."""
        presented = hashlib.sha256(token.encode("utf-8")).digest()
        matched: tuple[bytes, Client] | None = None
        for digest, client in self.registry.key_digests:
            if hmac.compare_digest(presented, digest):
                matched = (digest, client)
        if matched is None:
            return None
        digest, client = matched
        # A short digest prefix identifies the key in logs without revealing it.
        return Principal(f"api-key:{digest.hex()[:12]}", client.scopes, client)

    def _verify_jwt(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise unauthorized("malformed token") from None
        algorithm = header.get("alg")
        key = next((k for k in self._jwt_keys if algorithm in k.algorithms), None)
        if key is None:
            raise unauthorized("token signed with an algorithm this gateway does not accept")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=list(key.algorithms),
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("token expired") from None
        except jwt.InvalidAudienceError:
            raise unauthorized("token is not meant for this gateway (audience)") from None
        except jwt.InvalidIssuerError:
            raise unauthorized("token issuer is not trusted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise unauthorized(f"token lacks the {exc.claim} claim") from None
        except jwt.InvalidTokenError:
            raise unauthorized("token signature or claims are invalid") from None
        subject = claims.get("sub") or claims.get("client_id") or claims.get("azp")
        if not isinstance(subject, str) or not subject:
            raise unauthorized("token names no subject (sub)")
        client = self.registry.client_for_subject(subject)
        return Principal(f"jwt:{subject}", granted_scopes(_scopes_of(claims), client), client)

    @staticmethod
    def authorize(principal: Principal, access: Access) -> None:
        """403 unless the principal was granted ``access``."""
        if not principal.can(access):
            raise forbidden(access)
