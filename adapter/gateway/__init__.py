"""HTTP gateway a hospital EHR pushes case records and FHIR Bundles to.

Store-and-forward in front of an upstream FHIR server: authenticated pushes are validated,
converted, persisted in a durable outbox and delivered (now, or by a background worker once
the upstream is back). Start it with ``fhir-adapter serve`` or :func:`server.serve`; build an
app for tests or embedding with :func:`main.create_app`. See ``docs/gateway.md``.
"""

from adapter.gateway.config import ConfigError, Settings

__all__ = ["ConfigError", "Settings"]
