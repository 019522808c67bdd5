"""Every example, converted to R4, validates against the profiles it claims: the HL7 validator.

Each bundle goes to the offline validator (tests/validator: HAPI's FhirInstanceValidator over
mCODE 4.0.0, HL7 terminology 7.0.1 and the extensions pack, fetched from npm) as a whole, so
every resource is checked against base R4 and against each profile in its meta.profile, with
references between entries resolved and checked against their target profiles, as a receiver
would. Any error fails, except messages in allow-list.json (dependencies no registry serves), so a
claimed profile that a resource fails fails the test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from adapter.mapping import ConversionOptions, convert_record
from adapter.mappings import mcode_profiles
from tests.conformance.candidates import candidates, load_rules, with_candidate_claims
from tests.conformance.findings import (
    AllowedMessage,
    Finding,
    check_bundle,
    claimed_profiles,
    load_allow_list,
)
from tests.conformance.validator import ProfileValidator
from tests.conftest import CASE_FILES, load_case

pytestmark = pytest.mark.conformance

MCODE = "http://hl7.org/fhir/us/mcode/StructureDefinition/"


@dataclass
class Runs:
    """Findings per case: with today's claims, and with every fitting profile claimed."""

    bundles: dict[str, dict[str, Any]]
    claimed: dict[str, list[Finding]]
    candidate: dict[str, list[Finding]]
    allow_list: list[AllowedMessage]


@pytest.fixture(scope="module")
def runs(profile_validator: ProfileValidator) -> Iterator[Runs]:
    """Validates all 22 examples twice (today's claims; every candidate claimed)."""
    allow_list = load_allow_list()
    rules = load_rules()
    bundles: dict[str, dict[str, Any]] = {}
    claimed: dict[str, list[Finding]] = {}
    candidate: dict[str, list[Finding]] = {}
    for path in CASE_FILES:
        bundle = convert_record(load_case(path.stem), ConversionOptions(fhir_version="R4")).bundle
        bundles[path.stem] = bundle
        claimed[path.stem], _ = check_bundle(profile_validator, path.stem, bundle, allow_list)
        trial = with_candidate_claims(bundle, rules)
        candidate[path.stem], _ = check_bundle(profile_validator, path.stem, trial, allow_list)
    yield Runs(bundles, claimed, candidate, allow_list)


@pytest.mark.parametrize("case", [p.stem for p in CASE_FILES])
def test_claimed_profiles_validate_without_errors(runs: Runs, case: str) -> None:
    """0 errors against base R4 and every claimed profile, beyond the allow-list."""
    open_findings = [f for f in runs.claimed[case] if f.allowed_by is None]
    assert not open_findings, "HL7 validator errors:\n" + "\n".join(
        f.describe() for f in open_findings
    )


def test_some_resources_claim_an_mcode_profile(runs: Runs) -> None:
    """The claims under test exist (a test of nothing would pass on an empty claim set)."""
    claims = [
        p
        for bundle in runs.bundles.values()
        for entry in bundle["entry"]
        for p in claimed_profiles(entry["resource"])
    ]
    assert any(p.startswith(MCODE) for p in claims)


def test_every_allow_list_entry_is_still_needed(runs: Runs) -> None:
    """An entry that matches nothing any more (today, or with every fitting profile claimed)
    is stale and must go: the list stays the exact set of tolerated messages."""
    used = {
        id(f.allowed_by)
        for findings in (*runs.claimed.values(), *runs.candidate.values())
        for f in findings
        if f.allowed_by is not None
    }
    stale = [e for e in runs.allow_list if id(e) not in used]
    assert not stale, "allow-list entries that match no message:\n" + "\n".join(
        f"{e.resource_type} [{e.profile.rsplit('/', 1)[-1]}]: {e.message}" for e in stale
    )


def test_validator_never_reached_the_network(
    runs: Runs, profile_validator: ProfileValidator
) -> None:
    """After validating everything: no connection, DNS lookup or listen was even attempted,
    and at least one barrier made it impossible (the guard in the JVM, or a network
    namespace with no interface)."""
    status = profile_validator.status()
    assert status["validated"] >= 2 * len(CASE_FILES)
    assert status["networkAttempts"] == []
    assert status["guard"] or status["interfaces"] == []


def test_network_guard_refuses_a_connection(profile_validator: ProfileValidator) -> None:
    """The guard is not decoration: a lookup and a loopback connection are both refused."""
    if not profile_validator.status()["guard"]:
        pytest.skip("this JVM cannot install the guard; the network namespace is the barrier")
    probe = profile_validator.probe_network()
    assert probe["resolve"].startswith("refused")
    assert probe["connect"].startswith("refused")
    assert probe["attempts"] == 2
    assert profile_validator.status()["networkAttempts"] == []


def _resource(runs: Runs, case: str, resource_type: str) -> dict[str, Any]:
    return next(
        e["resource"]
        for e in runs.bundles[case]["entry"]
        if e["resource"]["resourceType"] == resource_type
    )


def _errors(validator: ProfileValidator, resource: dict[str, Any], *profiles: str) -> list[str]:
    return [m.message for m in validator.validate(resource, profiles) if m.is_error]


def test_an_unknown_claimed_profile_is_an_error(
    runs: Runs, profile_validator: ProfileValidator
) -> None:
    patient = json.loads(json.dumps(_resource(runs, "caruso2022-01", "Patient")))
    patient["meta"] = {"profile": [MCODE + "mcode-no-such-profile"]}
    assert any("mcode-no-such-profile" in m for m in _errors(profile_validator, patient))


def test_mcode_rules_are_checked(runs: Runs, profile_validator: ProfileValidator) -> None:
    """A MedicationRequest against mCODE's profile: its order-needs-a-requester rule fires
    without the data-absent-reason requester (why the adapter sends one) and not with it."""
    profile = MCODE + "mcode-cancer-related-medication-request"
    request = json.loads(
        json.dumps(
            next(
                e["resource"]
                for e in runs.bundles["caruso2022-02"]["entry"]
                if profile in claimed_profiles(e["resource"])
            )
        )
    )
    assert request["intent"] == "order"
    assert not any("us-core-21" in m for m in _errors(profile_validator, request, profile))
    del request["requester"]
    assert any("us-core-21" in m for m in _errors(profile_validator, request, profile))


def test_every_profile_of_the_table_is_claimed_somewhere(runs: Runs) -> None:
    """Each profile of mappings/profiles.json is claimed by some example resource, so the
    0-errors test above validates every one of them against the real output."""
    claims = {
        p
        for bundle in runs.bundles.values()
        for entry in bundle["entry"]
        for p in claimed_profiles(entry["resource"])
    }
    table = {profile["url"] for profile in mcode_profiles().values()}
    assert table - claims == set()
    assert claims <= table


def test_claims_are_the_report_candidates(runs: Runs) -> None:
    """What a resource claims is the profile the report's rules fit to it: the adapter's claim
    table and the report's candidate rules (profile-candidates.json) cannot drift apart."""
    rules = load_rules()
    for case, bundle in runs.bundles.items():
        fitted = candidates(bundle, rules)
        for entry, profile in zip(bundle["entry"], fitted, strict=True):
            for claim in claimed_profiles(entry["resource"]):
                assert claim == profile, (case, entry["fullUrl"], claim, profile)


def test_l_hes_claims_no_cancer_profile(runs: Runs) -> None:
    """Lymphocytic-variant HES is not a cancer: nothing in its records claims mCODE."""
    for case, bundle in runs.bundles.items():
        if case.startswith("lhes"):
            assert not any(claimed_profiles(e["resource"]) for e in bundle["entry"]), case


def test_current_terminology_rejects_r4_spelled_ae_codes(
    runs: Runs, profile_validator: ProfileValidator
) -> None:
    """Why R4 AdverseEvents carry seriousness and causality as text: THO 7.0.1 (loaded here)
    does not know the R4 4.0.1 spelling ``Serious``; it does know ``serious``."""
    event = json.loads(json.dumps(_resource(runs, "caruso2022-05", "AdverseEvent")))
    system = "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness"
    event["seriousness"] = {"coding": [{"system": system, "code": "Serious"}]}
    assert any("#Serious" in m for m in _errors(profile_validator, event))
    event["seriousness"] = {"coding": [{"system": system, "code": "serious"}]}
    assert not any("adverse-event-seriousness" in m for m in _errors(profile_validator, event))
