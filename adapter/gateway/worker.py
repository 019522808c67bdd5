"""Delivery to the upstream server: one attempt, its verdict, and the background retry loop.

The request handler makes the first attempt itself (so an available upstream gives the EHR
a 201 with real references); everything that attempt could not finish is the worker's. The
worker claims due rows with a lease, sends each once, and records the verdict: delivered,
failed (the upstream refused it: a 4xx other than 408/429, kept with the upstream's
OperationOutcome), or queued again after exponential backoff with full jitter (the upstream
was unreachable, timed out or answered 408/429/5xx). Retries are safe because every
accepted bundle is replay-safe: conditional creates or updates on business identifiers and
PUTs to deterministic ids, so a second delivery matches what the first created.

A case record is delivered with :func:`adapter.push.send_record_async`: each attempt reads
the record's current state on the upstream and plans the transaction against it (what to
delete is decided at delivery time, not when the record was accepted). Which version of a
record is delivered, and in what order, is the outbox's job (``record_key``).

Nothing here logs patient data: only submission ids, states and HTTP status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson

from adapter.fhir import (
    AsyncFhirClient,
    AuthError,
    FhirError,
    FhirTransportError,
    OperationOutcomeError,
)
from adapter.gateway.bundles import trim_response
from adapter.gateway.config import Settings
from adapter.gateway.outbox import Lease, Outbox, State, Submission
from adapter.push import send_record_async

__all__ = ["Breaker", "DeliveryResult", "DeliveryWorker", "deliver"]

log = logging.getLogger(__name__)

# The upstream may have applied the request before the connection broke.
_MAYBE_APPLIED = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
_TRANSIENT_STATUSES = frozenset({408, 425, 429})
_MAX_ERROR_CHARS = 300

Verdict = Literal["delivered", "rejected", "retry"]


@dataclass(frozen=True)
class DeliveryResult:
    """How one attempt ended, in the form the outbox stores."""

    verdict: Verdict
    status: int | None
    body: dict[str, Any] | None
    """Trimmed transaction/batch response when delivered, the upstream OperationOutcome
    otherwise (when there was one)."""
    error: str | None = None
    """Short description for operators; never contains request data."""

    def stored_body(self) -> bytes | None:
        """The body as stored in the outbox."""
        return None if self.body is None else orjson.dumps(self.body)


def _unknown_outcome(reason: str) -> DeliveryResult:
    return DeliveryResult(
        "rejected",
        None,
        None,
        f"{reason}; the upstream may or may not have applied it and the bundle is not safe "
        "to send twice, so it was not retried",
    )


async def deliver(
    client: AsyncFhirClient,
    bundle_type: str,
    bundle: Mapping[str, Any],
    *,
    replay_safe: bool,
    case_record: bool = False,
) -> DeliveryResult:
    """Send a bundle once and classify the outcome; never raises for upstream problems.

    A case record's transaction is planned against the upstream's current state first (see
    :mod:`adapter.reconcile`); a lost race is re-planned within the attempt, and one still
    lost after several plans is reported like any other 409.
    """
    try:
        if bundle_type == "batch":
            response = await client.batch(bundle, idempotent=replay_safe)
        elif case_record:
            response, _plan, _plans = await send_record_async(client, dict(bundle))
        else:
            response = await client.transaction(bundle, idempotent=replay_safe)
    except OperationOutcomeError as exc:
        status = exc.status_code
        message = f"upstream answered HTTP {status}"
        if status in _TRANSIENT_STATUSES or status >= 500:
            return DeliveryResult("retry", status, exc.outcome, message)
        return DeliveryResult("rejected", status, exc.outcome, message)
    except FhirTransportError as exc:
        reason = f"upstream unreachable: {type(exc.cause).__name__}"
        if isinstance(exc.cause, _MAYBE_APPLIED) and not replay_safe:
            return _unknown_outcome(reason)
        return DeliveryResult("retry", None, None, reason)
    except AuthError as exc:
        # The token endpoint refused us: a credentials problem an operator can fix, after
        # which the queued data should still go through.
        status_text = f" (HTTP {exc.status_code})" if exc.status_code else ""
        return DeliveryResult("retry", None, None, f"upstream token request failed{status_text}")
    except FhirError:
        # A 2xx whose body is not a FHIR JSON object: the data was probably applied.
        reason = "upstream answered 2xx with a body that is not FHIR JSON"
        if not replay_safe:
            return _unknown_outcome(reason)
        return DeliveryResult("retry", None, None, reason)
    return DeliveryResult("delivered", 200, trim_response(response), None)


class Breaker:
    """Remembers a recent upstream failure so pushes stop waiting on a dead upstream.

    While open, request handlers queue immediately (202) instead of spending their
    connect timeout, and the new row is first due when the breaker closes, so a dead upstream
    is not hit once per push; any successful delivery closes it.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._open_until = 0.0

    def is_open(self, now: float) -> bool:
        """Whether pushes should skip the synchronous attempt."""
        return now < self._open_until

    @property
    def closes_at(self) -> float:
        """When an open breaker lets deliveries try again (the past when it is closed)."""
        return self._open_until

    def record(self, result: DeliveryResult, now: float) -> None:
        """Open on a transient failure, close on success; rejections say nothing."""
        if result.verdict == "retry":
            self._open_until = now + self._seconds
        elif result.verdict == "delivered":
            self._open_until = 0.0


def backoff(attempts: int, base: float, cap: float) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(attempts-1))].

    Jitter spreads the retries of many queued submissions (and of several gateways) so
    that a recovering upstream is not hit by all of them at the same instant.
    """
    exponent = min(max(attempts - 1, 0), 62)
    return random.uniform(0.0, min(cap, base * (2.0**exponent)))


class DeliveryWorker:
    """Background delivery of queued submissions, started and stopped by the app lifespan."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        client: AsyncFhirClient,
        breaker: Breaker,
    ) -> None:
        self._settings = settings
        self._outbox = outbox
        self._client = client
        self._breaker = breaker
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_requeue = 0.0

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Re-queue what a previous run left mid-delivery, then start the loop."""
        requeued = await asyncio.to_thread(self._outbox.requeue_expired, time.time())
        if requeued:
            log.warning("re-queued %d submissions whose delivery lease had expired", requeued)
        self._task = asyncio.create_task(self._loop(), name="fhir-gateway-delivery")

    async def stop(self) -> None:
        """Stop the loop; interrupted deliveries are handed back to the queue."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def notify(self) -> None:
        """New work was queued: run now instead of at the next poll."""
        self._wake.set()

    # -- the loop ------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                # Cleared before looking for work, so a notify() during the look is kept.
                self._wake.clear()
                delivered = await self.run_once()
                if delivered:
                    continue  # there may be more due right now
                await asyncio.to_thread(self._outbox.requeue_expired, time.time())
                await self._sleep()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The store may be briefly unavailable (Postgres restart); keep the worker.
                log.exception("delivery loop error; retrying in %.1fs", self._settings.poll_seconds)
                await asyncio.sleep(self._settings.poll_seconds)

    async def _sleep(self) -> None:
        """Until woken, or the next row is due, or the poll interval (for other gateways' rows)."""
        timeout = self._settings.poll_seconds
        due = await asyncio.to_thread(self._outbox.next_due)
        if due is not None:
            timeout = max(0.0, min(timeout, due - time.time()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def run_once(self) -> int:
        """Claim one batch of due rows and deliver them concurrently; returns how many."""
        now = time.time()
        if now - self._last_requeue >= self._settings.poll_seconds:
            # Also while busy: with several gateways on one outbox, a dead gateway's leased
            # rows must come back even when the survivors never run out of work.
            self._last_requeue = now
            await asyncio.to_thread(self._outbox.requeue_expired, now)
        token = uuid.uuid4().hex
        claimed = await asyncio.to_thread(
            lambda: self._outbox.claim(
                limit=self._settings.worker_concurrency,
                owner=self._settings.instance_id,
                token=token,
                until=now + self._settings.lease_seconds,
                now=now,
            )
        )
        if claimed:
            await asyncio.gather(*(self._deliver(row, token) for row in claimed))
        return len(claimed)

    async def _deliver(self, row: Submission, token: str) -> None:
        try:
            bundle = orjson.loads(row.payload or b"")
        except ValueError:
            # Cannot happen for rows this code wrote; retrying would loop forever on it.
            unreadable = DeliveryResult("rejected", None, None, "stored bundle is unreadable")
            await self.record(row.id, token, row.attempts, unreadable)
            return
        try:
            result = await deliver(
                self._client,
                row.bundle_type,
                bundle,
                replay_safe=row.replay_safe,
                case_record=row.record_key is not None,
            )
        except asyncio.CancelledError:
            # Shutting down: hand the row back now rather than after its lease expires.
            if row.replay_safe:
                await asyncio.shield(
                    asyncio.to_thread(
                        self._finish,
                        row.id,
                        token,
                        State.QUEUED,
                        None,
                        None,
                        "gateway stopped",
                        time.time(),
                    )
                )
            raise
        await self.record(row.id, token, row.attempts, result)

    # -- verdicts -------------------------------------------------------------------------

    def lease(self, now: float) -> Lease:
        """A fresh lease for a delivery the request handler makes itself."""
        return Lease(
            uuid.uuid4().hex, self._settings.instance_id, now + self._settings.lease_seconds
        )

    async def attempt(
        self,
        submission_id: str,
        token: str,
        bundle_type: str,
        bundle: Mapping[str, Any],
        replay_safe: bool,
        case_record: bool = False,
    ) -> Submission | None:
        """The request handler's synchronous first attempt, bounded by ``sync_timeout``.

        Only replay-safe bundles are cut off early (and left to the worker): for the others
        an abandoned request could have been applied, so the handler waits it out.
        """
        coroutine = deliver(
            self._client, bundle_type, bundle, replay_safe=replay_safe, case_record=case_record
        )
        if replay_safe:
            try:
                result = await asyncio.wait_for(coroutine, self._settings.sync_timeout)
            except TimeoutError:
                result = DeliveryResult("retry", None, None, "upstream did not answer in time")
        else:
            result = await coroutine
        return await self.record(submission_id, token, 1, result)

    async def record(
        self, submission_id: str, token: str, attempts: int, result: DeliveryResult
    ) -> Submission | None:
        """Store a verdict and update the breaker; schedules the retry when there is one.

        Returns the updated row, or ``None`` if the lease was lost meanwhile.
        """
        now = time.time()
        self._breaker.record(result, now)
        state = State.DELIVERED if result.verdict == "delivered" else State.FAILED
        next_at: float | None = None
        error = result.error
        if result.verdict == "retry":
            limit = self._settings.max_attempts
            if limit and attempts >= limit:
                error = f"{error}; gave up after {attempts} attempts"
            else:
                state = State.QUEUED
                next_at = now + backoff(
                    attempts, self._settings.retry_base_seconds, self._settings.retry_max_seconds
                )
        stored, waiting = await asyncio.to_thread(
            self._finish,
            submission_id,
            token,
            state,
            result.status,
            result.stored_body(),
            error,
            now,
            next_at,
        )
        if stored is None:
            log.warning("submission %s: lease lost before the verdict was stored", submission_id)
            return None
        if state is State.QUEUED:
            log.info(
                "submission %s: attempt %d failed (%s); next in %.1fs",
                submission_id,
                attempts,
                result.status or "no response",
                (next_at or now) - now,
            )
            self.notify()
        else:
            log.info("submission %s: %s (HTTP %s)", submission_id, state.value, result.status)
            if waiting:
                self.notify()  # the record's next version was waiting for this one
        return stored

    def _finish(
        self,
        submission_id: str,
        token: str,
        state: State,
        status: int | None,
        body: bytes | None,
        error: str | None,
        now: float,
        next_at: float | None = None,
    ) -> tuple[Submission | None, bool]:
        """The verdict stored, and whether a later version of the record waits for it.

        The loop is woken only then (or for a retry): waking it after every delivery cost a
        claim, a supersede scan and a due-time query, four statements for nothing when no
        row waits. A row queued after this check was not blocked by this one (it is leased
        at once, or queued with a wake-up of its own), and the poll stays the backstop.
        """
        stored = self._outbox.finish(
            submission_id,
            token,
            state=state,
            now=now,
            upstream_status=status,
            response=body,
            error=None if error is None else error[:_MAX_ERROR_CHARS],
            next_attempt_at=next_at,
        )
        waiting = (
            stored is not None
            and stored.state is not State.QUEUED
            and stored.record_key is not None
            and self._outbox.waiting(stored.record_key)
        )
        return stored, waiting
