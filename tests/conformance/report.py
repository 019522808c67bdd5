"""Profile report: how far the R4 output is from meeting the mCODE profiles that fit it.

Every resource is validated against the mCODE profile that fits it (``profile-candidates.json``),
whether or not it claims it today: the report sets ``meta.profile`` to that profile on a copy
of each bundle and validates the bundle with the offline HL7 validator, so references between
resources are checked as a receiver would. Per profile it prints how many resources fit it,
how many claim it today, how many fail, their errors (those the allow-list tolerates apart),
and the most frequent messages.

    bash scripts/profile-report.sh                       # the 22 examples, converted to R4
    bash scripts/profile-report.sh out/bundles/*.json    # bundles or case records
    bash scripts/profile-report.sh --json report.json    # also write the figures as JSON
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapter.mapping import ConversionOptions
from adapter.mapping.context import DEFAULT_NAMESPACE
from adapter.pipeline import convert_bytes
from tests.conformance.candidates import candidates, load_rules, with_candidate_claims
from tests.conformance.findings import (
    BASE_PROFILE,
    Finding,
    check_bundle,
    claimed_profiles,
    load_allow_list,
)
from tests.conformance.validator import ROOT, ProfileValidator

CASES = ROOT / "examples" / "cases"
_UUID = re.compile(r"urn:uuid:[0-9a-f-]{36}")


def r4_bundles(paths: list[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, R4 bundle) for each path: bundles as they are, case records converted."""
    for path in paths:
        data = path.read_bytes()
        parsed = json.loads(data)
        if parsed.get("resourceType") == "Bundle":
            yield path.stem, parsed
            continue
        outcome = convert_bytes(str(path), data, ConversionOptions(fhir_version="R4"))
        if outcome.bundle is None:
            raise SystemExit(f"{path}: not a valid case record: {outcome.errors[0]}")
        yield path.stem, outcome.bundle


@dataclass
class ProfileFigures:
    """What one profile's resources came to."""

    resources: int = 0
    claiming: int = 0
    failing: int = 0
    errors: int = 0
    allowed: int = 0
    messages: Counter[str] = field(default_factory=Counter)


def _cut(message: str, width: int) -> str:
    """A message shortened to ``width`` characters, table-safe."""
    message = message.replace("|", "\\|")
    return message if len(message) <= width else message[: width - 1] + "…"


def short(profile: str) -> str:
    """The last path segment of a profile URL."""
    return profile.rsplit("/", 1)[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Validate every resource against the mCODE profile that fits it."
    )
    parser.add_argument("inputs", nargs="*", type=Path, help="bundles or case records")
    parser.add_argument("--top", type=int, default=3, help="messages shown per profile")
    parser.add_argument("--width", type=int, default=160, help="characters shown per message")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    inputs = args.inputs or sorted(CASES.glob("*.json"))
    rules = load_rules()
    allow_list = load_allow_list()
    figures: dict[str, ProfileFigures] = defaultdict(ProfileFigures)
    t0 = time.monotonic()
    with ProfileValidator([DEFAULT_NAMESPACE + "/"]) as validator:
        started = time.monotonic() - t0
        for name, bundle in r4_bundles(inputs):
            fitted = candidates(bundle, rules)
            for entry, profile in zip(bundle.get("entry", []), fitted, strict=True):
                resource = entry["resource"]
                group = profile or BASE_PROFILE + resource["resourceType"]
                figures[group].resources += 1
                if profile and profile in claimed_profiles(resource):
                    figures[group].claiming += 1
            trial = with_candidate_claims(bundle, rules)
            findings, _ = check_bundle(validator, name, trial, allow_list)
            by_entry: dict[int | None, list[Finding]] = defaultdict(list)
            for finding in findings:
                by_entry[finding.entry].append(finding)
            for index, entry_findings in by_entry.items():
                resource = trial["entry"][index]["resource"] if index is not None else trial
                group = (claimed_profiles(resource) or (BASE_PROFILE + resource["resourceType"],))[
                    0
                ]
                fig = figures[group]
                open_findings = [f for f in entry_findings if f.allowed_by is None]
                fig.errors += len(open_findings)
                fig.allowed += len(entry_findings) - len(open_findings)
                fig.failing += 1 if open_findings else 0
                for finding in open_findings:
                    fig.messages[_UUID.sub("urn:uuid:{uuid}", finding.message.message)] += 1
        status = validator.status()
    elapsed = time.monotonic() - t0

    print("| profile | resources | claim it today | failing | errors (+ allowed) | top messages |")
    print("|---|---|---|---|---|---|")
    order = sorted(figures, key=lambda p: (p.startswith(BASE_PROFILE), short(p)))
    for profile in order:
        fig = figures[profile]
        label = (
            short(profile) if not profile.startswith(BASE_PROFILE) else f"base R4 {short(profile)}"
        )
        top = "; ".join(
            f"{n}× {_cut(m, args.width)}" for m, n in fig.messages.most_common(args.top)
        )
        print(
            f"| {label} | {fig.resources} | {fig.claiming} | {fig.failing} | "
            f"{fig.errors} (+{fig.allowed}) | {top} |"
        )
    print(
        f"\n{len(inputs)} inputs; validator start {started:.1f} s, total {elapsed:.1f} s; "
        f"network attempts: {len(status['networkAttempts'])}",
        file=sys.stderr,
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    p: {
                        "resources": f.resources,
                        "claiming": f.claiming,
                        "failing": f.failing,
                        "errors": f.errors,
                        "allowed": f.allowed,
                        "messages": f.messages.most_common(),
                    }
                    for p, f in figures.items()
                },
                indent=2,
                ensure_ascii=False,
            )
            + "\n",
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
