"""``GET /patients/{identifier}/case-record``: pull a patient's resources and reverse-map them.

A caller reads only its own namespace: the Patient searched for is the one whose identifier
is ``{caller's namespace}/fhir/identifier/case-record|{identifier}``. The identifier must have
the form of a record_id (checked before anything is sent upstream) and is escaped in the
search anyway, so no value can widen the search; and every answer depends only on that one
Patient, so the status reveals nothing about other data on the server (no 400-versus-404
oracle).

The reverse mapping lives in :mod:`adapter.reverse` and is imported when the route is
called, so the gateway runs (and answers 501 here) in builds that do not have it yet.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from adapter.fhir import AuthError, FhirError, FhirTransportError, OperationOutcomeError
from adapter.gateway.dependencies import GatewayDep, ReadPrincipal
from adapter.gateway.openapi import error_responses, json_response
from adapter.gateway.outcomes import GatewayError, Issue, error, fhir_response
from adapter.mappings import case_record_schema

router = APIRouter(tags=["case records"])


@lru_cache(maxsize=1)
def _record_id_pattern() -> re.Pattern[str]:
    """The schema's record_id pattern: a pulled identifier is a record_id."""
    pattern: str = case_record_schema()["properties"]["record_id"]["pattern"]
    return re.compile(pattern)


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
    if not _record_id_pattern().match(identifier):
        raise GatewayError(
            400,
            error(
                "value",
                f"the identifier must be a record_id ({_record_id_pattern().pattern})",
                "identifier",
            ),
        )
    assert principal.client is not None  # ReadPrincipal is bound to a client
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
        record: Any = await run_in_threadpool(pull, client, identifier, principal.client.namespace)
    except (KeyError, IndexError):
        raise  # a bug in the mapping, not a missing patient: the catch-all reports it
    except LookupError:
        raise GatewayError(404, error("not-found", "no case record for this identifier")) from None
    except ValueError:
        # The identifier was checked above; this is the upstream's data failing to map back
        # (or an id from the upstream that cannot go into a URL): not the caller's fault.
        raise GatewayError(
            502, error("exception", "the patient's resources could not be mapped back")
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
