"""The OpenAPI description: real request-body schemas and OperationOutcome error responses.

Handlers read raw bytes (they must report malformed JSON as a located OperationOutcome, and
must not pay for pydantic on the hot path), so FastAPI cannot derive the request bodies;
they are declared here instead: the case-record JSON Schema itself (from ``mappings/``,
so the docs never drift from the validator) and the outline of a FHIR Bundle. The same
document drives the schemathesis test that checks no input yields a server error.
"""

from __future__ import annotations

import copy
import html
from collections.abc import Callable, Iterable
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from adapter.mappings import case_record_schema

__all__ = [
    "ERROR_STATUSES",
    "bundle_body",
    "case_record_body",
    "docs_page",
    "error_responses",
    "install_docs_page",
    "install_openapi",
    "json_response",
]

REF = "#/components/schemas/{model}"
CASE_RECORD = "CaseRecord"
FHIR_MEDIA_TYPES = ("application/fhir+json", "application/json")


class OperationOutcomeIssue(BaseModel):
    """One problem: ``expression`` locates the field (``$.patient.sex``, ``Bundle.entry[0]``)."""

    model_config = ConfigDict(extra="allow")
    severity: Literal["fatal", "error", "warning", "information"]
    code: str = Field(description="FHIR issue-type code (required, value, structure, login...)")
    diagnostics: str | None = None
    expression: list[str] | None = None
    details: dict[str, Any] | None = None


class OperationOutcome(BaseModel):
    """Every error response of the gateway."""

    model_config = ConfigDict(extra="allow")
    resourceType: Literal["OperationOutcome"]
    issue: list[OperationOutcomeIssue]


class SubmissionReference(BaseModel):
    """A resource the upstream created (201) or matched (200) for one bundle entry."""

    status: str
    location: str | None = None
    reference: str | None = None


class Upstream(BaseModel):
    """The upstream server's answer: a trimmed transaction-response, or its OperationOutcome."""

    status: int | None
    response: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None


class Submission(BaseModel):
    """A pushed case record or Bundle as the outbox sees it."""

    id: str
    status: Literal["queued", "delivered", "failed", "superseded"]
    kind: Literal["case-record", "bundle"]
    bundleType: Literal["transaction", "batch"]
    location: str
    created: str
    updated: str
    attempts: int
    nextAttempt: str | None = None
    warnings: list[str] | None = None
    error: str | None = None
    upstream: Upstream | None = None
    references: list[SubmissionReference] | None = None


class Health(BaseModel):
    """Liveness / readiness answer."""

    status: Literal["ok", "ready"]
    checks: dict[str, Any] | None = None


_MODELS: tuple[type[BaseModel], ...] = (OperationOutcome, Submission, Health)

BUNDLE_SCHEMA: dict[str, Any] = {
    "title": "Bundle",
    "description": "A FHIR transaction or batch Bundle. Each entry is a POST with "
    "request.ifNoneExist (conditional create) or a PUT, of an accepted resource type.",
    "type": "object",
    "required": ["resourceType", "type", "entry"],
    "properties": {
        "resourceType": {"const": "Bundle"},
        "type": {"enum": ["transaction", "batch"]},
        "entry": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["resource", "request"],
                "properties": {
                    "fullUrl": {"type": "string"},
                    "resource": {
                        "type": "object",
                        "required": ["resourceType"],
                        "properties": {"resourceType": {"type": "string"}},
                    },
                    "request": {
                        "type": "object",
                        "required": ["method", "url"],
                        "properties": {
                            "method": {"enum": ["POST", "PUT"]},
                            "url": {"type": "string"},
                            "ifNoneExist": {"type": "string"},
                        },
                    },
                },
            },
        },
    },
}

ERROR_STATUSES: dict[int, str] = {
    400: "Malformed JSON or an invalid query/path parameter",
    401: "No, unknown or expired bearer token (with a WWW-Authenticate challenge)",
    403: "The credential lacks the scope this endpoint needs, or the Bundle writes outside "
    "the caller's space (docs/authorization.md); one issue per refused element",
    404: "No such resource",
    408: "The request body did not arrive within FHIR_ADAPTER_BODY_TIMEOUT",
    413: "Body larger than FHIR_ADAPTER_MAX_BODY_BYTES",
    415: "Content-Type is not application/fhir+json or application/json",
    422: "The body breaks a schema or validation rule; one issue per problem (the first 100, "
    "then a count of the rest)",
    429: "Rate limit exceeded (per credential, per address, or after failed "
    "authentications); see Retry-After",
    500: "Internal error (never caused by input); see the incident id in the log",
    501: "Not available in this build",
    502: "The upstream server refused the submission for a reason the caller cannot fix",
    503: "The upstream server or the queue is unavailable, the gateway is busy, or no "
    "upstream is configured; see Retry-After",
}


def _rewrite_refs(node: Any, prefix: str) -> Any:
    """``#/$defs/x`` → ``#/components/schemas/<prefix>_x`` throughout a schema."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                out[key] = REF.format(model=f"{prefix}_{value[len('#/$defs/') :]}")
            else:
                out[key] = _rewrite_refs(value, prefix)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, prefix) for item in node]
    return node


def case_record_schemas() -> dict[str, Any]:
    """The case-record schema and its ``$defs`` as OpenAPI components.

    ``$id`` and ``$schema`` are dropped: inside the OpenAPI document an ``$id`` would re-base
    every ``$ref`` onto the schema's own URL, where the components are not.
    """
    schema = copy.deepcopy(case_record_schema())
    definitions = schema.pop("$defs", {})
    for key in ("$id", "$schema"):
        schema.pop(key, None)
    components = {CASE_RECORD: _rewrite_refs(schema, CASE_RECORD)}
    for name, definition in definitions.items():
        components[f"{CASE_RECORD}_{name}"] = _rewrite_refs(definition, CASE_RECORD)
    return components


def _body(ref: str, description: str) -> dict[str, Any]:
    schema = {"$ref": REF.format(model=ref)}
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {media: {"schema": schema} for media in FHIR_MEDIA_TYPES},
        }
    }


def case_record_body() -> dict[str, Any]:
    """``openapi_extra`` of the case-record endpoints."""
    return _body(CASE_RECORD, "A case record (mappings/case-record.schema.json).")


def bundle_body() -> dict[str, Any]:
    """``openapi_extra`` of ``POST /fhir``."""
    return _body("Bundle", "A FHIR transaction or batch Bundle.")


def json_response(
    model: str, description: str, media_type: str = "application/json", **extra: Any
) -> dict[str, Any]:
    """A documented success response whose schema is one of our components."""
    response: dict[str, Any] = {
        "description": description,
        "content": {media_type: {"schema": {"$ref": REF.format(model=model)}}},
    }
    response.update(extra)
    return response


def error_responses(statuses: Iterable[int]) -> dict[int | str, dict[str, Any]]:
    """OperationOutcome responses for the given statuses (for a route's ``responses``)."""
    return {
        status: json_response("OperationOutcome", ERROR_STATUSES[status], "application/fhir+json")
        for status in statuses
    }


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that adds our component schemas."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        _, model_schemas = models_json_schema(
            [(model, "serialization") for model in _MODELS], ref_template=REF
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(model_schemas.get("$defs", {}))
        schemas["Bundle"] = BUNDLE_SCHEMA
        schemas["FhirResource"] = {
            "type": "object",
            "required": ["resourceType"],
            "properties": {"resourceType": {"type": "string"}},
            "additionalProperties": True,
        }
        schemas.update(case_record_schemas())
        app.openapi_schema = document
        return document

    setattr_openapi: Callable[[], dict[str, Any]] = openapi
    app.openapi = setattr_openapi  # type: ignore[method-assign]


DOCS_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
"""The docs page is static HTML: no script, no third-party host, nothing loaded at all."""


def docs_page(document: dict[str, Any]) -> str:
    """The API reference as one static HTML page, rendered from the OpenAPI document."""
    rows = []
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            statuses = ", ".join(str(code) for code in operation.get("responses", {}))
            rows.append(
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}<p>{}</p></td>"
                "<td>{}</td></tr>".format(
                    html.escape(method.upper()),
                    html.escape(path),
                    html.escape(str(operation.get("summary", ""))),
                    html.escape(str(operation.get("description", ""))).replace("\n", "<br>"),
                    html.escape(statuses),
                )
            )
    info = document.get("info", {})
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(str(info.get('title', 'API')))}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{vertical-align:top;padding:.3em;"
        "border-bottom:1px solid #ccc}p{margin:.3em 0 0;color:#444}</style></head><body>"
        f"<h1>{html.escape(str(info.get('title', '')))} {html.escape(str(info.get('version')))}"
        f"</h1><p>{html.escape(str(info.get('description', ''))).replace(chr(10), '<br>')}</p>"
        '<p>Machine-readable: <a href="openapi.json">openapi.json</a></p>'
        "<table><tr><th>Method</th><th>Path</th><th>What it does</th><th>Statuses</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )


def install_docs_page(app: FastAPI) -> None:
    """``GET /docs``: :func:`docs_page` with a Content-Security-Policy that loads nothing."""

    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app.openapi()), headers={"Content-Security-Policy": DOCS_CSP})

    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
