"""Rate limits: per credential, per client address, and on failed authentications.

Token buckets kept in memory, per process: a bucket holds up to ``burst`` tokens, refills at
``rate`` a second, and each request takes one; an empty bucket answers 429 with the seconds
until the next token in ``Retry-After``. Three limits, because they stop different things:

* per address, on every request but the health probes: one host flooding the gateway;
* per address, on failed authentications only, checked *before* the credential is: key
  guessing (a guesser learns nothing once blocked, since valid and invalid keys both get 429);
* per credential, after authentication: one sender (or a stolen key) flooding the upstream.

The maps of buckets are bounded (oldest keys evicted first), so a flood of spoofed addresses
cannot grow memory without end. With several gateway processes each keeps its own buckets:
the effective limit is the configured one times the number of processes.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from adapter.gateway.config import Settings
from adapter.gateway.outcomes import GatewayError, Issue

__all__ = ["RateLimits", "TokenBuckets", "too_many_requests"]

BURST_SECONDS = 2.0
"""A bucket holds this many seconds' worth of requests."""
MAX_KEYS = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One token bucket per key; ``rate`` 0 disables the limit."""

    def __init__(self, rate: float, burst: float, max_keys: int = MAX_KEYS) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether this limit is on."""
        return self.rate > 0

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        return bucket

    def wait(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` has a token (0 when it has one); takes nothing."""
        if not self.enabled:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._bucket(key, now)
            return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / self.rate

    def take(self, key: str, now: float | None = None) -> float:
        """Take a token: 0 when allowed, else the seconds until one is available."""
        if not self.enabled:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._bucket(key, now)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate

    def spend(self, key: str, now: float | None = None) -> None:
        """Take a token even from an empty bucket (failures count whatever the balance)."""
        if not self.enabled:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._bucket(key, now)
            bucket.tokens = max(bucket.tokens - 1.0, -self.burst)


class RateLimits:
    """The three limits of one gateway process, from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.address = TokenBuckets(settings.address_rate, settings.address_rate * BURST_SECONDS)
        self.credential = TokenBuckets(
            settings.credential_rate, settings.credential_rate * BURST_SECONDS
        )
        per_second = settings.auth_failures_per_minute / 60.0
        self.auth_failures = TokenBuckets(per_second, settings.auth_failures_per_minute * 2)


def too_many_requests(wait: float, what: str) -> GatewayError:
    """429 with ``Retry-After`` in whole seconds (at least 1)."""
    seconds = max(1, math.ceil(wait))
    return GatewayError(
        429,
        Issue("error", "throttled", f"too many requests {what}; retry in {seconds} s"),
        headers={"Retry-After": str(seconds)},
    )
