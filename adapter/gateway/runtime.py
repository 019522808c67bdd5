"""What a running gateway holds: outbox, upstream clients, worker, and the submit path.

Built in the app's lifespan (so a test can create and discard apps freely, and a bad
database path fails startup rather than the first request) and reached by handlers through
:func:`adapter.gateway.dependencies.get_gateway`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from starlette.responses import Response

from adapter.fhir import (
    AsyncFhirClient,
    BearerTokenAuth,
    FhirClient,
    OperationOutcomeError,
    RetryPolicy,
    SmartBackendAuth,
)
from adapter.gateway.auth import Authenticator
from adapter.gateway.bundles import add_gateway_provenance, provenance_id
from adapter.gateway.config import PREFIX, ConfigError, Settings
from adapter.gateway.offload import CpuPool
from adapter.gateway.outbox import NewSubmission, Outbox, State, Submission, open_outbox
from adapter.gateway.outcomes import (
    GatewayError,
    Issue,
    error,
    fhir_response,
    outcome_response,
)
from adapter.gateway.rate_limit import RateLimits
from adapter.gateway.readiness import Readiness
from adapter.gateway.views import submission_location, submission_view
from adapter.gateway.worker import Breaker, DeliveryWorker
from adapter.mapping import ConversionOptions
from adapter.reconcile import manifest_full_url, record_key

__all__ = ["Gateway", "upstream_auth"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Upstream statuses that mean "the data is wrong": passed on to the EHR as they are.
# Anything else the upstream refuses (401, 403, 404, ...) is the gateway's configuration
# problem, which the EHR cannot fix: 502.
_PASSED_ON_STATUSES = frozenset({400, 409, 412, 422})
POLL_AFTER_SECONDS = "5"
# How long a push waits to learn whether the upstream already has its Provenance.
_PROVENANCE_LOOKUP_SECONDS = 2.0


def upstream_auth(settings: Settings) -> httpx.Auth | None:
    """Static bearer token, SMART Backend Services, or nothing (open sandbox servers)."""
    if settings.upstream_token:
        return BearerTokenAuth(settings.upstream_token)
    if settings.upstream_token_url and settings.upstream_private_key:
        try:
            key = Path(settings.upstream_private_key).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"{PREFIX}UPSTREAM_PRIVATE_KEY: cannot read {settings.upstream_private_key}: "
                f"{exc.strerror}"
            ) from None
        return SmartBackendAuth(
            settings.upstream_token_url,
            settings.upstream_client_id or "",
            key,
            kid=settings.upstream_kid or "",
            scope=settings.upstream_scope,
        )
    return None


def _timeout(settings: Settings) -> httpx.Timeout:
    return httpx.Timeout(settings.upstream_timeout, connect=settings.upstream_connect_timeout)


STORAGE_RETRY_AFTER = "30"
RETENTION_INTERVAL_SECONDS = 3600.0


class StorageHealth:
    """The outcome of the last write to the outbox, for ``/readyz``.

    A full disk or a broken database shows first on writes (reads keep working), so the
    submit path reports its failures here; the next successful write clears them.
    """

    def __init__(self) -> None:
        self.failure: str | None = None

    def failed(self, exc: BaseException) -> None:
        """A write failed: not ready until one succeeds."""
        self.failure = type(exc).__name__

    def succeeded(self) -> None:
        """A write went through."""
        self.failure = None


def storage_unavailable() -> GatewayError:
    """503 for a push the outbox could not store: nothing was accepted, send it again."""
    return GatewayError(
        503,
        error(
            "transient",
            "the gateway cannot store submissions right now (queue database unavailable or "
            "full); nothing was accepted: send it again later",
        ),
        headers={"Retry-After": STORAGE_RETRY_AFTER},
    )


class Gateway:
    """The state behind the routes; one per app instance."""

    def __init__(
        self,
        settings: Settings,
        authenticator: Authenticator,
        outbox: Outbox,
        client: AsyncFhirClient | None,
        limits: RateLimits | None = None,
    ) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self.outbox = outbox
        self.client = client
        self.limits = limits if limits is not None else RateLimits(settings)
        self.cpu = CpuPool(
            settings.cpu_workers, settings.cpu_queue, settings.cpu_pool, settings.cpu_timeout
        )
        self.storage = StorageHealth()
        self.readiness = Readiness(settings, outbox, client, self.storage, authenticator)
        self._retention: asyncio.Task[None] | None = None
        self.breaker = Breaker(settings.breaker_seconds)
        self.worker = (
            DeliveryWorker(settings, outbox, client, self.breaker) if client is not None else None
        )
        self.conversion_options = ConversionOptions(
            fhir_version=settings.upstream_fhir_version, namespace=settings.namespace
        )
        self.rule_system = f"{settings.namespace.rstrip('/')}/fhir/CodeSystem/case-record-rule"
        self._sync_client: FhirClient | None = None

    @classmethod
    async def start(
        cls, settings: Settings, authenticator: Authenticator, limits: RateLimits | None = None
    ) -> Gateway:
        """Open the outbox, connect the upstream client and start the worker."""
        outbox = await asyncio.to_thread(open_outbox, settings.db)
        client = None
        if settings.upstream_url:
            # One attempt per delivery: retries are the outbox's job, where they survive
            # restarts and do not hold a request open.
            client = AsyncFhirClient(
                settings.upstream_url,
                auth=upstream_auth(settings),
                timeout=_timeout(settings),
                retry=RetryPolicy(max_attempts=1),
            )
        else:
            log.warning("%sUPSTREAM_URL is not set: pushes will be refused with 503", PREFIX)
        if not authenticator.configured:
            log.warning("no API keys or JWT keys configured: every request will get 401")
        gateway = cls(settings, authenticator, outbox, client, limits)
        gateway.cpu.start()
        if gateway.worker is not None:
            await gateway.worker.start()
        if settings.retention_days > 0:
            gateway._retention = asyncio.create_task(
                gateway._retain(), name="fhir-gateway-retention"
            )
        return gateway

    async def stop(self) -> None:
        """Stop the worker first (it hands unfinished rows back), then close connections."""
        if self._retention is not None:
            self._retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention
        self.cpu.shutdown()
        if self.worker is not None:
            await self.worker.stop()
        if self.client is not None:
            await self.client.aclose()
        if self._sync_client is not None:
            self._sync_client.close()
        await asyncio.to_thread(self.outbox.close)

    async def _retain(self) -> None:
        """Delete finished submissions older than the retention period, hourly."""
        while True:
            before = time.time() - self.settings.retention_days * 86400
            try:
                deleted = await asyncio.to_thread(
                    functools.partial(
                        self.outbox.purge,
                        finished_before=before,
                        states=(State.DELIVERED, State.FAILED, State.SUPERSEDED),
                    )
                )
                if deleted:
                    log.info("retention: deleted %d finished submissions", deleted)
            except Exception as exc:  # the store may be down for a while; try next time
                log.warning("retention: purge failed (%s)", type(exc).__name__)
            await asyncio.sleep(RETENTION_INTERVAL_SECONDS)

    async def store(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking outbox write off the loop; a failure is a 503, not a 500."""
        try:
            result = await asyncio.to_thread(function, *args, **kwargs)
        except Exception as exc:
            self.storage.failed(exc)
            log.warning("outbox write failed: %s", type(exc).__name__)
            raise storage_unavailable() from None
        self.storage.succeeded()
        return result

    async def read_store(self, function: Callable[..., T], *args: Any) -> T:
        """Run a blocking outbox read off the loop; a failure is a 503, not a 500."""
        try:
            return await asyncio.to_thread(function, *args)
        except Exception as exc:
            log.warning("outbox read failed: %s", type(exc).__name__)
            raise storage_unavailable() from None

    def sync_client(self) -> FhirClient:
        """A blocking client for code written against :class:`FhirClient` (reverse mapping)."""
        if not self.settings.upstream_url:
            raise no_upstream()
        if self._sync_client is None:
            self._sync_client = FhirClient(
                self.settings.upstream_url,
                auth=upstream_auth(self.settings),
                timeout=_timeout(self.settings),
            )
        return self._sync_client

    async def submit(
        self,
        *,
        kind: str,
        bundle: dict[str, Any],
        principal: str,
        client_id: str,
        replay_safe: bool,
        warnings: tuple[str, ...] = (),
        provenance: str | None = None,
        respond_async: bool = False,
    ) -> tuple[str, Response]:
        """Persist, try once, and answer 201 (delivered), 202 (queued) or the rejection.

        The row is committed before any answer, so whatever happens to this process after
        this point, the submission is either delivered or in the queue.

        ``respond_async`` (the client sent ``Prefer: respond-async``): no attempt on the
        request path; the answer is 202 as soon as the row is committed, and the outbox
        worker delivers it, as it delivers everything queued.

        A case record's row carries its record key, so the outbox delivers the versions of
        one record one at a time and in order: while an earlier version is being delivered
        the new one is queued (202), and it supersedes earlier versions still waiting.
        """
        if self.client is None or self.worker is None:
            raise no_upstream()
        submission_id = str(uuid.uuid4())
        now = time.time()
        bundle_type = str(bundle.get("type") or "transaction")
        key = record_key(bundle) if kind == "case-record" else None
        manifest = manifest_full_url(bundle, key) if key is not None else None
        # The digest and the serialisation are linear in the Bundle's size: off the loop.
        # ``provenance``: the id, when the caller computed it where it built the Bundle.
        gateway_provenance = (
            provenance
            if provenance is not None
            else await self.cpu.run_local(provenance_id, client_id, bundle)
        )
        # A case record's delivery reads the record's state first, and that one search also
        # answers whether the upstream holds this Provenance (adapter.reconcile); the plan
        # then leaves it out. Other Bundles have no state read, so they ask here.
        has_provenance = key is None and await self._upstream_has(gateway_provenance, now)

        def prepare() -> bytes:
            if not has_provenance:
                add_gateway_provenance(
                    bundle,
                    provenance_id=gateway_provenance,
                    client_id=client_id,
                    principal=principal,
                    submission_id=submission_id,
                    instance_id=self.settings.instance_id,
                    recorded=now,
                    namespace=self.settings.namespace,
                    targets=None if manifest is None else [manifest],
                )
            return orjson.dumps(bundle)

        new = NewSubmission(
            id=submission_id,
            kind=kind,
            bundle_type=bundle_type,
            principal=principal,
            payload=await self.cpu.run_local(prepare),
            replay_safe=replay_safe,
            warnings=warnings,
            client=client_id,
            record_key=None if key is None else key.label,
        )
        breaker_open = self.breaker.is_open(now)
        try_now = not respond_async and not breaker_open
        lease = self.worker.lease(now) if try_now else None
        due = self.breaker.closes_at if breaker_open else None
        row: Submission | None = await self.store(
            self.outbox.add, new, now=now, lease=lease, due=due
        )
        if lease is None or row is None or row.state is not State.DELIVERING:
            self.worker.notify()
        else:
            row = await self.worker.attempt(
                submission_id,
                lease.token,
                bundle_type,
                bundle,
                replay_safe,
                case_record=key is not None,
            )
            if row is None:  # lease lost (only if the attempt outlived it): read it back
                row = await self.read_store(self.outbox.get, submission_id)
        if row is None:  # pragma: no cover - rows are never deleted
            raise GatewayError(500, error("exception", "submission vanished from the outbox"))
        view = submission_view(row)
        headers = {"Location": submission_location(submission_id)}
        if view["status"] == "delivered":
            return submission_id, fhir_response(
                201, view, headers=headers, media_type="application/json"
            )
        if view["status"] == "queued":
            headers["Retry-After"] = POLL_AFTER_SECONDS
            if respond_async:
                # the FHIR asynchronous pattern names the status endpoint Content-Location
                headers["Content-Location"] = headers["Location"]
                headers["Preference-Applied"] = "respond-async"
            return submission_id, fhir_response(
                202, view, headers=headers, media_type="application/json"
            )
        return submission_id, rejection_response(row.upstream_status, view, headers)

    async def _upstream_has(self, provenance: str, now: float) -> bool:
        """Whether the upstream already holds ``Provenance/<provenance>``.

        Then this exact content from this client was delivered before, and sending the
        Provenance again would only give it a later ``recorded`` (a new version for nothing).
        Any doubt (breaker open, timeout, error) answers no: the Provenance is sent, and
        at worst gets a new version.
        """
        if self.client is None or self.breaker.is_open(now):
            return False
        try:
            await asyncio.wait_for(
                self.client.read("Provenance", provenance), _PROVENANCE_LOOKUP_SECONDS
            )
        except OperationOutcomeError:
            return False  # 404 or 410 (deleted): not there
        except Exception:  # unreachable, timed out, an unexpected answer
            log.info("could not look up Provenance/%s; sending it", provenance)
            return False
        return True


def rejection_response(
    upstream_status: int | None, view: dict[str, Any], headers: dict[str, str]
) -> Response:
    """The upstream's OperationOutcome plus a pointer to the failed submission."""
    status = upstream_status if upstream_status in _PASSED_ON_STATUSES else 502
    upstream = view.get("upstream") or {}
    issues: list[Issue | dict[str, Any]] = list((upstream.get("outcome") or {}).get("issue") or [])
    reason = view.get("error") or "the upstream server refused the submission"
    issues.append(
        Issue(
            "information" if issues else "error",
            "informational" if issues else "exception",
            f"submission {view['id']} failed: {reason}; see {view['location']}",
        )
    )
    return outcome_response(status, issues, headers)


def no_upstream() -> GatewayError:
    """503 for deployments that only convert: there is nowhere to deliver to."""
    return GatewayError(
        503,
        error("not-supported", f"no upstream FHIR server is configured ({PREFIX}UPSTREAM_URL)"),
    )
