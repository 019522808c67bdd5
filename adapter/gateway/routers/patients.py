"""``GET /patients/{identifier}/case-record``: pull a patient's resources and reverse-map them.

The reverse mapping lives in :mod:`adapter.reverse` and is imported when the route is
called, so the gateway runs (and answers 501 here) in builds that do not have it yet.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from adapter.fhir import AuthError, FhirError, FhirTransportError, OperationOutcomeError
from adapter.gateway.dependencies import GatewayDep, ReadPrincipal
from adapter.gateway.openapi import error_responses, json_response
from adapter.gateway.outcomes import GatewayError, Issue, error, fhir_response

router = APIRouter(tags=["case records"])


@router.get(
    "/patients/{identifier}/case-record",
    summary="Pull a patient's FHIR resources and map them back to a case record",
    responses={
        200: json_response("CaseRecord", "The case record"),
        **error_responses((400, 401, 403, 404, 500, 501, 502, 503)),
    },
)
async def pull_case_record(
    principal: ReadPrincipal,
    gateway: GatewayDep,
    identifier: str = Path(
        min_length=1,
        max_length=256,
        description="The Patient's identifier value in the case-record system (its record_id)",
    ),
) -> Response:
    """Read the patient from the upstream server and return the case record it encodes."""
    try:
        from adapter.reverse import pull_case_record as pull
    except ImportError:
        raise GatewayError(
            501,
            error(
                "not-supported", "reverse mapping (adapter.reverse) is not available in this build"
            ),
        ) from None
    client = gateway.sync_client()
    try:
        record: Any = await run_in_threadpool(pull, client, identifier, gateway.settings.namespace)
    except (KeyError, IndexError):
        raise  # a bug in the mapping, not a missing patient: the catch-all reports it
    except LookupError:
        raise GatewayError(404, error("not-found", "no case record for this identifier")) from None
    except ValueError as exc:
        # The client rejects ids and types that cannot go into a URL (path traversal guard).
        raise GatewayError(
            400, error("value", f"the identifier cannot be looked up: {exc}", "identifier")
        ) from None
    except OperationOutcomeError as exc:
        if exc.status_code in (404, 410):
            raise GatewayError(
                404, error("not-found", "no case record for this identifier")
            ) from None
        issues: list[Issue | dict[str, Any]] = list(exc.outcome.get("issue") or [])
        issues.append(error("exception", f"the upstream server answered HTTP {exc.status_code}"))
        raise GatewayError(502, issues) from None
    except FhirTransportError:
        raise GatewayError(
            503,
            error("transient", "the upstream server is unreachable"),
            headers={"Retry-After": "30"},
        ) from None
    except (AuthError, FhirError):
        raise GatewayError(
            502, error("exception", "the upstream server could not be read")
        ) from None
    if not isinstance(record, dict):
        raise GatewayError(502, error("exception", "reverse mapping returned no case record"))
    return fhir_response(200, record, media_type="application/json")
