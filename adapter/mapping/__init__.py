"""Case record → FHIR: one pure mapper per resource kind, assembled by :mod:`bundle`."""

from adapter.mapping.bundle import ConversionResult, convert_record
from adapter.mapping.context import ConversionOptions

__all__ = ["ConversionOptions", "ConversionResult", "convert_record"]
