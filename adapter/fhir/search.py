"""Values put into FHIR search URLs, escaped so that they can only mean themselves.

Percent-encoding (which httpx applies to every query parameter) protects the URL, not the
search: the server decodes it first and then reads ``,`` as OR, ``|`` as the system/code
separator, ``$`` as the composite separator and ``\\`` as the escape. A value that comes from
outside (a path parameter, a record) must have those escaped per the FHIR search rules
(https://hl7.org/fhir/R4/search.html#escaping) before it joins a search parameter.
"""

from __future__ import annotations

__all__ = ["escape_search_value", "identifier_token"]

_SPECIAL = "\\,|$"


def escape_search_value(value: str) -> str:
    """``value`` with each of ``\\`` ``,`` ``|`` ``$`` preceded by a backslash."""
    return "".join("\\" + char if char in _SPECIAL else char for char in value)


def identifier_token(system: str, value: str) -> str:
    """The token ``system|value`` matching exactly one identifier, both parts escaped."""
    return f"{escape_search_value(system)}|{escape_search_value(value)}"
