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


# -- one accessor per table, so that a reader finds every file of mappings/ named here --------


def case_record_schema() -> dict[str, Any]:
    """The JSON Schema of case records (``case-record.schema.json``)."""
    schema: dict[str, Any] = load_json("case-record.schema.json")
    return schema


def regimens() -> dict[str, Any]:
    """Named regimens by key (``regimens.json``: agent, dose, route, cycle days)."""
    table: dict[str, Any] = load_json("regimens.json")["regimens"]
    return table


@cache
def frequency_days() -> dict[str, list[int]]:
    """Days within a week for each frequency key, such as ``3_per_week`` (``regimens.json``)."""
    raw = load_json("regimens.json")["frequency_days"]
    return {key: value for key, value in raw.items() if key != "description"}


def iscl_eortc_staging() -> dict[str, Any]:
    """The ISCL/EORTC staging table as stored (``staging/iscl-eortc.json``)."""
    table: dict[str, Any] = load_json("staging/iscl-eortc.json")
    return table


@cache
def staged_conditions() -> frozenset[str]:
    """Condition keys that ISCL/EORTC staging applies to, which are also the cancers."""
    return frozenset(iscl_eortc_staging()["applies_to"])


def adverse_event_attributes() -> dict[str, Any]:
    """Record values of AE seriousness, outcome, causality... to code-table keys."""
    table: dict[str, Any] = load_json("adverse-event-attributes.json")
    return table


def follow_up_statuses() -> dict[str, str | None]:
    """Follow-up status values to response code keys (``follow-up-status.json``)."""
    table: dict[str, str | None] = load_json("follow-up-status.json")
    return table


def mcode_profiles() -> dict[str, dict[str, Any]]:
    """mCODE 4.0.0 profiles by key, with the condition under which a resource claims each
    (``profiles.json``; every URL verified in the hl7.fhir.us.mcode 4.0.0 package)."""
    table: dict[str, dict[str, Any]] = load_json("profiles.json")["profiles"]
    return table


def mcode_profile(key: str) -> str:
    """The canonical URL of one mCODE profile of ``profiles.json``."""
    return str(mcode_profiles()[key]["url"])


@cache
def response_trends() -> dict[str, str | None]:
    """Response categories to the responses.json trend concept they state, or ``None``
    (``response-trend.json``). Cached like the file itself: it is read per response, and
    rebuilding it each time was 3% of a conversion."""
    raw: dict[str, str | None] = load_json("response-trend.json")
    return {key: value for key, value in raw.items() if key != "description"}
