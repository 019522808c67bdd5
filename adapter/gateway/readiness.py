"""What ``/readyz`` checks, cached so that probes cannot be turned into upstream load.

Ready means the gateway can accept *and keep* a push: credentials are configured, the outbox
answers reads and takes a write, its last real write did not fail, its disk has room (SQLite),
and the upstream answers ``/metadata``. The result is computed at most once per
``FHIR_ADAPTER_READY_CACHE_SECONDS``, and concurrent probes share one computation, so however
often ``/readyz`` is hit, the upstream sees one ``/metadata`` per period.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from adapter.fhir import AsyncFhirClient, FhirError
from adapter.gateway.config import PREFIX, Settings
from adapter.gateway.outbox import Outbox
from adapter.gateway.outcomes import Issue, error

__all__ = ["READY_TIMEOUT", "Readiness", "ReadinessReport"]

READY_TIMEOUT = 5.0


class _Storage(Protocol):
    failure: str | None


class _Credentials(Protocol):
    @property
    def configured(self) -> bool: ...


@dataclass(frozen=True)
class ReadinessReport:
    """One computation of readiness; ``checks`` and ``issues`` are shown to admins only."""

    issues: tuple[Issue, ...] = ()
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """No check failed."""
        return not self.issues


class Readiness:
    """Computes and caches the readiness of one gateway."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        client: AsyncFhirClient | None,
        storage: _Storage,
        credentials: _Credentials,
    ) -> None:
        self._settings = settings
        self._outbox = outbox
        self._client = client
        self._storage = storage
        self._credentials = credentials
        self._cached: tuple[float, ReadinessReport] | None = None
        self._running: asyncio.Task[ReadinessReport] | None = None

    async def report(self) -> ReadinessReport:
        """The cached report, or a fresh one when it is older than the cache period."""
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self._settings.ready_cache_seconds:
            return self._cached[1]
        if self._running is None:
            self._running = asyncio.create_task(self._compute())
            self._running.add_done_callback(self._store)
        return await asyncio.shield(self._running)

    def _store(self, task: asyncio.Task[ReadinessReport]) -> None:
        self._running = None
        if not task.cancelled() and task.exception() is None:
            self._cached = (time.monotonic(), task.result())

    async def _compute(self) -> ReadinessReport:
        issues: list[Issue] = []
        checks: dict[str, Any] = {}
        if not self._credentials.configured:
            issues.append(
                error(
                    "security",
                    f"no credentials configured ({PREFIX}CLIENTS, {PREFIX}API_KEYS or JWT keys)",
                )
            )
        await self._queue(issues, checks)
        await self._upstream(issues, checks)
        return ReadinessReport(tuple(issues), checks)

    async def _queue(self, issues: list[Issue], checks: dict[str, Any]) -> None:
        try:
            checks["queue"] = await asyncio.wait_for(
                asyncio.to_thread(self._outbox.counts), READY_TIMEOUT
            )
        except Exception as exc:  # any failure means "not ready", whatever the driver raised
            issues.append(error("transient", f"queue database unreachable: {type(exc).__name__}"))
            return
        try:
            await asyncio.wait_for(asyncio.to_thread(self._outbox.probe_write), READY_TIMEOUT)
        except Exception as exc:
            issues.append(
                error("transient", f"queue database does not take writes: {type(exc).__name__}")
            )
        if self._storage.failure is not None:
            issues.append(
                error("transient", f"the last write to the queue failed: {self._storage.failure}")
            )
        free_bytes = getattr(self._outbox, "free_bytes", None)
        minimum = self._settings.min_free_bytes
        if callable(free_bytes) and minimum:
            free = await asyncio.to_thread(free_bytes)
            if free is not None:
                checks["diskFreeBytes"] = free
                if free < minimum:
                    issues.append(
                        error(
                            "transient",
                            f"the queue database's disk has {free} bytes free, under "
                            f"{PREFIX}MIN_FREE_BYTES ({minimum})",
                        )
                    )

    async def _upstream(self, issues: list[Issue], checks: dict[str, Any]) -> None:
        if self._client is None:
            issues.append(error("not-supported", f"no upstream configured ({PREFIX}UPSTREAM_URL)"))
            return
        try:
            await asyncio.wait_for(self._client.capabilities(), READY_TIMEOUT)
            checks["upstream"] = "reachable"
        except (FhirError, httpx.HTTPError, TimeoutError) as exc:
            issues.append(
                error("transient", f"upstream /metadata unreachable: {type(exc).__name__}")
            )
