"""Validation of produced resources with fhir.resources (R4B models for R4, R5 for R5).

Kept out of the conversion hot path (building pydantic models costs more than the mapping
itself, see bench/); used by tests, by ``convert --validate`` and by the gateway's input check.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from pydantic import ValidationError

_PACKAGES = {"R4": "fhir.resources.R4B", "R5": "fhir.resources"}


@cache
def model_class(version: str, resource_type: str) -> Any:
    """The fhir.resources model class of a resource type in one FHIR version."""
    module = importlib.import_module(f"{_PACKAGES[version]}.{resource_type.lower()}")
    return getattr(module, resource_type)


def validate_resource(resource: dict[str, Any], version: str) -> list[str]:
    """Problems of one resource as ``Type.path: message`` lines (empty when valid)."""
    resource_type = str(resource.get("resourceType", ""))
    try:
        cls = model_class(version, resource_type)
    except (ModuleNotFoundError, AttributeError):
        return [f"{resource_type or '?'}: unknown resource type for FHIR {version}"]
    try:
        cls.model_validate(resource)
    except ValidationError as exc:
        return [
            f"{resource_type}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors()
        ]
    return []


def validate_bundle_resources(bundle: dict[str, Any], version: str) -> list[str]:
    """Problems of every entry's resource, prefixed with the entry index."""
    problems = []
    for index, entry in enumerate(bundle.get("entry", [])):
        for problem in validate_resource(entry.get("resource", {}), version):
            problems.append(f"entry[{index}] {problem}")
    return problems
