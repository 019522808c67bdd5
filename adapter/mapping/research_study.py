"""The trial a case comes from, as a logical reference adverse events and provenance share."""

from __future__ import annotations

from typing import Any


def trial_reference(trial: dict[str, Any]) -> dict[str, Any]:
    """A logical reference to the trial: its registry number and name, no resource.

    A ResearchStudy resource would need a status (required, bound to a required value set)
    that no case report states; a logical reference carries what the source does say.
    """
    display = trial["name"] + (f", arm: {trial['arm']}" if "arm" in trial else "")
    reference: dict[str, Any] = {"display": display}
    if "registry_id" in trial:
        reference["identifier"] = {
            "type": {"text": "ClinicalTrials.gov NCT number"},
            "value": trial["registry_id"],
        }
    return reference
