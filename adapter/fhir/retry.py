"""Retry policy and the decision of when a FHIR request may be sent again.

The danger with retrying FHIR writes is duplication: a plain ``POST Patient`` that timed
out on read may already have created the patient, and replaying it creates a second one
(with a new server id, so nothing downstream notices). The rules here therefore separate
failures where the request certainly did not reach the server (always retried) from
failures where it may have been applied (retried only if replaying is harmless).

The decision logic lives in :class:`RetryController` so the sync and async clients share
it and differ only in how they send and sleep.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .errors import FhirTransportError, loads_json, redact_url

__all__ = [
    "RetryController",
    "RetryPolicy",
    "request_is_replay_safe",
]

log = logging.getLogger(__name__)

_SAFE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_SAFE_ENTRY_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
# The server refused these before doing any work, so a retry cannot duplicate anything.
_ALWAYS_RETRY_STATUSES = frozenset({429})
# Raised before a single byte of the request left this process.
_NOT_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# Raised after the request (or part of it) may have been received and applied.
_MAYBE_APPLIED_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
_MAX_EXPONENT = 62


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    Full jitter (a uniform delay between 0 and the exponential cap) is the default because
    the adapter runs batch pushes from several workers; synchronized retries would hit a
    recovering server in waves.
    """

    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    jitter: bool = True
    retry_statuses: frozenset[int] = field(default_factory=lambda: frozenset({429, 502, 503, 504}))

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (the first attempt counts)")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise ValueError("backoff_base and backoff_max must not be negative")

    def delay(
        self,
        attempt: int,
        retry_after_header: str | None = None,
        *,
        now: datetime | None = None,
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        A server-provided Retry-After wins over our own backoff, because the server knows
        when its rate-limit window or maintenance ends; it is still capped at
        ``backoff_max`` so a hostile or buggy header cannot park a batch job for hours.
        """
        server_hint = parse_retry_after(retry_after_header, now=now)
        if server_hint is not None:
            return min(server_hint, self.backoff_max)
        exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
        ceiling = min(self.backoff_base * (2.0**exponent), self.backoff_max)
        if self.jitter:
            return random.uniform(0.0, ceiling)
        return ceiling


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Parse Retry-After as delay-seconds or HTTP-date; ``None`` if absent or unusable.

    Unparseable values fall back to our own backoff instead of failing the request.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds != seconds or seconds in (float("inf"), float("-inf")):
            return None
        return max(seconds, 0.0)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max((when - current).total_seconds(), 0.0)


def _path_segments(url: httpx.URL) -> list[str]:
    return [segment for segment in url.path.split("/") if segment]


def _is_safe_post_target(path_or_url: str) -> bool:
    """POSTs to ``_search`` and ``$validate`` read only, so replaying them is harmless."""
    path = path_or_url.split("?", 1)[0].rstrip("/")
    last = path.rsplit("/", 1)[-1]
    return last == "_search" or last == "$validate"


def _entry_is_replay_safe(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    request = entry.get("request")
    if not isinstance(request, dict):
        return False
    method = str(request.get("method", "")).upper()
    if method in _SAFE_ENTRY_METHODS:
        return True
    if method == "POST":
        return bool(request.get("ifNoneExist")) or _is_safe_post_target(str(request.get("url", "")))
    return False


def _posted_to_base(request: httpx.Request, base_url: httpx.URL | str | None) -> bool:
    """Transactions go to the base URL; a POST to ``[base]/Bundle`` stores a Bundle instead."""
    if base_url is not None:
        base = httpx.URL(str(base_url))
        return request.url.path.rstrip("/") == base.path.rstrip("/")
    segments = _path_segments(request.url)
    return not segments or segments[-1] != "Bundle"


def _bundle_is_replay_safe(request: httpx.Request, base_url: httpx.URL | str | None) -> bool:
    if not _posted_to_base(request, base_url):
        return False
    try:
        content = request.content
    except httpx.RequestNotRead:
        return False  # streamed body: cannot inspect, so cannot vouch for it
    if not content:
        return False
    try:
        body = loads_json(content)
    except ValueError:
        return False
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        return False
    if body.get("type") not in ("transaction", "batch"):
        return False
    entries = body.get("entry") or []
    if not isinstance(entries, list):
        return False
    return all(_entry_is_replay_safe(entry) for entry in entries)


def request_is_replay_safe(request: httpx.Request, base_url: httpx.URL | str | None = None) -> bool:
    """Whether sending ``request`` twice has the same effect on the server as sending it once.

    ``base_url`` lets the client confirm a Bundle POST really targets the transaction
    endpoint; without it, any POST not addressed to ``.../Bundle`` is treated as one.
    """
    method = request.method.upper()
    if method in _SAFE_METHODS:
        return True
    if method != "POST":
        return False  # PATCH and anything exotic: not idempotent in general
    if request.headers.get("If-None-Exist"):
        return True
    if _is_safe_post_target(request.url.path):
        return True
    return _bundle_is_replay_safe(request, base_url)


class RetryController:
    """Per-request retry state; the one place that decides whether to try again.

    The client's send loop reports each outcome and gets back either a delay (sleep, then
    resend) or a final answer, so sync and async clients cannot drift apart.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        request: httpx.Request,
        *,
        idempotent: bool | None = None,
        base_url: httpx.URL | str | None = None,
    ) -> None:
        self.policy = policy
        self.request = request
        self.attempts = 0
        self._idempotent = idempotent
        self._base_url = base_url
        self._replay_safe: bool | None = None

    @property
    def replay_safe(self) -> bool:
        """Computed lazily: parsing a large transaction body is wasted work on success."""
        if self._replay_safe is None:
            if self._idempotent is not None:
                self._replay_safe = self._idempotent
            else:
                self._replay_safe = request_is_replay_safe(self.request, self._base_url)
        return self._replay_safe

    @property
    def _attempts_left(self) -> bool:
        return self.attempts < self.policy.max_attempts

    def after_response(self, response: httpx.Response) -> float | None:
        """Return the delay before a retry, or ``None`` to hand ``response`` to the caller."""
        self.attempts += 1
        status = response.status_code
        if status not in self.policy.retry_statuses or not self._attempts_left:
            return None
        if status not in _ALWAYS_RETRY_STATUSES and not self.replay_safe:
            log.info(
                "not retrying %s %s after HTTP %s: request is not replay-safe",
                self.request.method,
                redact_url(self.request.url),
                status,
            )
            return None
        delay = self.policy.delay(self.attempts, response.headers.get("Retry-After"))
        log.info(
            "retrying %s %s after HTTP %s in %.2fs (attempt %d of %d)",
            self.request.method,
            redact_url(self.request.url),
            status,
            delay,
            self.attempts,
            self.policy.max_attempts,
        )
        return delay

    def after_exception(self, exc: httpx.TransportError) -> float:
        """Return the delay before a retry, or raise :class:`FhirTransportError` to give up."""
        self.attempts += 1
        reason: str | None = None
        if isinstance(exc, _NOT_SENT_ERRORS):
            retryable = True
        elif isinstance(exc, _MAYBE_APPLIED_ERRORS):
            retryable = self.replay_safe
            if not retryable:
                reason = "not retried: the request may have been applied and is not replay-safe"
        else:
            retryable = False
            reason = "not retried: error is not transient"
        if retryable and not self._attempts_left:
            reason = "retries exhausted"
        if not retryable or not self._attempts_left:
            raise FhirTransportError(
                method=self.request.method,
                url=redact_url(self.request.url),
                attempts=self.attempts,
                cause=exc,
                reason=reason,
            ) from exc
        delay = self.policy.delay(self.attempts, None)
        log.info(
            "retrying %s %s after %s in %.2fs (attempt %d of %d)",
            self.request.method,
            redact_url(self.request.url),
            type(exc).__name__,
            delay,
            self.attempts,
            self.policy.max_attempts,
        )
        return delay
