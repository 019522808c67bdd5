"""Sending systems ("clients") and the space each one may write in.

This module is the contract of ``docs/authorization.md``: a :class:`Client` says which
identifier systems a sender owns, and :func:`server_id` is the one derivation of the server
ids the gateway assigns for it. Authentication binds every credential to a client; the
checks on EHR Bundles and the rewriting of their entries both work in terms of it, so they
agree on what "the caller's own" means by construction.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

__all__ = [
    "CLIENT_ID_PATTERN",
    "SCOPES",
    "Client",
    "server_id",
]

CLIENT_ID_PATTERN = re.compile(r"^[a-z0-9]{1,24}$")
"""Client ids: short, lower-case, no separator, so that ``{id}-`` prefixes never overlap."""

SCOPES = frozenset({"read", "write", "convert", "admin"})
"""``read``: pull patients; ``write``: push records and Bundles; ``convert``: ``$convert``;
``admin``: see every client's submissions and the readiness details."""

_DIGEST_HEX = 32  # 128 bits: collisions between one client's names are not a concern
_DIGEST = re.compile(rf"^[0-9a-f]{{{_DIGEST_HEX}}}$")


@dataclass(frozen=True)
class Client:
    """One sending system, as configured; every credential acts as exactly one client."""

    id: str
    scopes: frozenset[str]
    namespace: str
    """Base URL of the identifier systems of the case records this client pushes."""
    identifier_systems: tuple[str, ...] = ()
    """Further systems the client owns; an entry ending in ``/`` is a prefix."""

    def __post_init__(self) -> None:
        if not CLIENT_ID_PATTERN.match(self.id):
            raise ValueError(f"client id {self.id!r} must match {CLIENT_ID_PATTERN.pattern}")
        unknown = self.scopes - SCOPES
        if unknown:
            raise ValueError(f"client {self.id}: unknown scopes {', '.join(sorted(unknown))}")

    @property
    def namespace_prefix(self) -> str:
        """Every identifier system under the namespace belongs to the client."""
        return self.namespace.rstrip("/") + "/"

    def owns_system(self, system: str) -> bool:
        """Whether identifiers of ``system`` are this client's to write and to match on."""
        if system.startswith(self.namespace_prefix):
            return True
        return any(
            system.startswith(owned) if owned.endswith("/") else system == owned
            for owned in self.identifier_systems
        )

    def owns_server_id(self, resource_id: str) -> bool:
        """Whether a server id has the exact form the gateway assigns for this client."""
        prefix, _, digest = resource_id.partition("-")
        return prefix == self.id and _DIGEST.match(digest) is not None

    def can(self, scope: str) -> bool:
        """Whether the client was granted ``scope``."""
        return scope in self.scopes


def server_id(client: Client, resource_type: str, local_name: str) -> str:
    """The server id the gateway assigns for the client's resource named ``local_name``.

    ``local_name`` is what the client calls the resource: its own id (``PUT Patient/123``
    gives ``123``) or the entry's ``fullUrl`` for a plain POST. An id already in the
    client's space is kept, so that ids the client learned from earlier responses work.
    The result is a valid FHIR id (at most 24 + 1 + 32 characters, ``[a-z0-9-]``).
    """
    if client.owns_server_id(local_name):
        return local_name
    digest = hashlib.sha256(f"{client.id}\n{resource_type}\n{local_name}".encode()).hexdigest()
    return f"{client.id}-{digest[:_DIGEST_HEX]}"
