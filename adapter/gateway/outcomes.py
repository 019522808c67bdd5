"""Every error the gateway answers with is a FHIR OperationOutcome.

An EHR integration engine handles one error shape far better than several: whether the
problem is a missing token, an unknown route, a body that is not JSON, a case record that
breaks a schema rule or an upstream that refused the data, the caller gets an
OperationOutcome whose issues carry a severity, an issue-type code, a human diagnostics
text and, when a field is at fault, its path in ``expression`` (``$.patient.sex`` for case
records, ``Bundle.entry[2].resource.status`` for FHIR Bundles). This module builds those
and installs the handlers that make sure FastAPI's own errors take the same shape.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapter.record.errors import RecordError

__all__ = [
    "DISCONNECTED_KEY",
    "FHIR_JSON",
    "MAX_ISSUES",
    "CatchAllMiddleware",
    "ClientGone",
    "GatewayError",
    "Issue",
    "LeftOut",
    "capped",
    "fhir_response",
    "install_exception_handlers",
    "operation_outcome",
    "outcome_response",
    "record_errors",
]

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"

# Rules whose error means the bytes are not JSON at all: 400, not 422.
_MALFORMED_RULES = frozenset({"json", "empty", "encoding", "depth"})
# Record rules (jsonschema keywords and the validator's own names) to FHIR issue-type codes.
_RULE_CODES: Mapping[str, str] = {
    "required": "required",
    "enum": "code-invalid",
    "const": "code-invalid",
    "unknown-concept": "code-invalid",
    "unknown-regimen": "code-invalid",
    "unknown-property": "structure",
    "type": "structure",
    "additionalProperties": "structure",
    "reference": "invalid",
    "unique-id": "duplicate",
}
_STATUS_CODES: Mapping[int, str] = {
    400: "structure",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    408: "timeout",
    409: "conflict",
    413: "too-long",
    415: "not-supported",
    422: "invalid",
    429: "throttled",
    501: "not-supported",
    502: "exception",
    503: "transient",
    504: "timeout",
}


def _json_dumps(value: Any) -> bytes:
    return orjson.dumps(value)


@dataclass(frozen=True)
class Issue:
    """One ``OperationOutcome.issue``; ``expression`` is empty when no field is at fault."""

    severity: str
    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()
    details: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The issue as FHIR JSON, omitting empty elements (FHIR forbids empty arrays)."""
        issue: dict[str, Any] = {"severity": self.severity, "code": self.code}
        if self.details:
            issue["details"] = dict(self.details)
        issue["diagnostics"] = self.diagnostics
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


def error(code: str, diagnostics: str, *expression: str) -> Issue:
    """Shorthand for the common case: an ``error`` issue, optionally located."""
    return Issue("error", code, diagnostics, tuple(expression))


MAX_ISSUES = 100
"""Issues listed in one OperationOutcome; the rest are counted in a last issue. A body with
40,000 problems must not become a 10 MB answer: the first hundred say what is wrong."""


@dataclass(frozen=True)
class LeftOut(Issue):
    """The last issue of a capped list: how many problems were not listed."""

    count: int = 0


def _left_out(count: int) -> LeftOut:
    plural = "s" if count > 1 else ""
    return LeftOut(
        "information", "informational", f"{count} more problem{plural} not shown", (), None, count
    )


def capped(
    issues: Iterable[Issue | Mapping[str, Any]], limit: int = MAX_ISSUES
) -> list[Issue | Mapping[str, Any]]:
    """The first ``limit`` issues, then one saying how many were left out (idempotent)."""
    kept: list[Issue | Mapping[str, Any]] = []
    left_out = 0
    for issue in issues:
        if isinstance(issue, LeftOut):
            left_out += issue.count
        elif len(kept) < limit:
            kept.append(issue)
        else:
            left_out += 1
    if left_out:
        kept.append(_left_out(left_out))
    return kept


def operation_outcome(issues: Iterable[Issue | Mapping[str, Any]]) -> dict[str, Any]:
    """An OperationOutcome from our issues and/or issues copied from an upstream outcome,
    capped at :data:`MAX_ISSUES` with a count of the rest."""
    rendered = [i.to_json() if isinstance(i, Issue) else dict(i) for i in capped(issues)]
    if not rendered:  # OperationOutcome.issue is 1..*
        rendered = [{"severity": "information", "code": "informational", "diagnostics": "ok"}]
    return {"resourceType": "OperationOutcome", "issue": rendered}


def fhir_response(
    status_code: int,
    body: Any,
    *,
    headers: Mapping[str, str] | None = None,
    media_type: str = FHIR_JSON,
) -> Response:
    """A JSON response serialized with orjson (the gateway's hot path avoids pydantic);
    ``bytes`` are taken as already serialized (large bodies are dumped off the event loop)."""
    content = body if isinstance(body, bytes) else _json_dumps(body)
    return Response(content, status_code, headers=dict(headers or {}), media_type=media_type)


def outcome_response(
    status_code: int,
    issues: Iterable[Issue | Mapping[str, Any]],
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An error response: OperationOutcome body, ``application/fhir+json``."""
    return fhir_response(status_code, operation_outcome(issues), headers=headers)


class ClientGone(Exception):
    """The client disconnected before its request was read: there is no one to answer."""


DISCONNECTED_KEY = "fhir_gateway.disconnected"
"""ASGI scope key set when a request ended because its client went away (audit: 499)."""


class GatewayError(Exception):
    """Raised anywhere in a request to answer with an OperationOutcome and a status code."""

    def __init__(
        self,
        status_code: int,
        issues: Issue | Sequence[Issue | Mapping[str, Any]],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = status_code
        # Capped here, so that an error built off the event loop carries no more than it shows.
        self.issues: list[Issue | Mapping[str, Any]] = capped(
            [issues] if isinstance(issues, Issue) else issues
        )
        self.headers = dict(headers or {})
        super().__init__(f"HTTP {status_code}")

    def response(self) -> Response:
        """Render this error."""
        return outcome_response(self.status_code, self.issues, self.headers)

    def __reduce__(self) -> tuple[Any, ...]:
        """Picklable, so that a worker process can refuse a body with its located issues."""
        return (_rebuild_gateway_error, (self.status_code, self.issues, self.headers))


def _rebuild_gateway_error(
    status_code: int, issues: list[Issue | Mapping[str, Any]], headers: dict[str, str]
) -> GatewayError:
    return GatewayError(status_code, issues, headers=headers)


def status_code_issue(status_code: int) -> str:
    """The issue-type code that best tells a client what kind of failure a status is."""
    if status_code in _STATUS_CODES:
        return _STATUS_CODES[status_code]
    return "exception" if status_code >= 500 else "invalid"


def record_error_issue(err: RecordError, rule_system: str) -> Issue:
    """An issue located at the record error's JSON path, carrying the rule as a coding."""
    code = "structure" if err.rule in _MALFORMED_RULES else _RULE_CODES.get(err.rule, "value")
    details = {"coding": [{"system": rule_system, "code": err.rule}]}
    return Issue("error", code, err.message, (err.path,), details)


def record_errors(errors: Sequence[RecordError], rule_system: str) -> GatewayError:
    """All errors of a rejected record in one outcome: 400 if it is not JSON, else 422."""
    status = 400 if any(e.rule in _MALFORMED_RULES for e in errors) else 422
    issues: list[Issue] = [record_error_issue(e, rule_system) for e in errors]
    omitted = getattr(errors, "omitted", 0)  # RecordErrors: what validation's cap left out
    if omitted:
        issues.append(_left_out(omitted))
    return GatewayError(status, issues)


def _location(loc: Sequence[Any]) -> str:
    """``query.fhir_version`` / ``$.a[0].b`` from a FastAPI error location."""
    if not loc:
        return "$"
    where, *rest = loc
    if where == "body":
        path = "$"
        for part in rest:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        return path
    return ".".join(str(part) for part in loc)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    if status == 404:
        detail = "Not Found: no such endpoint or resource"
    elif status == 405:
        detail = f"Method {request.method} is not allowed here"
    headers = dict(exc.headers or {})
    return outcome_response(status, [error(status_code_issue(status), detail)], headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    """Query/path/header problems are the request's syntax (400); body problems are 422."""
    assert isinstance(exc, RequestValidationError)
    issues = []
    in_body = False
    for err in exc.errors():
        loc = tuple(err.get("loc") or ())
        in_body = in_body or (bool(loc) and loc[0] == "body")
        issues.append(error("invalid", str(err.get("msg", "invalid value")), _location(loc)))
    return outcome_response(422 if in_body else 400, issues)


def install_exception_handlers(app: FastAPI) -> None:
    """Make FastAPI/Starlette's own errors OperationOutcomes too."""
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)


class CatchAllMiddleware:
    """Turns any unhandled exception into a 500 OperationOutcome, never a traceback.

    A plain ASGI middleware rather than an ``Exception`` handler, because Starlette re-raises
    from its own server-error handler (so the server would still log and the test client
    still raise); here the exception stops. The traceback goes to the log under an incident
    id that the response repeats, so operators can find it without the client seeing it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except (ClientGone, ClientDisconnect):
            # Not an error of the gateway's: note it for the audit line and answer nobody.
            scope[DISCONNECTED_KEY] = True
            return
        except Exception:
            incident = uuid.uuid4().hex
            log.exception("unhandled error, incident %s", incident)
            if started:
                return  # headers are out; the server closes the connection
            response = outcome_response(
                500,
                [
                    error(
                        "exception",
                        f"internal error in the gateway (incident {incident})",
                    )
                ],
            )
            await response(scope, receive, send)
