"""From the validator's messages to findings: which resource, which profiles, allowed or not.

The validator checks a whole Bundle at once and reports locations such as
``Bundle.entry[7].resource/*MedicationAdministration/null*/.subject``; this module ties each
message back to its entry and judges it against the allow-list (``allow-list.json``), the one
place where messages we cannot fix here are listed with their reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conformance.validator import Message, ProfileValidator

HERE = Path(__file__).resolve().parent
ALLOW_LIST_FILE = HERE / "allow-list.json"
BASE_PROFILE = "http://hl7.org/fhir/StructureDefinition/"
UUID_PLACEHOLDER = "{uuid}"
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_ENTRY = re.compile(r"^Bundle\.entry\[(\d+)\]")


@dataclass(frozen=True)
class AllowedMessage:
    """One allow-list entry: an exact message, where it may occur, and why it is tolerated.

    ``message`` is the validator's exact text, except that ``{uuid}`` stands for the 36
    characters of a ``urn:uuid`` (those differ per case; everything else must match). The
    entry applies to resources of ``resource_type`` checked against ``profile``: an mCODE
    profile the resource claims, or the base definition (``.../StructureDefinition/<Type>``),
    which every resource is checked against.
    """

    message: str
    resource_type: str
    profile: str
    reason: str

    @property
    def pattern(self) -> re.Pattern[str]:
        """The message as a full-match pattern, ``{uuid}`` being the only wildcard."""
        parts = [re.escape(part) for part in self.message.split(UUID_PLACEHOLDER)]
        return re.compile(_UUID.join(parts))

    def applies(self, text: str, resource_type: str, profiles: tuple[str, ...]) -> bool:
        """Whether this entry allows ``text`` on a resource of that type checked against those."""
        if resource_type != self.resource_type:
            return False
        if self.profile != BASE_PROFILE + resource_type and self.profile not in profiles:
            return False
        return self.pattern.fullmatch(text) is not None


def load_allow_list(path: Path = ALLOW_LIST_FILE) -> list[AllowedMessage]:
    """The allow-list, checked for shape: every entry has a message, a scope and a reason."""
    data = json.loads(path.read_text(encoding="utf-8"))
    entries: list[AllowedMessage] = []
    for index, raw in enumerate(data["entries"]):
        missing = [k for k in ("message", "resourceType", "profile", "reason") if not raw.get(k)]
        if missing:
            raise ValueError(f"{path.name}: entries[{index}] lacks {', '.join(missing)}")
        entries.append(
            AllowedMessage(raw["message"], raw["resourceType"], raw["profile"], raw["reason"])
        )
    keys = [(e.message, e.resource_type, e.profile) for e in entries]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path.name}: the same message is listed twice for one scope")
    return entries


@dataclass(frozen=True)
class Finding:
    """One error-level message about one resource of one bundle."""

    source: str
    entry: int | None
    resource_type: str
    label: str
    profiles: tuple[str, ...]
    message: Message
    allowed_by: AllowedMessage | None

    def describe(self) -> str:
        """One readable line: where, what is claimed, what the validator said."""
        claimed = ", ".join(p.rsplit("/", 1)[-1] for p in self.profiles) or "base R4"
        where = self.message.location.split("*/", 1)[-1] if "*/" in self.message.location else ""
        return (
            f"{self.source} entry {self.entry} {self.resource_type} {self.label} [{claimed}]"
            f" at {where or self.message.location or '(resource)'}: {self.message.message}"
        )


def resource_label(resource: dict[str, Any]) -> str:
    """The business identifier of a resource (readable, stable), else its id."""
    identifier = resource.get("identifier")
    if isinstance(identifier, list):
        identifier = identifier[0] if identifier else None
    if isinstance(identifier, dict) and identifier.get("value"):
        return str(identifier["value"])
    return str(resource.get("id", "?"))


def claimed_profiles(resource: dict[str, Any]) -> tuple[str, ...]:
    """The profiles a resource claims in ``meta.profile``."""
    return tuple(resource.get("meta", {}).get("profile", []))


def check_bundle(
    validator: ProfileValidator,
    source: str,
    bundle: dict[str, Any],
    allow_list: list[AllowedMessage],
) -> tuple[list[Finding], list[Message]]:
    """Validates a Bundle; returns its error-level findings and all its messages."""
    messages = validator.validate(bundle)
    entries = bundle.get("entry", [])
    findings: list[Finding] = []
    for message in messages:
        if not message.is_error:
            continue
        match = _ENTRY.match(message.location)
        index = int(match.group(1)) if match else None
        resource = entries[index]["resource"] if index is not None else bundle
        profiles = claimed_profiles(resource)
        resource_type = str(resource.get("resourceType"))
        allowed = next(
            (e for e in allow_list if e.applies(message.message, resource_type, profiles)), None
        )
        findings.append(
            Finding(
                source,
                index,
                resource_type,
                resource_label(resource),
                profiles,
                message,
                allowed,
            )
        )
    return findings, messages
