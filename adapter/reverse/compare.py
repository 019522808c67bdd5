"""What a round trip must preserve: the record minus the fields the mapping sends as text.

Used by the round-trip tests (offline and against a real server) and by ``pull --diff``; the
stripped fields are exactly those listed in :data:`adapter.reverse.record.NOT_CARRIED`.
"""

from __future__ import annotations

import copy
from typing import Any

from adapter import terminology
from adapter.mapping.courses import course_status

_DROP_TOP = ("note", "recorded_at")
_DROP = {
    "patient": (),
    "source": ("case_label",),
    "diagnosis": ("evidence", "note"),
    "staging": ("context",),
    "treatment": ("note", "schedule", "start_after"),
    "interruption": ("adverse_event", "restart_schedule"),
    "response": ("text",),
    "agent": (),
    "schedule": ("phases",),
    "adverse_event": ("management", "note", "end", "serious"),
    "observation": ("context",),
    "age": ("note",),
}


def carried(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a record that must survive record → FHIR → record unchanged."""
    out = copy.deepcopy(record)
    for key in _DROP_TOP:
        out.pop(key, None)
    for key in _DROP["source"]:
        out["source"].pop(key, None)
    for key in _DROP["patient"]:
        out["patient"].pop(key, None)
    for age in out["patient"].get("ages", []):
        for key in _DROP["age"]:
            age.pop(key, None)
    for dx in out.get("diagnoses", []):
        for key in _DROP["diagnosis"]:
            dx.pop(key, None)
        if "onset" in dx:
            dx.pop("onset_text", None)  # onset[x] holds one value: the date wins
        for staging in dx.get("stagings", []):
            for key in _DROP["staging"]:
                staging.pop(key, None)
    agent_counts = {t["id"]: len(t.get("agents", [])) for t in out.get("treatments", [])}
    for treatment in out.get("treatments", []):
        shared = treatment.get("schedule")
        for agent in treatment.get("agents", []):
            if shared and "schedule" not in agent:
                agent["schedule"] = copy.deepcopy(shared)
            if agent.get("text") == terminology.lookup("drugs", agent["drug"]).display:
                agent.pop("text")
        for key in _DROP["treatment"]:
            treatment.pop(key, None)
        treatment["status"] = course_status(treatment)
        for pause in treatment.get("interruptions", []):
            for key in _DROP["interruption"]:
                pause.pop(key, None)
        for response in treatment.get("responses", []):
            if "category" in response:
                response.pop("text", None)
        for agent in treatment.get("agents", []):
            for key in _DROP["agent"]:
                agent.pop(key, None)
            schedule = agent.get("schedule")
            if schedule:
                for key in _DROP["schedule"]:
                    schedule.pop(key, None)
                if not schedule:
                    agent.pop("schedule")
    for event in out.get("adverse_events", []):
        for key in _DROP["adverse_event"]:
            event.pop(key, None)
        for suspect in event.get("suspects", []):
            if agent_counts.get(suspect["treatment"], 0) <= 1:
                suspect.pop("drug", None)
    for item in out.get("observations", []):
        for key in _DROP["observation"]:
            item.pop(key, None)
        if "value" in item:
            item.pop("text", None)
    return out


def differences(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Human-readable differences between two JSON values (empty when equal)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        for key in sorted(set(expected) | set(actual)):
            if key not in actual:
                found.append(f"{path}.{key}: missing after round trip")
            elif key not in expected:
                found.append(f"{path}.{key}: added by round trip ({actual[key]!r:.60})")
            else:
                found.extend(differences(expected[key], actual[key], f"{path}.{key}"))
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: {len(expected)} items became {len(actual)}"]
        found = []
        for index, (left, right) in enumerate(zip(expected, actual, strict=True)):
            found.extend(differences(left, right, f"{path}[{index}]"))
        return found
    if expected != actual:
        return [f"{path}: {expected!r:.60} became {actual!r:.60}"]
    return []
