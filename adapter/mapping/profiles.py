"""Which mCODE STU4 profile each resource of an R4 bundle claims (``meta.profile``).

A claim is a promise to a receiver that the resource passes the profile, so it is made only
where the resource meets it: which profile fits which resource, and on what condition, is data
(``mappings/profiles.json``); this module evaluates those conditions on the finished resources,
after every mapper has run, because several depend on other resources (a stage Observation
claims CancerStage only when the Condition it is about claims PrimaryCancerCondition). The
conformance test (tests/conformance/test_profiles.py) proves every claim with the HL7
validator. R5 output and records whose primary diagnosis is not a cancer claim nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adapter import terminology
from adapter.mapping.context import MappingContext
from adapter.mappings import mcode_profiles

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_NOT_A_DIAGNOSIS = frozenset({f"{_VERIFICATION}|refuted", f"{_VERIFICATION}|entered-in-error"})

Resource = dict[str, Any]


def _codes(concept: dict[str, Any] | None) -> set[str]:
    """``system|code`` of every coding of a CodeableConcept."""
    return {f"{c.get('system')}|{c.get('code')}" for c in (concept or {}).get("coding", [])}


def _concept_key(ctx: MappingContext, resource: Resource) -> str | None:
    url = ctx.extension_url("concept-key")
    keys = (e.get("valueCode") for e in resource.get("extension", []) if e["url"] == url)
    return next(keys, None)


def _diagnosed(resource: Resource) -> bool:
    """Whether a Condition is a diagnosis of the patient (not refuted, not an error)."""
    return not _codes(resource.get("verificationStatus")) & _NOT_A_DIAGNOSIS


def _has_rxnorm(concept: dict[str, Any] | None) -> bool:
    return any(c.get("system") == RXNORM for c in (concept or {}).get("coding", []))


class _Claims:
    """The conditions of profiles.json for one bundle; each judge returns a profiles.json key
    or ``None``."""

    def __init__(self, ctx: MappingContext) -> None:
        self.ctx = ctx
        self.profiles = mcode_profiles()
        self.primary_cancers: set[str] = set()
        """fullUrls of the Conditions that claim PrimaryCancerCondition."""
        self.cancer_reason = [ctx.reference("Condition", ctx.cancer_condition or "")]
        self.trend_codes = {
            f"{c.system}|{c.code}"
            for key in self.profiles["cancer_disease_status"]["value_concepts"]
            for c in terminology.lookup("responses", key).emitted
        }

    def condition(self, resource: Resource) -> str | None:
        key = _concept_key(self.ctx, resource)
        if not _diagnosed(resource):
            return None
        for name in ("primary_cancer_condition", "secondary_cancer_condition"):
            if key in self.profiles[name]["condition_keys"]:
                return name
        return None

    def _about_primary_cancer(self, resource: Resource) -> bool:
        focus = resource.get("focus", [])
        return bool(focus) and all(f.get("reference") in self.primary_cancers for f in focus)

    def observation(self, resource: Resource) -> str | None:
        codes = _codes(resource.get("code"))
        if not self._about_primary_cancer(resource):
            return None
        text = resource.get("code", {}).get("text")
        for name in ("cancer_stage", "tnm_category"):
            profile = self.profiles[name]
            if codes & set(profile["codes"]) or text in profile.get("texts", ()):
                return name
        if codes & set(self.profiles["cancer_disease_status"]["codes"]):
            value = resource.get("valueCodeableConcept")
            if value and _codes(value) & self.trend_codes and "effectivePeriod" not in resource:
                return "cancer_disease_status"
        return None

    def medication_request(self, resource: Resource) -> str | None:
        if (
            _has_rxnorm(resource.get("medicationCodeableConcept"))
            and (resource.get("intent") != "order" or "requester" in resource)
            and resource.get("reasonReference") == self.cancer_reason
        ):
            return "cancer_related_medication_request"
        return None

    def medication_administration(self, resource: Resource) -> str | None:
        coded_reasons = any("coding" in r for r in resource.get("statusReason", []))
        if (
            _has_rxnorm(resource.get("medicationCodeableConcept"))
            and not (coded_reasons and resource["status"] != "stopped")
            and resource.get("reasonReference") == self.cancer_reason
        ):
            return "cancer_related_medication_administration"
        return None


def _claiming(resource: Resource, url: str) -> Resource:
    """The resource with ``meta.profile`` right after ``resourceType`` (and ``id``)."""
    meta = {"profile": [url]}
    # Keys written first keep their place when ``**resource`` repeats them (same values), so
    # this is the order above, built in one C-level step rather than key by key.
    if "id" in resource:
        return {
            "resourceType": resource["resourceType"],
            "id": resource["id"],
            "meta": meta,
            **resource,
        }
    return {"resourceType": resource["resourceType"], "meta": meta, **resource}


def claim_mcode_profiles(
    ctx: MappingContext, resources: list[Resource], full_urls: list[str]
) -> list[Resource]:
    """``resources`` with the profile each meets claimed; ``full_urls`` are their entries'.

    Conditions are judged first, since the Observations and medications about a cancer claim
    their profiles only when the Condition they point at claims PrimaryCancerCondition.
    """
    if ctx.version != "R4" or ctx.cancer_condition is None:
        return resources
    claims = _Claims(ctx)
    chosen: list[str | None] = [None] * len(resources)
    for index, resource in enumerate(resources):
        if resource["resourceType"] == "Condition":
            chosen[index] = claims.condition(resource)
            if chosen[index] == "primary_cancer_condition":
                claims.primary_cancers.add(full_urls[index])
    if claims.cancer_reason[0]["reference"] not in claims.primary_cancers:
        claims.cancer_reason = []
    judges: dict[str, Callable[[Resource], str | None]] = {
        "Patient": lambda _: "cancer_patient",
        "Observation": claims.observation,
        "MedicationRequest": claims.medication_request,
        "MedicationAdministration": claims.medication_administration,
    }
    for index, resource in enumerate(resources):
        judge = judges.get(resource["resourceType"])
        if judge is not None:
            chosen[index] = judge(resource)
    return [
        _claiming(resource, claims.profiles[name]["url"]) if name else resource
        for resource, name in zip(resources, chosen, strict=True)
    ]
