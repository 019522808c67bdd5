"""The app factory: ``create_app(settings)`` wires routers, error handlers and middleware.

A factory rather than a module-level app, so tests build as many independent apps as they
need (a fresh one on the same SQLite file is how they simulate a restart), and importing the
package reads no environment.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from adapter import __version__
from adapter.gateway.audit import AuditMiddleware
from adapter.gateway.auth import Authenticator
from adapter.gateway.config import Settings
from adapter.gateway.http_guards import AddressLimitMiddleware, SecurityHeadersMiddleware
from adapter.gateway.openapi import install_docs_page, install_openapi
from adapter.gateway.outcomes import CatchAllMiddleware, install_exception_handlers
from adapter.gateway.rate_limit import RateLimits
from adapter.gateway.routers import case_records, fhir, health, patients, submissions
from adapter.gateway.runtime import Gateway

__all__ = ["create_app"]

DESCRIPTION = """\
Store-and-forward gateway for oncology case records and FHIR Bundles.

Every request except `/healthz` and `/readyz` needs `Authorization: Bearer <token>`: an API
key or a JWT of a configured client, whose scopes (`read`, `write`, `convert`, `admin`)
decide what it may call (docs/authorization.md). Every error is a FHIR OperationOutcome whose
issues carry `expression`, the JSON path of the field at fault. Pushes answer 201 when the
upstream server confirmed, 202 with `Location: /submissions/{id}` when it was unavailable and
the submission is queued.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """A gateway app; reads the environment only when ``settings`` is not given.

    Credentials are checked here (a malformed key fails now, not at the first request);
    the outbox and upstream connections are opened by the lifespan.
    """
    settings = settings if settings is not None else Settings.from_env()
    authenticator = Authenticator(settings)
    limits = RateLimits(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = await Gateway.start(settings, authenticator, limits)
        app.state.gateway = gateway
        # What exists now lives as long as the process: out of the cyclic collector's sight,
        # so that its full collections (which hold the interpreter lock) stay short while
        # large request bodies are being processed.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await gateway.stop()
            app.state.gateway = None

    app = FastAPI(
        title="FHIR oncology adapter gateway",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's own /docs loads Swagger UI from a CDN: replaced by a page of our own.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs else None,
    )
    install_exception_handlers(app)
    for module in (case_records, fhir, submissions, patients, health):
        app.include_router(module.router)
    # Added last = outermost: the audit line also covers the catch-all's 500s and the
    # address limit's 429s, and every response (errors included) gets the security headers.
    app.add_middleware(AddressLimitMiddleware, buckets=limits.address)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(AuditMiddleware, instance_id=settings.instance_id)
    install_openapi(app)
    if settings.docs:
        install_docs_page(app)
    return app
