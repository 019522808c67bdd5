"""Gateway settings, read once from ``FHIR_ADAPTER_*`` environment variables.

Everything a deployment changes is an environment variable so that the same image runs in
every hospital; :meth:`Settings.from_env` turns them into one immutable object that the app
factory receives, which also lets tests build an app from a plain :class:`Settings` without
touching the process environment. Every variable is documented in ``docs/gateway.md``; bad
values fail at startup with the variable's name rather than at the first request.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from adapter.gateway.resource_types import ACCEPTED_RESOURCE_TYPES, accepted_types
from adapter.mapping.context import DEFAULT_NAMESPACE

__all__ = [
    "DEFAULT_ALLOWED_RESOURCE_TYPES",
    "DEFAULT_DB",
    "DEFAULT_MAX_BODY_BYTES",
    "ConfigError",
    "Settings",
]

PREFIX = "FHIR_ADAPTER_"
DEFAULT_DB = "fhir-adapter-gateway.sqlite3"
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
DEFAULT_ALLOWED_RESOURCE_TYPES: tuple[str, ...] = tuple(sorted(ACCEPTED_RESOURCE_TYPES))
"""Every clinical, administrative and financial type (``adapter/gateway/resource_types.py``)."""
UPSTREAM_VERSIONS = ("R4", "R5")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


def _default_instance_id() -> str:
    """Host name and pid: distinct per process, readable in Provenance and logs."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    """Everything the gateway needs to know about its deployment.

    Defaults suit a single gateway on one host next to its upstream server; tests construct
    this directly, production goes through :meth:`from_env`.
    """

    upstream_url: str | None = None
    upstream_fhir_version: Literal["R4", "R5"] = "R4"
    upstream_token: str | None = None
    upstream_token_url: str | None = None
    upstream_client_id: str | None = None
    upstream_private_key: str | None = None
    """Path of the PEM private key for SMART Backend Services (never the key itself)."""
    upstream_kid: str | None = None
    upstream_scope: str = "system/*.read system/*.write"
    upstream_timeout: float = 30.0
    upstream_connect_timeout: float = 5.0
    sync_timeout: float = 10.0
    """How long a push waits for the upstream before answering 202 and leaving it to the worker."""

    api_keys: tuple[str, ...] = ()
    """Configured keys as given (plain or ``sha256:<hex>``); hashed by the authenticator."""
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_public_key: str | None = None
    jwt_secret: str | None = None
    jwt_algorithms: tuple[str, ...] = ()
    jwt_leeway: float = 30.0

    db: str = DEFAULT_DB
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_bundle_entries: int = 1000
    namespace: str = DEFAULT_NAMESPACE
    allowed_resource_types: tuple[str, ...] = DEFAULT_ALLOWED_RESOURCE_TYPES
    """Types accepted on ``POST /fhir``: the accepted list, or a narrower one."""
    instance_id: str = field(default_factory=_default_instance_id)

    worker_concurrency: int = 4
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    max_attempts: int = 0
    """0 retries transient failures forever (store-and-forward must not drop data)."""
    lease_seconds: float = 120.0
    poll_seconds: float = 2.0
    breaker_seconds: float = 5.0
    """After a transient upstream failure, pushes skip the synchronous try for this long."""
    docs: bool = False
    """``/docs`` and ``/openapi.json``: off by default (an attack-surface map nobody needs in
    production); when on, the docs page loads nothing from a third-party host."""

    clients_file: str | None = None
    """Path of the JSON file of sending systems (``docs/authorization.md``)."""
    development: bool = False
    """Explicit opt-out of the production refusals: starts without credentials, accepts plain
    keys in the clients file and keys shorter than 128 bits, each with a warning."""
    credential_rate: float = 50.0
    """Requests per second per credential (bursts of twice that); 0 turns the limit off."""
    address_rate: float = 100.0
    """Requests per second per client address (bursts of twice that); 0 turns it off."""
    auth_failures_per_minute: float = 10.0
    """Failed authentications per minute per address (bursts of twice that) before every
    request from that address gets 429; 0 turns it off."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses of reverse proxies whose ``X-Forwarded-For`` names the client address."""
    header_timeout: float = 10.0
    """Seconds a connection may take to send a request's headers (slow-header clients)."""
    body_timeout: float = 60.0
    """Seconds a request may take to send its body (slow-body clients): 408."""
    cpu_workers: int = 2
    """Worker processes that parse, validate, convert and check bodies, off the event loop."""
    cpu_queue: int = 32
    """Requests that may wait for a CPU worker; beyond that, 503 with Retry-After."""
    cpu_pool: Literal["process", "thread"] = "process"
    """``thread`` runs body work on threads of the gateway process (embedding, debugging);
    a large hostile body then pauses the event loop through the interpreter lock."""
    cpu_timeout: float = 120.0
    """A body still being processed after this many seconds gets 503; its worker is killed."""
    ready_cache_seconds: float = 5.0
    """How long ``/readyz`` reuses its upstream and queue checks."""
    min_free_bytes: int = 100 * 1024 * 1024
    """``/readyz`` is not ready when the SQLite outbox's disk has less free space; 0: off."""
    retention_days: float = 30.0
    """Finished submissions (delivered or failed, with a failed one's Bundle) are deleted
    this many days after they finished; 0 keeps them until ``fhir-adapter purge``."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Reject combinations that would only fail later, at the first request."""
        if self.upstream_fhir_version not in UPSTREAM_VERSIONS:
            raise ConfigError(f"{PREFIX}UPSTREAM_FHIR_VERSION must be R4 or R5")
        if self.max_body_bytes < 1:
            raise ConfigError(f"{PREFIX}MAX_BODY_BYTES must be positive")
        if self.max_bundle_entries < 1:
            raise ConfigError(f"{PREFIX}MAX_BUNDLE_ENTRIES must be positive")
        try:
            accepted_types(self.allowed_resource_types)
        except ValueError as exc:
            raise ConfigError(f"{PREFIX}ALLOWED_RESOURCE_TYPES: {exc}") from None
        if self.worker_concurrency < 1:
            raise ConfigError(f"{PREFIX}WORKER_CONCURRENCY must be at least 1")
        if self.cpu_pool not in ("process", "thread"):
            raise ConfigError(f"{PREFIX}CPU_POOL must be process or thread")
        if self.max_attempts < 0:
            raise ConfigError(f"{PREFIX}MAX_ATTEMPTS must be 0 (unlimited) or more")
        for name in (
            "retry_base_seconds",
            "retry_max_seconds",
            "breaker_seconds",
            "credential_rate",
            "address_rate",
            "auth_failures_per_minute",
            "ready_cache_seconds",
            "min_free_bytes",
            "retention_days",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{PREFIX}{name.upper()} must not be negative")
        for name in (
            "lease_seconds",
            "poll_seconds",
            "sync_timeout",
            "upstream_timeout",
            "header_timeout",
            "body_timeout",
            "cpu_workers",
            "cpu_queue",
            "cpu_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{PREFIX}{name.upper()} must be positive")
        jwt_enabled = bool(self.jwt_public_key or self.jwt_secret)
        if jwt_enabled and not (self.jwt_issuer and self.jwt_audience):
            raise ConfigError(
                f"JWT verification needs {PREFIX}JWT_ISSUER and {PREFIX}JWT_AUDIENCE: "
                "a token minted for another service must not be accepted here"
            )
        smart = (self.upstream_token_url, self.upstream_client_id, self.upstream_private_key)
        if any(smart) and not (all(smart) and self.upstream_kid):
            raise ConfigError(
                f"SMART backend auth needs all of {PREFIX}UPSTREAM_TOKEN_URL, "
                f"{PREFIX}UPSTREAM_CLIENT_ID, {PREFIX}UPSTREAM_PRIVATE_KEY and {PREFIX}UPSTREAM_KID"
            )
        if self.upstream_token and any(smart):
            raise ConfigError(
                f"set either {PREFIX}UPSTREAM_TOKEN or the SMART backend settings, not both"
            )

    @property
    def auth_configured(self) -> bool:
        """Whether any credential can authenticate; without one every request gets 401."""
        return bool(self.api_keys or self.clients_file or self.jwt_public_key or self.jwt_secret)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the ``FHIR_ADAPTER_*`` variables (``os.environ`` unless given)."""
        env = _Env(os.environ if environ is None else environ)
        version = env.text("UPSTREAM_FHIR_VERSION") or "R4"
        if version not in UPSTREAM_VERSIONS:
            raise ConfigError(f"{PREFIX}UPSTREAM_FHIR_VERSION must be R4 or R5, got {version!r}")
        fhir_version: Literal["R4", "R5"] = "R5" if version == "R5" else "R4"
        defaults = cls(instance_id="defaults")
        return cls(
            upstream_url=env.text("UPSTREAM_URL"),
            upstream_fhir_version=fhir_version,
            upstream_token=env.text("UPSTREAM_TOKEN"),
            upstream_token_url=env.text("UPSTREAM_TOKEN_URL"),
            upstream_client_id=env.text("UPSTREAM_CLIENT_ID"),
            upstream_private_key=env.text("UPSTREAM_PRIVATE_KEY"),
            upstream_kid=env.text("UPSTREAM_KID"),
            upstream_scope=env.text("UPSTREAM_SCOPE") or defaults.upstream_scope,
            upstream_timeout=env.number("UPSTREAM_TIMEOUT", defaults.upstream_timeout),
            upstream_connect_timeout=env.number(
                "UPSTREAM_CONNECT_TIMEOUT", defaults.upstream_connect_timeout
            ),
            sync_timeout=env.number("SYNC_TIMEOUT", defaults.sync_timeout),
            api_keys=env.items("API_KEYS"),
            jwt_issuer=env.text("JWT_ISSUER"),
            jwt_audience=env.text("JWT_AUDIENCE"),
            jwt_public_key=env.text("JWT_PUBLIC_KEY"),
            jwt_secret=env.text("JWT_SECRET"),
            jwt_algorithms=env.items("JWT_ALGORITHMS"),
            jwt_leeway=env.number("JWT_LEEWAY", defaults.jwt_leeway),
            db=env.text("DB") or DEFAULT_DB,
            max_body_bytes=env.integer("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            max_bundle_entries=env.integer("MAX_BUNDLE_ENTRIES", defaults.max_bundle_entries),
            namespace=env.text("NAMESPACE") or DEFAULT_NAMESPACE,
            allowed_resource_types=env.items("ALLOWED_RESOURCE_TYPES")
            or DEFAULT_ALLOWED_RESOURCE_TYPES,
            instance_id=env.text("INSTANCE_ID") or _default_instance_id(),
            worker_concurrency=env.integer("WORKER_CONCURRENCY", defaults.worker_concurrency),
            retry_base_seconds=env.number("RETRY_BASE_SECONDS", defaults.retry_base_seconds),
            retry_max_seconds=env.number("RETRY_MAX_SECONDS", defaults.retry_max_seconds),
            max_attempts=env.integer("MAX_ATTEMPTS", defaults.max_attempts),
            lease_seconds=env.number("LEASE_SECONDS", defaults.lease_seconds),
            poll_seconds=env.number("POLL_SECONDS", defaults.poll_seconds),
            breaker_seconds=env.number("BREAKER_SECONDS", defaults.breaker_seconds),
            docs=env.flag("DOCS", False),
            clients_file=env.text("CLIENTS"),
            development=env.flag("DEVELOPMENT", False),
            credential_rate=env.number("CREDENTIAL_RATE", defaults.credential_rate),
            address_rate=env.number("ADDRESS_RATE", defaults.address_rate),
            auth_failures_per_minute=env.number(
                "AUTH_FAILURES_PER_MINUTE", defaults.auth_failures_per_minute
            ),
            trusted_proxies=env.items("TRUSTED_PROXIES"),
            header_timeout=env.number("HEADER_TIMEOUT", defaults.header_timeout),
            body_timeout=env.number("BODY_TIMEOUT", defaults.body_timeout),
            cpu_workers=env.integer("CPU_WORKERS", defaults.cpu_workers),
            cpu_queue=env.integer("CPU_QUEUE", defaults.cpu_queue),
            cpu_pool=_pool_kind(env.text("CPU_POOL") or defaults.cpu_pool),
            cpu_timeout=env.number("CPU_TIMEOUT", defaults.cpu_timeout),
            ready_cache_seconds=env.number("READY_CACHE_SECONDS", defaults.ready_cache_seconds),
            min_free_bytes=env.integer("MIN_FREE_BYTES", defaults.min_free_bytes),
            retention_days=env.number("RETENTION_DAYS", defaults.retention_days),
        )


def _pool_kind(value: str) -> Literal["process", "thread"]:
    if value == "process":
        return "process"
    if value == "thread":
        return "thread"
    raise ConfigError(f"{PREFIX}CPU_POOL must be process or thread, got {value!r}")


class _Env:
    """Typed access to prefixed variables; every parse error names the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str | None:
        value = self._environ.get(PREFIX + name, "").strip()
        return value or None

    def items(self, name: str) -> tuple[str, ...]:
        raw = self.text(name) or ""
        return tuple(item.strip() for item in raw.split(",") if item.strip())

    def integer(self, name: str, default: int) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            return int(raw.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{PREFIX}{name} must be an integer, got {raw!r}") from None

    def number(self, name: str, default: float) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{PREFIX}{name} must be a number, got {raw!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{PREFIX}{name} must be a finite number, got {raw!r}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{PREFIX}{name} must be true or false, got {raw!r}")
