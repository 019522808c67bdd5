"""Which resource types a client may write through ``POST /fhir``, and why the others not.

Authorization rule 7 (``docs/authorization.md``): only data. A hospital EHR sends clinical,
administrative and financial records (Synthea's bundles carry Patient, Encounter, Condition,
Observation, DiagnosticReport, DocumentReference, Claim, ExplanationOfBenefit, Immunization,
Medication*, Procedure, CarePlan, CareTeam, Device, ImagingStudy, Organization, Location,
Practitioner, PractitionerRole, ...), and those are accepted by default. What is refused
changes the server for every client (conformance and terminology resources), carries the
audit trail or access decisions (Provenance, AuditEvent, Consent), makes the server act
(Subscription, messaging), or is a shared definition rather than a patient's data. Each
refusal carries the reason that the OperationOutcome and the README give.

The lists are data, kept here as the authorization model says, and cover the resource types
of FHIR R4 (4.0.1) and R5 (5.0.0). ``FHIR_ADAPTER_ALLOWED_RESOURCE_TYPES`` may narrow the
accepted set for a deployment; it cannot add a refused type.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType

__all__ = [
    "ACCEPTED_RESOURCE_TYPES",
    "REFUSED_RESOURCE_TYPES",
    "accepted_types",
    "refusal_reason",
]

_CONFORMANCE = (
    "a conformance resource changes how the server validates, searches or exchanges data "
    "for every client; it is loaded by the server's administrators, not pushed by a sender"
)
_TERMINOLOGY = (
    "a terminology resource is shared by every client of the server; code systems and value "
    "sets are administered on the terminology server, not pushed by a sender"
)
_DEFINITION = (
    "a definitional (canonical) artifact is shared by every client through its canonical URL "
    "and is not a patient's data; publish it through the server's administration"
)
_PRODUCT_DEFINITION = (
    "a regulated product or substance definition is catalogue data shared by every client, "
    "not a patient's data"
)
_TESTING = "a test artifact belongs to the server's conformance testing, not to patient data"
_PROVENANCE = (
    "the gateway writes the Provenance of everything it forwards (which client sent what, "
    "when); a Provenance from a client could name another author (audit forgery)"
)
_AUDIT = "the audit trail is written by the servers and the gateway, never by a sender"
_CONSENT = (
    "Consent and Permission decide who may read data on servers that enforce them; they are "
    "managed by the consent process, not pushed with clinical data"
)
_SUBSCRIPTION = (
    "a subscription makes the server send data to an address of the sender's choosing; "
    "subscriptions are set up by the server's administrators"
)
_ENDPOINT = (
    "an Endpoint is a technical address the server may send data to; it is configuration, "
    "not a patient's data"
)
_MESSAGING = (
    "FHIR messaging is not a RESTful write: send the message's resources as a transaction "
    "or batch Bundle"
)
_BUNDLE = "a Bundle inside a Bundle is not unpacked: send its resources as entries of the Bundle"
_NOT_STORED = "operation inputs and outcomes are not stored resources"
_BINARY = (
    "Binary carries arbitrary content the gateway cannot check; put a document in "
    "DocumentReference.content.attachment (data or url)"
)
_LINKAGE = (
    "a Linkage asserts that records are the same person or thing; record linkage is the "
    "server's (master patient index) decision, not a sender's"
)

REFUSED_RESOURCE_TYPES: MappingProxyType[str, str] = MappingProxyType(
    {
        # conformance
        "CapabilityStatement": _CONFORMANCE,
        "StructureDefinition": _CONFORMANCE,
        "ImplementationGuide": _CONFORMANCE,
        "SearchParameter": _CONFORMANCE,
        "MessageDefinition": _CONFORMANCE,
        "OperationDefinition": _CONFORMANCE,
        "CompartmentDefinition": _CONFORMANCE,
        "StructureMap": _CONFORMANCE,
        "GraphDefinition": _CONFORMANCE,
        "ExampleScenario": _CONFORMANCE,
        "ActorDefinition": _CONFORMANCE,
        "Requirements": _CONFORMANCE,
        # terminology
        "CodeSystem": _TERMINOLOGY,
        "ValueSet": _TERMINOLOGY,
        "ConceptMap": _TERMINOLOGY,
        "NamingSystem": _TERMINOLOGY,
        "TerminologyCapabilities": _TERMINOLOGY,
        # security
        "Provenance": _PROVENANCE,
        "AuditEvent": _AUDIT,
        "Consent": _CONSENT,
        "Permission": _CONSENT,
        # infrastructure and messaging
        "Subscription": _SUBSCRIPTION,
        "SubscriptionTopic": _SUBSCRIPTION,
        "SubscriptionStatus": _SUBSCRIPTION,
        "Endpoint": _ENDPOINT,
        "MessageHeader": _MESSAGING,
        "Bundle": _BUNDLE,
        "Parameters": _NOT_STORED,
        "OperationOutcome": _NOT_STORED,
        "Binary": _BINARY,
        "Linkage": _LINKAGE,
        # testing
        "TestScript": _TESTING,
        "TestReport": _TESTING,
        "TestPlan": _TESTING,
        # definitional (knowledge) artifacts
        "ActivityDefinition": _DEFINITION,
        "PlanDefinition": _DEFINITION,
        "Library": _DEFINITION,
        "Measure": _DEFINITION,
        "Questionnaire": _DEFINITION,
        "EventDefinition": _DEFINITION,
        "Evidence": _DEFINITION,
        "EvidenceVariable": _DEFINITION,
        "EvidenceReport": _DEFINITION,
        "EffectEvidenceSynthesis": _DEFINITION,
        "RiskEvidenceSynthesis": _DEFINITION,
        "ResearchDefinition": _DEFINITION,
        "ResearchElementDefinition": _DEFINITION,
        "ChargeItemDefinition": _DEFINITION,
        "ObservationDefinition": _DEFINITION,
        "SpecimenDefinition": _DEFINITION,
        "DeviceDefinition": _DEFINITION,
        "ConditionDefinition": _DEFINITION,
        "Citation": _DEFINITION,
        "ArtifactAssessment": _DEFINITION,
        "CatalogEntry": _DEFINITION,
        "InsurancePlan": _DEFINITION,
        # regulated product and substance definitions
        "MedicationKnowledge": _PRODUCT_DEFINITION,
        "FormularyItem": _PRODUCT_DEFINITION,
        "MedicinalProduct": _PRODUCT_DEFINITION,
        "MedicinalProductAuthorization": _PRODUCT_DEFINITION,
        "MedicinalProductContraindication": _PRODUCT_DEFINITION,
        "MedicinalProductIndication": _PRODUCT_DEFINITION,
        "MedicinalProductIngredient": _PRODUCT_DEFINITION,
        "MedicinalProductInteraction": _PRODUCT_DEFINITION,
        "MedicinalProductManufactured": _PRODUCT_DEFINITION,
        "MedicinalProductPackaged": _PRODUCT_DEFINITION,
        "MedicinalProductPharmaceutical": _PRODUCT_DEFINITION,
        "MedicinalProductUndesirableEffect": _PRODUCT_DEFINITION,
        "MedicinalProductDefinition": _PRODUCT_DEFINITION,
        "AdministrableProductDefinition": _PRODUCT_DEFINITION,
        "ManufacturedItemDefinition": _PRODUCT_DEFINITION,
        "PackagedProductDefinition": _PRODUCT_DEFINITION,
        "RegulatedAuthorization": _PRODUCT_DEFINITION,
        "ClinicalUseDefinition": _PRODUCT_DEFINITION,
        "Ingredient": _PRODUCT_DEFINITION,
        "SubstanceDefinition": _PRODUCT_DEFINITION,
        "SubstanceSpecification": _PRODUCT_DEFINITION,
        "SubstanceNucleicAcid": _PRODUCT_DEFINITION,
        "SubstancePolymer": _PRODUCT_DEFINITION,
        "SubstanceProtein": _PRODUCT_DEFINITION,
        "SubstanceReferenceInformation": _PRODUCT_DEFINITION,
        "SubstanceSourceMaterial": _PRODUCT_DEFINITION,
    }
)
"""Refused on ``POST /fhir`` whatever the configuration, each with the reason given."""

ACCEPTED_RESOURCE_TYPES: frozenset[str] = frozenset(
    {
        # individuals, organisations, places, devices
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "RelatedPerson",
        "Person",
        "Group",
        "Organization",
        "OrganizationAffiliation",
        "Location",
        "HealthcareService",
        "Device",
        "DeviceMetric",
        "DeviceAssociation",
        "Substance",
        "Medication",
        "BiologicallyDerivedProduct",
        "NutritionProduct",
        "InventoryItem",
        "InventoryReport",
        "Basic",
        # encounters, scheduling, workflow
        "Encounter",
        "EncounterHistory",
        "EpisodeOfCare",
        "Appointment",
        "AppointmentResponse",
        "Schedule",
        "Slot",
        "Flag",
        "List",
        "Task",
        "Transport",
        "Communication",
        "CommunicationRequest",
        "RequestGroup",
        "RequestOrchestration",
        "GuidanceResponse",
        "VerificationResult",
        # clinical summary and diagnostics
        "AllergyIntolerance",
        "Condition",
        "Procedure",
        "FamilyMemberHistory",
        "ClinicalImpression",
        "DetectedIssue",
        "AdverseEvent",
        "RiskAssessment",
        "Observation",
        "DiagnosticReport",
        "ImagingStudy",
        "ImagingSelection",
        "GenomicStudy",
        "Media",
        "Specimen",
        "BodyStructure",
        "MolecularSequence",
        "QuestionnaireResponse",
        "MeasureReport",
        # care provision and requests
        "CarePlan",
        "CareTeam",
        "Goal",
        "ServiceRequest",
        "NutritionOrder",
        "NutritionIntake",
        "VisionPrescription",
        "DeviceRequest",
        "DeviceUseStatement",
        "DeviceUsage",
        "DeviceDispense",
        "SupplyRequest",
        "SupplyDelivery",
        # medications and immunization
        "MedicationRequest",
        "MedicationAdministration",
        "MedicationDispense",
        "MedicationStatement",
        "Immunization",
        "ImmunizationEvaluation",
        "ImmunizationRecommendation",
        "BiologicallyDerivedProductDispense",
        # documents
        "Composition",
        "DocumentReference",
        "DocumentManifest",
        # research
        "ResearchStudy",
        "ResearchSubject",
        # financial
        "Account",
        "ChargeItem",
        "Claim",
        "ClaimResponse",
        "Contract",
        "Coverage",
        "CoverageEligibilityRequest",
        "CoverageEligibilityResponse",
        "EnrollmentRequest",
        "EnrollmentResponse",
        "ExplanationOfBenefit",
        "Invoice",
        "PaymentNotice",
        "PaymentReconciliation",
    }
)
"""Clinical, administrative and financial types, accepted by default."""


def refusal_reason(resource_type: str) -> str | None:
    """Why ``resource_type`` is never accepted on ``POST /fhir`` (``None`` if it may be)."""
    return REFUSED_RESOURCE_TYPES.get(resource_type)


def accepted_types(configured: Iterable[str] = ()) -> frozenset[str]:
    """The accepted types, narrowed to ``configured`` when a deployment lists some.

    Raises ``ValueError`` naming the offending types when ``configured`` names a refused or
    unknown type: a deployment that lists ``Provenance`` means something this gateway will
    not do, and should hear so at startup rather than at the first push.
    """
    wanted = frozenset(configured)
    if not wanted:
        return ACCEPTED_RESOURCE_TYPES
    refused = sorted(wanted & REFUSED_RESOURCE_TYPES.keys())
    if refused:
        raise ValueError(
            f"{', '.join(refused)} cannot be accepted: {REFUSED_RESOURCE_TYPES[refused[0]]}"
        )
    unknown = sorted(wanted - ACCEPTED_RESOURCE_TYPES)
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not FHIR R4 or R5 resource types")
    return wanted
