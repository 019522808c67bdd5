"""The one way the adapter marks a value it computed rather than read from the source.

A consumer must be able to tell, from a resource alone, a date or a dose the source states from
one the adapter worked out (a dose date from a schedule, a route from a named regimen, a birth
year from an age, a date from "day +150"). Every such value carries the ``computed`` extension
on the element itself: on the primitive's ``_element`` (``_effectiveDateTime``), or inside the
complex value (``dosage.dose.extension``, ``route.extension``, ``coding[0].extension``). A value
without it is the source's. The extension says how (``method``) and from what (``basis``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapter.mapping.context import MappingContext

EXTENSION = "computed"

METHODS = {
    "schedule": "a dose date computed from the course's schedule, counted from a stated date",
    "regimen": "a dose, route or schedule taken from the named regimen (mappings/regimens.json)",
    "dose-fraction": "a dose computed as the stated fraction of a stated dose",
    "age": "a birth year derived from a stated age and the dated event it refers to",
    "relative-time": "a date computed from a time the source gives relative to a treatment",
    "staging-table": "a stage group derived from the stated T/N/M/B categories",
}
"""The values of the extension's ``method``, as documented in the README."""


@dataclass(frozen=True)
class Computed:
    """How a value was computed: one of :data:`METHODS` and the stated facts it rests on."""

    method: str
    basis: str

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown computation method {self.method!r}")


def extension(ctx: MappingContext, computed: Computed) -> dict[str, Any]:
    """The ``computed`` extension for one value."""
    return {
        "url": ctx.extension_url(EXTENSION),
        "extension": [
            {"url": "method", "valueCode": computed.method},
            {"url": "basis", "valueString": computed.basis},
        ],
    }


def mark(ctx: MappingContext, value: dict[str, Any], computed: Computed | None) -> dict[str, Any]:
    """A complex value (Quantity, CodeableConcept, Coding) with the marker first, if computed."""
    if computed is None:
        return value
    return {"extension": [extension(ctx, computed)], **value}


def set_primitive(
    ctx: MappingContext,
    target: dict[str, Any],
    name: str,
    value: Any,
    computed: Computed | None,
) -> None:
    """``target[name] = value``, and ``target['_' + name]`` carrying the marker if computed."""
    target[name] = value
    if computed is not None:
        target[f"_{name}"] = {"extension": [extension(ctx, computed)]}


def read(element: dict[str, Any] | None) -> tuple[str, str] | None:
    """``(method, basis)`` of a marked element (or of a primitive's ``_element``), else None.

    Used by the reverse mapping: a computed value is never read back as a stated one.
    """
    if not isinstance(element, dict):
        return None
    for ext in element.get("extension", []):
        if str(ext.get("url", "")).endswith("/" + EXTENSION):
            values = {
                s.get("url"): next((v for k, v in s.items() if k.startswith("value")), None)
                for s in ext.get("extension", [])
            }
            return str(values.get("method", "")), str(values.get("basis", ""))
    return None
