"""The configured sending systems and which credential belongs to which.

Clients come from the JSON file named by ``FHIR_ADAPTER_CLIENTS``; the older
``FHIR_ADAPTER_API_KEYS`` adds one client, ``default``, whose keys are rotations of one
sender's key (``docs/authorization.md``). Everything that would make "the caller's own" ambiguous
is refused here, at startup, with a :class:`ConfigError` naming the variable: two clients owning
the same identifier system (or one a prefix of the other's), one key or JWT subject bound to two
clients, keys too short to resist guessing, plain keys in the clients file outside development.

The registry is immutable and shared by the authenticator (credential → client) and the write
policy (identifier system → owning client).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from adapter.gateway.clients import SCOPES, Client
from adapter.gateway.config import PREFIX, ConfigError, Settings

__all__ = [
    "API_KEYS_VARIABLE",
    "CLIENTS_VARIABLE",
    "DEFAULT_CLIENT_ID",
    "MIN_KEY_BITS",
    "ClientRegistry",
    "estimated_key_bits",
    "key_digest",
    "load_registry",
]

CLIENTS_VARIABLE = f"{PREFIX}CLIENTS"
API_KEYS_VARIABLE = f"{PREFIX}API_KEYS"
DEFAULT_CLIENT_ID = "default"
DEFAULT_CLIENT_SCOPES = frozenset({"read", "write", "convert"})
MIN_KEY_BITS = 128
"""Keys below this estimated strength are refused: guessing stays out of reach even without
the rate limit (``secrets.token_urlsafe(32)`` gives 256 bits)."""

_HASH_PREFIX = "sha256:"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_CLIENT_FIELDS = frozenset(
    {"id", "scopes", "namespace", "identifier_systems", "api_keys", "jwt_subjects", "description"}
)
# Characters with a meaning in FHIR search values; a system containing one could not be
# matched exactly in an ``identifier=system|value`` condition.
_SEARCH_SPECIAL = frozenset("\\,|$")
_HEX = frozenset(string.hexdigits)


def estimated_key_bits(key: str) -> float:
    """Strength of a key by its length and the character classes it draws from.

    The usual pool estimate: hex digits only count 4 bits a character, otherwise each class
    used (lower case, upper case, digits, anything else) adds its size to the pool. A key made
    of one repeated character counts as nothing. It is an upper bound for keys a person chose,
    and exact for keys from ``secrets.token_hex`` / ``token_urlsafe``.
    """
    if len(set(key)) < 2:
        return 0.0
    if set(key) <= _HEX:
        return 4.0 * len(key)
    pool = 0
    if any(c in string.ascii_lowercase for c in key):
        pool += 26
    if any(c in string.ascii_uppercase for c in key):
        pool += 26
    if any(c in string.digits for c in key):
        pool += 10
    if any(not c.isascii() or not c.isalnum() for c in key):
        pool += 33
    return len(key) * math.log2(pool)


def key_digest(entry: str, *, variable: str, allow_plain: bool, allow_weak: bool) -> bytes:
    """The SHA-256 digest a configured key entry stands for (plain keys are hashed here).

    ``sha256:<hex>`` entries cannot be measured; plain ones are refused below
    :data:`MIN_KEY_BITS` unless ``allow_weak`` (development).
    """
    if entry.startswith(_HASH_PREFIX):
        hex_digest = entry[len(_HASH_PREFIX) :]
        if not _HEX64.match(hex_digest):
            raise ConfigError(f"{variable}: a sha256: entry needs the 64 hex digits of the SHA-256")
        return bytes.fromhex(hex_digest)
    if not allow_plain:
        raise ConfigError(
            f"{variable}: plain API keys are accepted in development only "
            f"({PREFIX}DEVELOPMENT=true); give sha256:<hex of the key's SHA-256>"
        )
    bits = estimated_key_bits(entry)
    if bits < MIN_KEY_BITS and not allow_weak:
        raise ConfigError(
            f"{variable}: an API key has about {bits:.0f} bits; at least {MIN_KEY_BITS} are "
            "required (for example: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return hashlib.sha256(entry.encode("utf-8")).digest()


@dataclass(frozen=True)
class _Claim:
    """One identifier system (or prefix, ending in ``/``) a client owns."""

    client: str
    system: str

    @property
    def is_prefix(self) -> bool:
        return self.system.endswith("/")

    def overlaps(self, other: _Claim) -> bool:
        if self.is_prefix and other.is_prefix:
            return self.system.startswith(other.system) or other.system.startswith(self.system)
        if self.is_prefix:
            return other.system.startswith(self.system)
        if other.is_prefix:
            return self.system.startswith(other.system)
        return self.system == other.system


def _claims(client: Client) -> list[_Claim]:
    return [_Claim(client.id, client.namespace_prefix)] + [
        _Claim(client.id, system) for system in client.identifier_systems
    ]


@dataclass(frozen=True)
class ClientRegistry:
    """Every client, the credentials bound to each, and who owns which identifier system."""

    clients: tuple[Client, ...] = ()
    key_digests: tuple[tuple[bytes, Client], ...] = ()
    jwt_subjects: Mapping[str, Client] = field(default_factory=dict)
    reserved_prefixes: tuple[str, ...] = ()
    """Identifier systems of the gateway itself (its Provenance); no client may write them."""

    def client(self, client_id: str) -> Client | None:
        """The client with this id."""
        return next((c for c in self.clients if c.id == client_id), None)

    def client_for_subject(self, subject: str) -> Client | None:
        """The client a JWT subject acts as, or ``None`` (unbound: ``$convert`` only)."""
        return self.jwt_subjects.get(subject)

    def owner_of(self, system: str) -> Client | None:
        """The client owning identifier ``system``; overlaps are refused, so at most one."""
        return next((c for c in self.clients if c.owns_system(system)), None)

    def is_reserved(self, system: str) -> bool:
        """Whether ``system`` is one the gateway writes in its own Provenance."""
        return any(system.startswith(prefix) for prefix in self.reserved_prefixes)


def _fail(detail: str) -> ConfigError:
    return ConfigError(f"{CLIENTS_VARIABLE}: {detail}")


def _string_list(entry: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(f"{where}: {key} must be a list of non-empty strings")
    return list(value)


def _check_system(system: str, variable: str, where: str) -> None:
    """An absolute URI with nothing FHIR search would read as syntax."""
    if any(c in _SEARCH_SPECIAL or c.isspace() for c in system):
        raise ConfigError(
            f"{variable}: {where}: {system!r} contains a character FHIR search treats as "
            "syntax (\\ , | $) or white space"
        )
    parts = urlsplit(system)
    if parts.scheme in ("http", "https"):
        if not parts.netloc or parts.query or parts.fragment:
            raise ConfigError(f"{variable}: {where}: {system!r} is not an absolute URL")
    elif parts.scheme != "urn":
        raise ConfigError(f"{variable}: {where}: {system!r} must be an http(s) URL or a urn:")


def _check_namespace(namespace: str, variable: str, where: str) -> None:
    _check_system(namespace, variable, where)
    if urlsplit(namespace).scheme not in ("http", "https"):
        raise ConfigError(f"{variable}: {where}: the namespace must be an http(s) URL")


@dataclass
class _Builder:
    settings: Settings
    clients: list[Client] = field(default_factory=list)
    keys: list[tuple[bytes, Client]] = field(default_factory=list)
    subjects: dict[str, Client] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    """Client id → the variable that defined it (for error messages)."""

    def add(
        self,
        client: Client,
        keys: Iterable[bytes],
        subjects: Iterable[str],
        variable: str,
    ) -> None:
        if client.id in self.variables:
            raise ConfigError(
                f"{variable}: client id {client.id!r} is defined twice "
                f"(also by {self.variables[client.id]})"
            )
        for digest in keys:
            other = next((c for d, c in self.keys if d == digest), None)
            if other is not None:
                raise ConfigError(
                    f"{variable}: one API key is bound to both {other.id!r} and {client.id!r}"
                )
            self.keys.append((digest, client))
        for subject in subjects:
            if subject in self.subjects:
                raise ConfigError(
                    f"{variable}: JWT subject {subject!r} is bound to both "
                    f"{self.subjects[subject].id!r} and {client.id!r}"
                )
            self.subjects[subject] = client
        self.clients.append(client)
        self.variables[client.id] = variable

    def check_overlaps(self) -> None:
        claims = [claim for client in self.clients for claim in _claims(client)]
        for index, claim in enumerate(claims):
            for other in claims[index + 1 :]:
                if claim.client != other.client and claim.overlaps(other):
                    variables = sorted({self.variables[claim.client], self.variables[other.client]})
                    raise ConfigError(
                        f"{' and '.join(variables)}: clients {claim.client!r} and "
                        f"{other.client!r} both own identifier systems under "
                        f"{min(claim.system, other.system, key=len)!r}: each system must "
                        "have one owner"
                    )


def _client_entry(entry: Any, index: int, builder: _Builder) -> None:
    where = f"clients[{index}]"
    if not isinstance(entry, dict):
        raise _fail(f"{where} must be an object")
    unknown = set(entry) - _CLIENT_FIELDS
    if unknown:
        raise _fail(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    client_id = entry.get("id")
    if not isinstance(client_id, str):
        raise _fail(f"{where}: id is required")
    where = f"client {client_id!r}"
    namespace = entry.get("namespace")
    if not isinstance(namespace, str) or not namespace:
        raise _fail(f"{where}: namespace is required")
    _check_namespace(namespace, CLIENTS_VARIABLE, where)
    scopes = _string_list(entry, "scopes", where)
    unknown_scopes = set(scopes) - SCOPES
    if unknown_scopes:
        raise _fail(
            f"{where}: unknown scope(s) {', '.join(sorted(unknown_scopes))} "
            f"(known: {', '.join(sorted(SCOPES))})"
        )
    systems = _string_list(entry, "identifier_systems", where)
    for system in systems:
        _check_system(system, CLIENTS_VARIABLE, where)
    try:
        client = Client(client_id, frozenset(scopes), namespace, tuple(systems))
    except ValueError as exc:
        raise _fail(str(exc)) from None
    development = builder.settings.development
    keys = [
        key_digest(
            key,
            variable=f"{CLIENTS_VARIABLE} ({where})",
            allow_plain=development,
            allow_weak=development,
        )
        for key in _string_list(entry, "api_keys", where)
    ]
    builder.add(client, keys, _string_list(entry, "jwt_subjects", where), CLIENTS_VARIABLE)


def _read_clients_file(path: str) -> list[Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise _fail(f"{path} is not UTF-8") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(f"{path}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(document, dict) or not isinstance(document.get("clients"), list):
        raise _fail(f'{path}: expected {{"clients": [...]}}')
    unknown = set(document) - {"clients"}
    if unknown:
        raise _fail(f"{path}: unknown field(s) {', '.join(sorted(unknown))}")
    return list(document["clients"])


def load_registry(settings: Settings) -> ClientRegistry:
    """Clients of ``FHIR_ADAPTER_CLIENTS`` and the ``default`` client of the API keys.

    Raises :class:`ConfigError` (naming the variable) for anything ambiguous or weak.
    """
    builder = _Builder(settings)
    if settings.clients_file:
        for index, entry in enumerate(_read_clients_file(settings.clients_file)):
            _client_entry(entry, index, builder)
    if settings.api_keys:
        _check_namespace(settings.namespace, f"{PREFIX}NAMESPACE", "the default client")
        default = Client(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SCOPES, settings.namespace)
        keys = [
            key_digest(
                key,
                variable=API_KEYS_VARIABLE,
                allow_plain=True,
                allow_weak=settings.development,
            )
            for key in settings.api_keys
        ]
        builder.add(default, keys, (), API_KEYS_VARIABLE)
    builder.check_overlaps()
    gateway_systems = settings.namespace.rstrip("/") + "/fhir/identifier/gateway-"
    return ClientRegistry(
        clients=tuple(builder.clients),
        key_digests=tuple(builder.keys),
        jwt_subjects=dict(builder.subjects),
        reserved_prefixes=(gateway_systems,),
    )
