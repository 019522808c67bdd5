"""One structured audit line per request, and JSON logging for the whole process.

Hospitals must be able to answer "who pushed what, when, from where" without the log itself
becoming a store of patient data. So the audit line has the method, the *route template*
(never the raw path, which for ``/patients/{identifier}/...`` contains a patient identifier),
the status, the client address, the credential (``principal``) and the client it acts as, the
submission id and the duration, and nothing from bodies, query strings or headers other than a
caller-supplied request id of a safe shape. A request whose client went away before it was
read is logged with status 499 (no response was sent), not as an error.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapter.gateway.http_guards import client_address
from adapter.gateway.outcomes import DISCONNECTED_KEY

__all__ = [
    "AUDIT_LOGGER",
    "AuditMiddleware",
    "AuditRecord",
    "JsonFormatter",
    "audit_record",
    "configure_logging",
]

AUDIT_LOGGER = "adapter.gateway.audit"
SCOPE_KEY = "fhir_gateway.audit"
REQUEST_ID_HEADER = b"x-request-id"
_SAFE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._\-]{1,64}$")
CLIENT_CLOSED_REQUEST = 499
"""nginx's status for "the client closed the connection before the answer"."""

audit_log = logging.getLogger(AUDIT_LOGGER)


@dataclass
class AuditRecord:
    """Filled in by the route handlers while the request runs."""

    request_id: str
    principal: str | None = None
    """The credential: ``api-key:<12 hex>`` or ``jwt:<sub>``."""
    client: str | None = None
    """The client id the credential acts as."""
    submission: str | None = None


def audit_record(scope: Scope) -> AuditRecord | None:
    """The record of the current request (``None`` outside the middleware, e.g. in tests)."""
    record = scope.get(SCOPE_KEY)
    return record if isinstance(record, AuditRecord) else None


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _request_id(scope: Scope) -> str:
    """Reuse the caller's X-Request-ID for correlation, if it cannot smuggle anything in."""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER and _SAFE_REQUEST_ID.match(value):
            return str(value.decode("ascii"))
    return uuid.uuid4().hex


class AuditMiddleware:
    """Outermost middleware: times the request and writes its audit line when it ends."""

    def __init__(self, app: ASGIApp, instance_id: str) -> None:
        self.app = app
        self.instance_id = instance_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        record = AuditRecord(_request_id(scope))
        scope[SCOPE_KEY] = record
        status = 500

        async def audited_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, record.request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        finally:
            if scope.get(DISCONNECTED_KEY) and status == 500:
                status = CLIENT_CLOSED_REQUEST
            route = scope.get("route")
            template = getattr(route, "path", None)
            line: dict[str, Any] = {
                "event": "request",
                "time": _utc_now(),
                "request_id": record.request_id,
                "instance": self.instance_id,
                "method": scope.get("method"),
                "path": template if isinstance(template, str) else "(no route)",
                "status": status,
                "address": client_address(scope),
                "principal": record.principal,
                "client": record.client,
                "submission": record.submission,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            audit_log.info(json.dumps(line, separators=(",", ":")))


class JsonFormatter(logging.Formatter):
    """Every log record as one JSON object per line, for log shippers.

    Audit lines are already JSON and pass through unchanged; other records are wrapped.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == AUDIT_LOGGER:
            return message
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"))


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the gateway and uvicorn (whose access log stays off)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # httpx logs every request URL at INFO, and search URLs carry identifiers.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
