"""The mCODE profile that fits a resource, by the rules of ``profile-candidates.json``.

The profile report validates every resource against the profile that fits it, claimed or not;
which profile fits which resource is data (the rules file), and this module only evaluates it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CANDIDATES_FILE = HERE / "profile-candidates.json"
PRIMARY_CANCER = "mcode-primary-cancer-condition"


@dataclass(frozen=True)
class Rule:
    """Resources of one type that fit one profile when any alternative holds."""

    resource_type: str
    profile: str
    when: tuple[dict[str, Any], ...]


def load_rules(path: Path = CANDIDATES_FILE) -> list[Rule]:
    """The rules, in order."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return [Rule(r["resourceType"], r["profile"], tuple(r["when"])) for r in data["rules"]]


def _own_extension(resource: dict[str, Any], name: str) -> list[Any]:
    values = []
    for extension in resource.get("extension", []):
        if str(extension.get("url", "")).endswith(f"/fhir/StructureDefinition/{name}"):
            values.append(next((v for k, v in extension.items() if k.startswith("value")), True))
    return values


def _holds(key: str, wanted: Any, resource: dict[str, Any], has_cancer: bool) -> bool:
    if key == "bundle":
        return wanted == "has-cancer-condition" and has_cancer
    if key.startswith("extension:"):
        values = _own_extension(resource, key.split(":", 1)[1])
        return bool(values) if wanted is True else any(v in wanted for v in values)
    code = resource.get("code", {})
    if key == "code.coding":
        present = {f"{c.get('system')}|{c.get('code')}" for c in code.get("coding", [])}
        return any(w in present for w in wanted)
    if key == "code.text":
        return code.get("text") in wanted
    raise ValueError(f"profile-candidates.json: unknown condition '{key}'")


def _matches(rule: Rule, resource: dict[str, Any], has_cancer: bool) -> bool:
    if resource.get("resourceType") != rule.resource_type:
        return False
    return any(
        all(_holds(key, wanted, resource, has_cancer) for key, wanted in alternative.items())
        for alternative in rule.when
    )


def candidates(bundle: dict[str, Any], rules: list[Rule]) -> list[str | None]:
    """The fitting profile of each entry of ``bundle`` (``None`` where none fits)."""
    resources = [entry["resource"] for entry in bundle.get("entry", [])]
    primary_rules = [r for r in rules if r.profile.endswith(PRIMARY_CANCER)]
    has_cancer = any(
        _matches(r, res, False) and _own_extension(res, "diagnosis-role") == ["primary"]
        for r in primary_rules
        for res in resources
    )
    fitted: list[str | None] = []
    for resource in resources:
        rule = next((r for r in rules if _matches(r, resource, has_cancer)), None)
        fitted.append(rule.profile if rule else None)
    return fitted


def with_candidate_claims(bundle: dict[str, Any], rules: list[Rule]) -> dict[str, Any]:
    """A copy of ``bundle`` in which every resource claims the profile that fits it (only it).

    Resources with no fitting profile keep what they claim.
    """
    trial = copy.deepcopy(bundle)
    for entry, profile in zip(trial.get("entry", []), candidates(bundle, rules), strict=True):
        if profile:
            entry["resource"].setdefault("meta", {})["profile"] = [profile]
    return trial
