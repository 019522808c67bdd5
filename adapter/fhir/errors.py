"""Exceptions raised by the FHIR client, and the OperationOutcome parsing they rely on.

FHIR servers report failures as OperationOutcome resources, but proxies, gateways and
misconfigured servers answer with HTML or plain text. Callers (CLI, gateway, batch push)
should not have to care which one they got: every non-2xx answer becomes an
:class:`OperationOutcomeError` carrying a real OperationOutcome, synthesized if necessary,
so error reporting code has exactly one shape to deal with.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import httpx

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    orjson = None  # type: ignore[assignment]

__all__ = [
    "AuthError",
    "FhirError",
    "FhirTransportError",
    "JsonDict",
    "OperationOutcomeError",
    "OutcomeIssue",
    "dumps_json",
    "loads_json",
    "outcome_from_response",
    "redact_url",
]

JsonDict = dict[str, Any]

_EXCERPT_CHARS = 200
_TAG_RE = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_SPACE_RE = re.compile(r"\s+")


def loads_json(data: bytes | str) -> Any:
    """Decode JSON with orjson when present, because bundles from $everything get large.

    Lives here rather than in the client because error parsing and retry classification
    need the same decoder and must not import the client.
    """
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)  # pragma: no cover - exercised only without orjson


def dumps_json(value: Any) -> bytes:
    """Encode JSON to bytes, because request bodies are sent (and re-sent) as raw bytes."""
    if orjson is not None:
        return orjson.dumps(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()  # pragma: no cover


def redact_url(url: httpx.URL | str) -> str:
    """Render a URL for messages and logs with query values removed.

    Search parameters routinely carry patient identifiers, names and birth dates; error
    messages end up in logs and tickets, so only the parameter names are kept.
    """
    parsed = httpx.URL(str(url))
    base = str(parsed.copy_with(query=None, fragment=None))
    if not parsed.query:
        return base
    names = [key for key, _ in parsed.params.multi_items()]
    return base + "?" + "&".join(f"{name}=…" for name in names)


@dataclass(frozen=True)
class OutcomeIssue:
    """One OperationOutcome.issue flattened to what callers actually report on.

    ``expression`` falls back to the deprecated ``location`` so R4 servers that only fill
    ``location`` still point at the offending element.
    """

    severity: str
    code: str
    diagnostics: str | None
    expression: list[str]

    @classmethod
    def from_json(cls, issue: Any) -> OutcomeIssue:
        """Tolerate malformed issues, because an error path must never raise on bad input."""
        if not isinstance(issue, dict):
            return cls(severity="error", code="unknown", diagnostics=str(issue), expression=[])
        diagnostics = issue.get("diagnostics")
        if not isinstance(diagnostics, str) or not diagnostics:
            diagnostics = _details_text(issue.get("details"))
        expression = issue.get("expression") or issue.get("location") or []
        if not isinstance(expression, list):
            expression = [expression]
        return cls(
            severity=str(issue.get("severity") or "error"),
            code=str(issue.get("code") or "unknown"),
            diagnostics=diagnostics,
            expression=[str(item) for item in expression],
        )

    def describe(self) -> str:
        """Single-line rendering so a multi-issue outcome still fits a log line."""
        text = f"{self.severity}/{self.code}"
        if self.diagnostics:
            text += f": {self.diagnostics}"
        if self.expression:
            text += f" [at {', '.join(self.expression)}]"
        return text


def _details_text(details: Any) -> str | None:
    """Use details.text/coding.display when diagnostics is absent (common on terminology errors)."""
    if not isinstance(details, dict):
        return None
    text = details.get("text")
    if isinstance(text, str) and text:
        return text
    for coding in details.get("coding") or []:
        if isinstance(coding, dict):
            label = coding.get("display") or coding.get("code")
            if isinstance(label, str) and label:
                return label
    return None


def parse_issues(outcome: JsonDict) -> list[OutcomeIssue]:
    """Flatten an OperationOutcome's issues; shared by errors and ``validate`` callers."""
    raw = outcome.get("issue")
    if not isinstance(raw, list):
        return []
    return [OutcomeIssue.from_json(issue) for issue in raw]


class FhirError(Exception):
    """Base for everything this package raises, so callers can catch one type."""


class AuthError(FhirError):
    """The authorization server refused to issue a token.

    Kept separate from OperationOutcomeError because the fix is in credentials or client
    registration, not in the data being sent.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error: str | None = None,
        error_description: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.error_description = error_description


class OperationOutcomeError(FhirError):
    """A non-2xx answer from the FHIR server, always carrying an OperationOutcome.

    ``outcome`` is the server's own OperationOutcome when it sent one, otherwise one
    synthesized from the status and body excerpt, so reporting code never special-cases
    HTML error pages.
    """

    def __init__(
        self,
        status_code: int,
        outcome: JsonDict,
        *,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.outcome = outcome
        self.issues = parse_issues(outcome)
        self.method = method
        self.url = url
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.method and self.url:
            where = f" from {self.method} {self.url}"
        elif self.url:
            where = f" from {self.url}"
        if self.issues:
            detail = "; ".join(issue.describe() for issue in self.issues)
        else:
            detail = "OperationOutcome without issues"
        return f"HTTP {self.status_code}{where}: {detail}"

    def __str__(self) -> str:
        return self._render()


class FhirTransportError(FhirError):
    """The server could not be reached, or the connection broke and retrying was unsafe.

    Carries the attempt count and last cause so an operator can tell "server down" from
    "one flaky read on a non-replayable transaction".
    """

    def __init__(
        self,
        *,
        method: str,
        url: str,
        attempts: int,
        cause: BaseException,
        reason: str | None = None,
    ) -> None:
        self.method = method
        self.url = url
        self.attempts = attempts
        self.cause = cause
        self.reason = reason
        plural = "attempt" if attempts == 1 else "attempts"
        message = (
            f"{method} {url} failed after {attempts} {plural}: "
            f"{type(cause).__name__}: {cause or 'no detail'}"
        )
        if reason:
            message += f" ({reason})"
        super().__init__(message)


def _synthesized_code(status_code: int) -> str:
    """Pick an issue code that tells the caller what kind of action helps."""
    if status_code in (401, 403):
        return "security"
    if status_code in (404, 410):
        return "not-found"
    if status_code in (408, 429, 502, 503, 504):
        return "transient"
    return "exception"


def _excerpt(response: httpx.Response) -> str:
    """Short, tag-free text of a non-FHIR body; HTML error pages are mostly markup."""
    try:
        text = response.text
    except Exception:  # pragma: no cover - undecodable body
        text = ""
    content_type = response.headers.get("content-type", "").lower()
    if "html" in content_type or text.lstrip().startswith("<"):
        text = _TAG_RE.sub(" ", text)
    text = _SPACE_RE.sub(" ", text).strip()
    if len(text) > _EXCERPT_CHARS:
        text = text[: _EXCERPT_CHARS - 1] + "…"
    return text


def synthesize_outcome(response: httpx.Response) -> JsonDict:
    """Build an OperationOutcome for a body that is not one."""
    reason = response.reason_phrase or "error"
    content_type = response.headers.get("content-type") or "no content type"
    excerpt = _excerpt(response)
    diagnostics = f"HTTP {response.status_code} {reason}; non-FHIR response ({content_type})"
    diagnostics += f": {excerpt}" if excerpt else ", empty body"
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": _synthesized_code(response.status_code),
                "diagnostics": diagnostics,
            }
        ],
    }


def outcome_in_body(response: httpx.Response) -> JsonDict | None:
    """Return the body if (and only if) it is an OperationOutcome."""
    if not response.content:
        return None
    try:
        body = loads_json(response.content)
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return body
    return None


def outcome_from_response(response: httpx.Response) -> OperationOutcomeError:
    """Turn a failed response into the exception callers catch.

    Returned rather than raised so call sites read ``raise outcome_from_response(r)`` and
    type checkers see the control flow.
    """
    outcome = outcome_in_body(response) or synthesize_outcome(response)
    method: str | None
    url: str | None
    try:
        request = response.request
    except RuntimeError:
        method, url = None, None
    else:
        method, url = request.method, redact_url(request.url)
    return OperationOutcomeError(response.status_code, outcome, method=method, url=url)
