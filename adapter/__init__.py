"""FHIR interoperability adapter for oncology case records (MF, SS and related disorders)."""

__version__ = "0.1.0"
