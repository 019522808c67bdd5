"""CPU-heavy work off the event loop: request bodies in worker processes, with a bounded queue.

Parsing, validating, converting and checking a request body costs time (and allocates
objects) in proportion to its size, up to ``FHIR_ADAPTER_MAX_BODY_BYTES``. On the event loop
that would stall every other request, health probes included. In a thread it would still
share the interpreter lock, and a large hostile body (a record with 250,000 invalid fields)
makes the garbage collector pause the whole process for whole seconds while it holds the lock.
So body work runs in worker *processes* (``FHIR_ADAPTER_CPU_POOL=process``, the default):
their collections and C-level loops cannot pause the event loop at all. Only what they return
crosses over: a Bundle bounded by ``FHIR_ADAPTER_MAX_BUNDLE_ENTRIES`` or an error already
capped to 100 issues.

Admission is bounded: when ``workers + queue`` bodies are already waiting or running, the next
request gets 503 with ``Retry-After`` at once instead of joining an ever longer queue. A body
still running after ``FHIR_ADAPTER_CPU_TIMEOUT`` seconds gets 503 and its worker is killed (the
pool is replaced), so no input can occupy a worker for ever.

Work on objects that already live in the gateway process (stamping the Provenance,
serialising the Bundle for the outbox) runs on a thread of the same pool via
:meth:`CpuPool.run_local`. ``FHIR_ADAPTER_CPU_POOL=thread`` runs body work on threads too
(embedding, debugging); process pools are shared per interpreter, so many apps in one test
process start their workers once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal, TypeVar

from adapter.gateway.outcomes import GatewayError, error

__all__ = ["BUSY_RETRY_AFTER", "CpuPool", "PoolKind", "stop_worker_processes"]

T = TypeVar("T")
PoolKind = Literal["process", "thread"]
BUSY_RETRY_AFTER = "2"

log = logging.getLogger(__name__)

_PROCESS_POOLS: dict[int, ProcessPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


PARENT_CHECK_SECONDS = 1.0


def _exit_with_parent(parent: int) -> None:
    """Run in each worker: exit as soon as the gateway process is gone.

    A worker blocks reading its task queue, whose write end its siblings hold too, so a
    gateway killed with SIGKILL would leave its workers waiting for ever.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _process_pool(workers: int) -> ProcessPoolExecutor:
    """The interpreter's process pool of ``workers`` processes (spawned: no fork of threads)."""
    with _POOLS_LOCK:
        pool = _PROCESS_POOLS.get(workers)
        if pool is None:
            pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            )
            _PROCESS_POOLS[workers] = pool
        return pool


def _replace_process_pool(workers: int, broken: ProcessPoolExecutor) -> None:
    """Kill ``broken``'s workers and forget it; the next task starts a fresh pool."""
    with _POOLS_LOCK:
        if _PROCESS_POOLS.get(workers) is broken:
            del _PROCESS_POOLS[workers]
    # No public way to stop one running task: its process goes, and with it the pool.
    for process in list((getattr(broken, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            process.kill()
    broken.shutdown(wait=False, cancel_futures=True)


def stop_worker_processes() -> None:
    """Kill every worker process of this interpreter (the server is exiting): a hostile body
    still being worked on must not hold the exit up for ``FHIR_ADAPTER_CPU_TIMEOUT``."""
    with _POOLS_LOCK:
        pools = list(_PROCESS_POOLS.items())
    for workers, pool in pools:
        _replace_process_pool(workers, pool)


def _warm() -> None:
    """Imported by a fresh worker: the modules body work needs, before the first body."""
    import adapter.gateway.routers.case_records
    import adapter.gateway.routers.fhir  # noqa: F401


def _busy(diagnostics: str) -> GatewayError:
    return GatewayError(
        503, error("transient", diagnostics), headers={"Retry-After": BUSY_RETRY_AFTER}
    )


class CpuPool:
    """Body work in processes (or threads), local work in threads, at most
    ``workers + queue`` admitted at once."""

    def __init__(
        self, workers: int, queue: int, kind: PoolKind = "process", timeout: float = 120.0
    ) -> None:
        self.kind = kind
        self._workers = workers
        self._timeout = timeout
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gateway-cpu")
        self._limit = workers + queue
        self._admitted = 0

    @property
    def admitted(self) -> int:
        """Bodies waiting for or being processed by a worker."""
        return self._admitted

    def start(self) -> None:
        """Start the worker processes now, so the first request does not pay for it."""
        if self.kind == "process":
            pool = _process_pool(self._workers)
            for _ in range(self._workers):
                pool.submit(_warm)

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` in a worker process (a module-level function whose
        arguments and result pickle); 503 when the pool is saturated or the work timed out."""
        if self.kind == "thread":
            return await self._submit(self._threads, function, args, kwargs)
        pool = _process_pool(self._workers)
        try:
            return await self._submit(pool, function, args, kwargs)
        except BrokenProcessPool:
            _replace_process_pool(self._workers, pool)
            raise _busy("a worker process of the gateway stopped; retry shortly") from None
        except TimeoutError:
            log.warning(
                "a request body was still being processed after %.0f s: worker killed",
                self._timeout,
            )
            _replace_process_pool(self._workers, pool)
            raise _busy(f"the request body was not processed within {self._timeout:g} s") from None

    async def run_local(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function`` on a thread of this process, for work on live objects."""
        return await self._submit(self._threads, function, args, kwargs)

    async def _submit(
        self,
        executor: Executor,
        function: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        """Admission, then the work; the slot is released when the work ends, not when the
        caller stops waiting, so a caller that went away cannot let in more than fits."""
        if self._admitted >= self._limit:
            raise _busy("the gateway is busy with other requests; retry shortly")
        loop = asyncio.get_running_loop()
        self._admitted += 1
        try:
            future: Future[T] = executor.submit(functools.partial(function, *args, **kwargs))
        except BaseException:
            self._admitted -= 1
            raise

        def release(_: Future[T]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to free
                loop.call_soon_threadsafe(self._release)

        future.add_done_callback(release)
        timeout = self._timeout if executor is not self._threads else None
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    def _release(self) -> None:
        self._admitted -= 1

    def shutdown(self) -> None:
        """Drop queued local work; shared worker processes stay for the next app."""
        self._threads.shutdown(wait=False, cancel_futures=True)
