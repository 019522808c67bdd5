"""One Provenance per record: every resource it produced came from this publication and case."""

from __future__ import annotations

from typing import Any

from adapter import __version__
from adapter.mapping.context import MappingContext
from adapter.mapping.research_study import trial_reference

PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
PROVENANCE_KEY = "provenance"


def provenance_id(ctx: MappingContext) -> str:
    """Client-assigned id: Provenance has no identifier element, so resends PUT to one id."""
    return ctx.client_id("Provenance", PROVENANCE_KEY)


def map_provenance(
    ctx: MappingContext, record: dict[str, Any], targets: list[str], recorded: str
) -> dict[str, Any]:
    """Provenance whose targets are all resources of the bundle and whose entity is the source."""
    source = record["source"]
    what: dict[str, Any] = {"display": f"{source['citation']}, case {source['case_number']}"}
    if "doi" in source:
        what["identifier"] = {
            "system": "urn:ietf:rfc:3986",
            "value": f"https://doi.org/{source['doi']}",
        }
    return {
        "resourceType": "Provenance",
        "id": provenance_id(ctx),
        "target": [{"reference": t} for t in targets],
        "recorded": recorded,
        "agent": [
            {
                "type": {
                    "coding": [
                        {"system": PARTICIPANT_TYPE, "code": "assembler", "display": "Assembler"}
                    ]
                },
                "who": {"display": f"fhir-oncology-adapter {__version__}"},
            }
        ],
        "entity": [{"role": "source", "what": what}]
        + (
            [{"role": "source", "what": trial_reference(source["trial"])}]
            if "trial" in source
            else []
        ),
    }
