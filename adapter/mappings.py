"""Finds and loads the data in ``mappings/`` once per process.

Mapping knowledge (schema, code tables, regimens, the staging table) is data, not code; this
module is the single place that knows where that data lives, so tests, the CLI, the gateway and
an installed wheel all read the same files.
"""

from __future__ import annotations

import json
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

_ENV_VAR = "FHIR_ADAPTER_MAPPINGS"


def mappings_dir() -> Path:
    """The mappings folder: ``$FHIR_ADAPTER_MAPPINGS``, the source checkout, or the wheel's copy."""
    override = os.environ.get(_ENV_VAR)
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parent.parent / "mappings"
    if checkout.is_dir():
        return checkout
    installed = Path(sys.prefix) / "share" / "fhir-oncology-adapter" / "mappings"
    if installed.is_dir():
        return installed
    raise FileNotFoundError(
        f"mappings/ not found: set {_ENV_VAR} to the folder holding case-record.schema.json"
    )


@cache
def load_json(relative_path: str) -> Any:
    """Parsed content of one mappings file, cached: the tables never change within a process."""
    with (mappings_dir() / relative_path).open(encoding="utf-8") as handle:
        return json.load(handle)


def optional_json(relative_path: str) -> Any | None:
    """Like :func:`load_json`, but ``None`` when the file does not exist."""
    if not (mappings_dir() / relative_path).is_file():
        return None
    return load_json(relative_path)
