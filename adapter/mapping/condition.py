"""Diagnoses → Condition, with ISCL/EORTC stagings as Condition.stage plus stage Observations.

Codes come only from mappings/terminology/conditions.json. Each dated staging becomes a stage
group Observation with one member Observation per T, N, M and B category; the summary keeps the
group as the source wrote it beside the finer group the categories give.
"""

from __future__ import annotations

from typing import Any

from adapter import terminology
from adapter.mapping.computed import Computed, mark
from adapter.mapping.context import MappingContext
from adapter.mapping.datatypes import UCUM, annotation, coding, concept, text_concept
from adapter.mapping.staging import stage_conflict

CLINICAL_STATUS = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ASSERTED_DATE = "http://hl7.org/fhir/StructureDefinition/condition-assertedDate"
STAGING_SYSTEM_TEXT = (
    "ISCL/EORTC TNMB staging of mycosis fungoides and Sézary syndrome (Olsen 2007)"
)

_STATUS = {
    "active": "active",
    "relapse": "relapse",
    "remission": "remission",
    "resolved": "resolved",
}
_AXES = (
    ("t", "primary_tumor_clinical", "T"),
    ("n", "regional_nodes_clinical", "N"),
    ("m", "distant_metastases_clinical", "M"),
    ("b", "blood", "B"),
)


def _staging_method(ctx: MappingContext) -> dict[str, Any]:
    return {
        "coding": [coding(ctx.code_system("iscl-eortc"), "iscl-eortc-2007", "ISCL/EORTC 2007")],
        "text": STAGING_SYSTEM_TEXT,
    }


def _stage_code(key: str, fallback: str) -> dict[str, Any]:
    """Observation.code for a staging axis: verified LOINC from staging.json, else text."""
    entry = terminology.table("staging").get(key)
    return entry.codeable_concept() if entry else text_concept(fallback)


def _stage_observation(
    ctx: MappingContext,
    key: str,
    code: dict[str, Any],
    value_code: str,
    value_text: str,
    effective: str | None,
    members: list[str] | None,
    value_computed: Computed | None = None,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [ctx.identifier("Observation", key)],
        "status": "final",
        "category": [{"coding": [coding(OBSERVATION_CATEGORY, "exam", "Exam")]}],
        "code": code,
        "subject": ctx.patient_reference,
    }
    if effective:
        resource["effectiveDateTime"] = effective
    resource["valueCodeableConcept"] = {
        "coding": [mark(ctx, coding(ctx.code_system("iscl-eortc"), value_code), value_computed)],
        "text": value_text,
    }
    resource["method"] = _staging_method(ctx)
    if members:
        resource["hasMember"] = [ctx.reference("Observation", m) for m in members]
    return resource


def map_staging(
    ctx: MappingContext,
    dx: dict[str, Any],
    index: int,
    staging: dict[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """``(Condition.stage entry, stage Observations, warnings)`` for one staging."""
    warnings: list[str] = []
    derived, conflict = stage_conflict(staging)
    where = f"$.diagnoses[?(@.id=='{dx['id']}')].stagings[{index}]"
    if conflict:
        warnings.append(f"{where}: {conflict}")
    written = staging.get("group")
    group_key = f"{dx['id']}.stage{index + 1}"
    date = staging.get("date")
    members = []
    observations = []
    for axis, table_key, letter in _AXES:
        if axis in staging:
            key = f"{group_key}.{letter.lower()}"
            members.append(key)
            observations.append(
                _stage_observation(
                    ctx,
                    key,
                    _stage_code(table_key, f"ISCL/EORTC {letter} category"),
                    staging[axis],
                    staging[axis],
                    date,
                    None,
                )
            )
    summary_code = derived or written
    # The finer group the categories give is the adapter's reading of the staging table, not
    # the source's words: marked computed unless it is also the group as written.
    summary_computed = (
        Computed(
            "staging-table",
            "ISCL/EORTC group of "
            + " ".join(staging[a] for a in ("t", "n", "m", "b") if a in staging)
            + " (mappings/staging/iscl-eortc.json)",
        )
        if derived and derived != written
        else None
    )
    if written and derived and written != derived:
        summary_text = f"{written} (as written); {derived} derived from " + " ".join(
            staging[a] for a in ("t", "n", "m", "b")
        )
    else:
        summary_text = written or f"{derived} (derived from categories)"
    if "text" in staging:
        summary_text += f"; source: {staging['text']}"
    stage_entry: dict[str, Any] = {}
    assessments = []
    if summary_code:
        observations.insert(
            0,
            _stage_observation(
                ctx,
                group_key,
                _stage_code("stage_group_clinical", "ISCL/EORTC stage group"),
                summary_code,
                summary_text,
                date,
                members,
                summary_computed,
            ),
        )
        assessments.append(ctx.reference("Observation", group_key))
        stage_entry["summary"] = {
            "coding": [
                mark(ctx, coding(ctx.code_system("iscl-eortc"), summary_code), summary_computed)
            ],
            "text": summary_text,
        }
    else:
        stage_entry["summary"] = text_concept(summary_text)
        assessments = [ctx.reference("Observation", m) for m in members]
    if assessments:
        stage_entry["assessment"] = assessments
    stage_entry["type"] = _staging_method(ctx)
    return stage_entry, observations, warnings


def _onset(dx: dict[str, Any], ages: list[dict[str, Any]]) -> dict[str, Any]:
    """onset[x]: a date, else the source's words, else the age at diagnosis of the lymphoma."""
    if "onset" in dx:
        return {"onsetDateTime": dx["onset"]}
    if "onset_text" in dx:
        return {"onsetString": dx["onset_text"]}
    if dx["role"] == "primary":
        for age in ages:
            if age["refers_to"] in {"diagnosis", "symptom_onset"}:
                return {
                    "onsetAge": {
                        "value": age["years"],
                        "unit": "years",
                        "system": UCUM,
                        "code": "a",
                    }
                }
    return {}


def _evidence(ctx: MappingContext, dx: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for finding in dx.get("evidence", []):
        parts = [finding["kind"].replace("_", " ")]
        if "date" in finding:
            parts.append(finding["date"])
        if "site" in finding:
            parts.append(finding["site"])
        text = f"{', '.join(parts)}: {finding['text']}"
        if ctx.version == "R5":
            items.append({"concept": text_concept(text)})
        else:
            # R4: the finding's words name the evidence itself (detail), not a code: mCODE's
            # cancer conditions bind evidence.code to a required value set of evidence types
            # that the source's words are not.
            items.append({"detail": [{"display": text}]})
    return items


def map_condition(
    ctx: MappingContext,
    record: dict[str, Any],
    dx: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[str]]:
    """``(Condition followed by its stage Observations, warnings)`` for one diagnosis."""
    resource: dict[str, Any] = {"resourceType": "Condition"}
    condition_extensions: list[dict[str, Any]] = [
        {"url": ctx.extension_url("diagnosis-role"), "valueCode": dx["role"]},
        {"url": ctx.extension_url("concept-key"), "valueCode": dx["condition"]},
    ]
    if "diagnosed" in dx:
        condition_extensions.append({"url": ASSERTED_DATE, "valueDateTime": dx["diagnosed"]})
    resource["extension"] = condition_extensions
    resource["identifier"] = [ctx.identifier("Condition", dx["id"])]
    if "status" in dx:
        resource["clinicalStatus"] = {"coding": [coding(CLINICAL_STATUS, _STATUS[dx["status"]])]}
    elif ctx.version == "R5":
        resource["clinicalStatus"] = {
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                    "valueCode": "unknown",
                }
            ]
        }
    resource["verificationStatus"] = {
        "coding": [coding(VERIFICATION_STATUS, dx.get("verification", "confirmed"))]
    }
    resource["category"] = [{"coding": [coding(CONDITION_CATEGORY, "problem-list-item")]}]
    text = dx.get("text")
    if "variant" in dx:
        named = text or terminology.lookup("conditions", dx["condition"]).display
        text = f"{named} ({dx['variant']} variant)"
    resource["code"] = concept("conditions", dx["condition"], text)
    resource["subject"] = ctx.patient_reference
    resource.update(_onset(dx, record["patient"].get("ages", [])))
    stages: list[dict[str, Any]] = []
    observations: list[dict[str, Any]] = []
    warnings: list[str] = []
    for index, staging in enumerate(dx.get("stagings", [])):
        entry, stage_observations, stage_warnings = map_staging(ctx, dx, index, staging)
        stages.append(entry)
        observations.extend(stage_observations)
        warnings.extend(stage_warnings)
    if stages:
        resource["stage"] = stages
    evidence = _evidence(ctx, dx)
    if evidence:
        resource["evidence"] = evidence
    if "note" in dx:
        resource["note"] = [annotation(dx["note"])]
    for obs in observations:
        obs["focus"] = [ctx.reference("Condition", dx["id"])]
    return [resource, *observations], warnings
