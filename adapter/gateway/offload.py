"""CPU-heavy work off the event loop, with a bounded queue.

Parsing, validating, converting and checking a request body costs time in proportion to its
size (up to ``FHIR_ADAPTER_MAX_BODY_BYTES``). On the event loop that time would stall every
other request, health probes included; so every such step runs here, whatever the body's
size, on a small pool of threads of its own (the default executor stays free for the outbox's
short database calls). Admission is bounded: when ``workers + queue`` bodies are already
waiting or running, the next request gets 503 with ``Retry-After`` at once instead of joining
an ever longer queue.

Threads share the interpreter lock with the event loop, which gets it back at least every
switch interval (5 ms) while Python code runs in a worker; the gateway lowers that interval
(``serve``) so the loop waits less. The C-level steps on a body are linear in its size
(``docs/gateway.md`` has the measured /healthz latency under a hostile 5 MB body).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from adapter.gateway.outcomes import GatewayError, error

__all__ = ["BUSY_RETRY_AFTER", "CpuPool"]

T = TypeVar("T")
BUSY_RETRY_AFTER = "2"


class CpuPool:
    """A thread pool for request bodies with at most ``workers + queue`` admitted at once."""

    def __init__(self, workers: int, queue: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gateway-cpu")
        self._limit = workers + queue
        self._admitted = 0

    @property
    def admitted(self) -> int:
        """Bodies waiting for or being processed by a worker."""
        return self._admitted

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` in a worker thread; 503 when the pool is saturated.

        The slot is released when the work ends, not when the caller stops waiting: a caller
        that went away must not let more work in than the pool can hold.
        """
        if self._admitted >= self._limit:
            raise GatewayError(
                503,
                error("transient", "the gateway is busy with other requests; retry shortly"),
                headers={"Retry-After": BUSY_RETRY_AFTER},
            )
        loop = asyncio.get_running_loop()
        self._admitted += 1
        future: Future[T] = self._executor.submit(functools.partial(function, *args, **kwargs))

        def release(_: Future[T]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to free
                loop.call_soon_threadsafe(self._release)

        future.add_done_callback(release)
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        self._admitted -= 1

    def shutdown(self) -> None:
        """Drop queued work and let running work finish in the background."""
        self._executor.shutdown(wait=False, cancel_futures=True)
