"""The trial a case comes from → ResearchStudy, so adverse events can name their study."""

from __future__ import annotations

from typing import Any

from adapter.mapping.context import MappingContext
from adapter.mapping.datatypes import data_absent

STUDY_KEY = "study"


def map_research_study(ctx: MappingContext, trial: dict[str, Any]) -> dict[str, Any]:
    """ResearchStudy with the trial's registry number; its status is not in the record.

    R4 requires a status and the case report does not give the trial's, so R4 carries a
    data-absent-reason; R5's publication-status has ``unknown`` for exactly this.
    """
    identifiers: list[dict[str, Any]] = [ctx.identifier("ResearchStudy", STUDY_KEY)]
    if "registry_id" in trial:
        identifiers.append(
            {"type": {"text": "ClinicalTrials.gov NCT number"}, "value": trial["registry_id"]}
        )
    resource: dict[str, Any] = {
        "resourceType": "ResearchStudy",
        "identifier": identifiers,
        "title": trial["name"],
    }
    if ctx.version == "R5":
        resource["status"] = "unknown"
    else:
        resource["_status"] = data_absent("unknown")
    if "arm" in trial:
        resource["arm" if ctx.version == "R4" else "comparisonGroup"] = [{"name": trial["arm"]}]
    return resource
