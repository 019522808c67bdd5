"""FHIR resources → case record: the forward mappers read backwards, section by section.

Only what the forward mapping carries in structured form comes back; free-text evidence,
history and follow-up do not (``NOT_CARRIED`` lists them, and the round-trip test prints it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from adapter import terminology
from adapter.mapping.computed import read as computed_marker
from adapter.mapping.procedure import procedure_concept
from adapter.mappings import adverse_event_attributes
from adapter.reverse.index import (
    ResourceIndex,
    concept_key,
    concept_text,
    extension,
    natural_key,
    sub_values,
)

NOT_CARRIED = (
    "diagnoses[].evidence (sent as free text only)",
    "treatments[].schedule phases (only a named regimen, a frequency and the text come back)",
    "values the forward mapping computed (dose dates, a regimen's dose and route, a birth year,"
    " dates from relative times): they are marked computed and not read back as stated",
    "adverse_events[].serious when not stated, management and notes (sent as text)",
    "observations[].context and the words beside a value",
    "source.case_label",
    "note fields",
)

_CLINICAL = {
    "active": "active",
    "relapse": "relapse",
    "remission": "remission",
    "resolved": "resolved",
}
_COURSE_STATUS = {
    "completed": "completed",
    "stopped": "stopped",
    "active": "ongoing",
    "in-progress": "ongoing",
    "unknown": "unknown",
}
_COUNT_FIELDS = ("cycles", "doses", "sessions", "weeks", "months", "days")
_RELATIVE_FIELDS: dict[str, str] = {
    "days": "days",
    "weeks": "weeks",
    "months": "months",
    "afterDose": "after_dose",
    "afterCycle": "after_cycle",
    "text": "text",
}


def _time_fields(
    resource: dict[str, Any],
    element: str,
    relatives: list[dict[str, Any]],
    date_key: str = "date",
    after_key: str = "after",
) -> dict[str, Any]:
    """A stated date (not one the forward mapping computed) and the relative time, if any."""
    fields: dict[str, Any] = {}
    stated = resource.get(element)
    computed = computed_marker(resource.get(f"_{element}")) is not None
    legacy = bool(relatives and _date_derived(relatives[0]))  # bundles before the marker
    if stated and not computed and not legacy:
        fields[date_key] = stated
    if relatives:
        fields[after_key] = _relative(relatives[0])
    return fields


def _stated(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """A complex value, unless the forward mapping marked it computed."""
    if value is None or computed_marker(value) is not None:
        return None
    return value


def _period_fields(value: dict[str, Any]) -> dict[str, Any]:
    """start and end of a Period, including an end carried in the period-end extension."""
    fields: dict[str, Any] = {k: value[k] for k in ("start", "end") if k in value}
    for ext in extension(value, "period-end"):
        fields["end"] = ext["valueDateTime"]
    return fields


def _record_key(resource: dict[str, Any]) -> str | None:
    """The record's concept key, carried in the ``concept-key`` extension."""
    found = extension(resource, "concept-key")
    return str(found[0]["valueCode"]) if found else None


def _date_derived(ext: dict[str, Any]) -> bool:
    return bool(sub_values(ext).get("dateDerived"))


def _relative(ext: dict[str, Any]) -> dict[str, Any]:
    values = sub_values(ext)
    relative: dict[str, Any] = {"treatment": values["treatment"]}
    for url, field in _RELATIVE_FIELDS.items():
        if url in values:
            relative[field] = values[url]
    return relative


def _patient(index: ResourceIndex) -> dict[str, Any]:
    resource = index.by_key.get(("Patient", "patient"), {})
    patient: dict[str, Any] = {"sex": resource.get("gender", "unknown")}
    meta = resource.get("_birthDate", {})
    derived = bool(extension(meta, "birth-date-derivation")) or computed_marker(meta) is not None
    if "birthDate" in resource and not derived:
        patient["birth_date"] = resource["birthDate"]
    races = []
    omb = {c.code: key for key, e in terminology.table("race-ethnicity").items() for c in e.codings}
    for ext in extension(resource, "us-core-race"):
        values = sub_values(ext)
        race: dict[str, Any] = {"text": values.get("text", "")}
        coding = values.get("ombCategory")
        if isinstance(coding, dict) and coding.get("code") in omb:
            race = {"category": omb[coding["code"]], **race}
        races.append(race)
    ages = []
    for _, obs in index.of_type("Observation"):
        refers = extension(obs, "age-refers-to")
        if refers:
            age: dict[str, Any] = {
                "years": obs["valueQuantity"]["value"],
                "refers_to": refers[0]["valueCode"],
            }
            if "effectiveDateTime" in obs:
                age["date"] = obs["effectiveDateTime"]
            ages.append(age)
    if ages:
        patient["ages"] = ages
    if races:
        patient["race"] = races
    for ext in extension(resource, "us-core-ethnicity"):
        values = sub_values(ext)
        ethnicity: dict[str, Any] = {"text": values.get("text", "")}
        coding = values.get("ombCategory")
        if isinstance(coding, dict) and coding.get("code") in omb:
            ethnicity = {"category": omb[coding["code"]], **ethnicity}
        patient["ethnicity"] = ethnicity
    if "deceasedDateTime" in resource or resource.get("deceasedBoolean"):
        death: dict[str, Any] = {}
        if "deceasedDateTime" in resource:
            death["date"] = resource["deceasedDateTime"]
        for ext in extension(resource, "relative-death"):
            death["after"] = _relative(ext)
        for ext in extension(resource, "cause-of-death"):
            death["cause"] = ext["valueString"]
        patient["deceased"] = death
    return patient


def _staging(
    index: ResourceIndex,
    dx_key: str,
    number: int,
    stage: dict[str, Any],
) -> dict[str, Any]:
    staging: dict[str, Any] = {}
    prefix = f"{dx_key}.stage{number}"
    group_obs = index.by_key.get(("Observation", prefix))
    for letter in ("t", "n", "m", "b"):
        obs = index.by_key.get(("Observation", f"{prefix}.{letter}"))
        if obs:
            staging[letter] = obs["valueCodeableConcept"]["coding"][0]["code"]
            staging.setdefault("date", obs.get("effectiveDateTime"))
    if group_obs and "effectiveDateTime" in group_obs:
        staging["date"] = group_obs["effectiveDateTime"]
    if staging.get("date") is None:
        staging.pop("date", None)
    summary = str(stage.get("summary", {}).get("text", ""))
    written, _, source_text = summary.partition("; source: ")
    if " (as written)" in written:
        staging["group"] = written.split(" (as written)")[0]
    elif not written.endswith("(derived from categories)") and written:
        staging["group"] = written
    if source_text:
        staging["text"] = source_text
    return {k: staging[k] for k in ("date", "t", "n", "m", "b", "group", "text") if k in staging}


def _diagnoses(index: ResourceIndex) -> list[dict[str, Any]]:
    diagnoses = []
    for key, resource in index.of_type("Condition"):
        condition = _record_key(resource) or concept_key("conditions", resource.get("code"))
        dx: dict[str, Any] = {"id": key, "condition": condition or "unknown"}
        text = concept_text("conditions", condition, resource.get("code"))
        if text and text.endswith(" variant)") and " (" in text:
            text, _, variant = text[: -len(" variant)")].rpartition(" (")
            dx["variant"] = variant
        if text:
            dx["text"] = text
        dx["role"] = _role(resource)
        if "onsetDateTime" in resource:
            dx["onset"] = resource["onsetDateTime"]
        elif "onsetString" in resource:
            dx["onset_text"] = resource["onsetString"]
        asserted = extension(resource, "condition-assertedDate")
        if asserted:
            dx["diagnosed"] = asserted[0]["valueDateTime"]
        status = resource.get("clinicalStatus", {}).get("coding", [{}])[0].get("code")
        if status in _CLINICAL:
            dx["status"] = _CLINICAL[status]
        verification = resource.get("verificationStatus", {}).get("coding", [{}])[0].get("code")
        if verification and verification != "confirmed":
            dx["verification"] = verification
        stagings = [
            _staging(index, key, n + 1, stage) for n, stage in enumerate(resource.get("stage", []))
        ]
        if stagings:
            dx["stagings"] = stagings
        diagnoses.append(dx)
    return diagnoses


def _course_fields(resource: dict[str, Any], course: dict[str, Any]) -> None:
    for ext in extension(resource, "treatment-course"):
        values = sub_values(ext)
        if "line" in values:
            course["line"] = values["line"]
        if "name" in values:
            course["name"] = values["name"]
        counts = {f: values[f] for f in _COUNT_FIELDS if f in values}
        if values.get("approximate"):
            counts["approximate"] = True
        if counts:
            course["counts"] = counts
        if values.get("inTrial"):
            course["in_trial"] = True
        if "stopReason" in values:
            course["stop_reason"] = values["stopReason"]
        if "endBefore" in values:
            course["end_before"] = values["endBefore"]
        others = values.get("with")
        if others:
            course["with"] = others if isinstance(others, list) else [others]
    pauses = []
    for ext in extension(resource, "interruption"):
        values = sub_values(ext)
        pause: dict[str, Any] = {}
        for url, field in (
            ("start", "start"),
            ("restart", "end"),
            ("afterDose", "after_dose"),
            ("durationDays", "duration_days"),
            ("durationMonths", "duration_months"),
            ("reason", "reason"),
        ):
            if url in values:
                pause[field] = values[url]
        pauses.append(pause)
    if pauses:
        course["interruptions"] = pauses
    starts = extension(resource, "relative-start")
    if starts:
        course["start_after"] = _relative(starts[0])
    anchors = []
    for ext in extension(resource, "schedule-anchor"):
        values = sub_values(ext)
        anchor = {k: values[k] for k in ("cycle", "dose", "date", "text") if k in values}
        anchors.append(anchor)
    if anchors:
        course["anchors"] = anchors


def _stop_reason(course: dict[str, Any], reason: dict[str, Any] | None) -> None:
    """The words of statusReason, when they are not just the coded reason's display."""
    if not reason:
        return
    text = concept_text("stop-reasons", course.get("stop_reason"), reason)
    if text:
        course["stop_reason_text"] = text


def _quantity(value: dict[str, Any] | None) -> dict[str, Any] | None:
    value = _stated(value)
    return {"value": value["value"], "unit": value["unit"]} if value else None


def _doses(instructions: list[dict[str, Any]]) -> dict[str, Any]:
    """dose, initial_doses, dose_changes and max_dose from the Dosage of each dose step.

    Doses the forward mapping computed (a regimen's default, a stated fraction worked out)
    do not come back as stated: the regimen key and the fraction do.
    """
    fields: dict[str, Any] = {}
    initial: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    for instruction in instructions:
        rate = (instruction.get("doseAndRate") or [{}])[0]
        quantity = _quantity(rate.get("doseQuantity"))
        high = _quantity(rate.get("doseRange", {}).get("high"))
        if high:
            fields["max_dose"] = high
        steps = extension(instruction, "dose-step")
        kind = sub_values(steps[0]).get("kind") if steps else "maintenance"
        if kind == "initial":
            if quantity:
                initial.append(quantity)
        elif kind == "change":
            values = sub_values(steps[0])
            change: dict[str, Any] = {"from_dose": values["fromDose"]}
            if quantity:
                change["dose"] = quantity
            for url, field in (("fraction", "fraction"), ("text", "text")):
                if url in values:
                    change[field] = values[url]
            changes.append(change)
        elif quantity:
            fields["dose"] = quantity
    if initial:
        fields["initial_doses"] = initial
    if changes:
        fields["dose_changes"] = changes
    return dict(sorted(fields.items(), key=lambda kv: _AGENT_ORDER.index(kv[0])))


_AGENT_ORDER = ("dose", "initial_doses", "dose_changes", "max_dose")


def _kind_of(resource: dict[str, Any]) -> str:
    for ext in extension(resource, "treatment-course"):
        kind = sub_values(ext).get("kind")
        if kind:
            return str(kind)
    return "drug"


def _reason_reference(resource: dict[str, Any]) -> dict[str, Any] | None:
    """The first reason of a request or procedure that is a reference (R4 and R5 spellings)."""
    for reference in resource.get("reasonReference") or []:
        return dict(reference)
    for reason in resource.get("reason") or []:
        if "reference" in reason:
            return dict(reason["reference"])
    return None


def _reasons_given(index: ResourceIndex, courses: dict[str, dict[str, Any]]) -> None:
    """``for_diagnosis`` where a course's reason is a Condition other than the primary one."""
    primary = next((key for key, c in index.of_type("Condition") if _role(c) == "primary"), None)
    for kind in ("MedicationRequest", "Procedure"):
        for key, resource in index.of_type(kind):
            target = index.resolve(_reason_reference(resource))
            course = courses.get(key.split(".", 1)[0])
            if course is None or target is None or target[0] != "Condition":
                continue
            if target[1] != primary:
                course["for_diagnosis"] = target[1]


def _role(condition: dict[str, Any]) -> str:
    role = extension(condition, "diagnosis-role")
    return str(role[0]["valueCode"]) if role else "primary"


def _treatments(index: ResourceIndex) -> list[dict[str, Any]]:
    courses: dict[str, dict[str, Any]] = {}
    for key, request in index.of_type("MedicationRequest"):
        course_id = key.split(".", 1)[0]
        course = courses.setdefault(course_id, {"id": course_id, "kind": "drug", "agents": []})
        _course_fields(request, course)
        instructions = request.get("dosageInstruction") or [{}]
        instruction = instructions[0]
        bounds = instruction.get("timing", {}).get("repeat", {}).get("boundsPeriod", {})
        course.update(_period_fields(bounds))
        course["status"] = _COURSE_STATUS.get(request.get("status", "unknown"), "unknown")
        _stop_reason(course, request.get("statusReason"))
        medication = request.get("medicationCodeableConcept") or request.get("medication", {}).get(
            "concept"
        )
        drug = key.split(".", 1)[1]
        agent: dict[str, Any] = {"drug": drug}
        text = concept_text("drugs", drug, medication)
        if text:
            agent["text"] = text
        agent.update(_doses(instructions))
        route = concept_key("routes", _stated(instruction.get("route")))
        if route:
            agent["route"] = route
        schedule: dict[str, Any] = {}
        regimen = extension(request, "regimen")
        if regimen:
            schedule["regimen"] = regimen[0]["valueCode"]
        repeats = [i.get("timing", {}).get("repeat", {}) for i in instructions]
        repeat: dict[str, Any] = next((r for r in repeats if "frequency" in r), {})
        if "frequency" in repeat:
            schedule["frequency"] = {
                "times": repeat["frequency"],
                "period": repeat["period"],
                "period_unit": repeat["periodUnit"],
            }
        if "text" in instruction:
            schedule["text"] = instruction["text"]
        if schedule:
            agent["schedule"] = schedule
        position = extension(request, "agent-position")
        agent["_position"] = position[0]["valuePositiveInt"] if position else 0
        course["agents"].append(agent)
    for key, procedure in index.of_type("Procedure"):
        course = {"id": key, "kind": _kind_of(procedure)}
        _course_fields(procedure, course)
        performed = procedure.get("performedPeriod") or procedure.get("occurrencePeriod") or {}
        when = procedure.get("performedDateTime") or procedure.get("occurrenceDateTime")
        if when:
            course["start"] = course["end"] = when
        course.update(_period_fields(performed))
        course["status"] = _COURSE_STATUS.get(procedure.get("status", "unknown"), "unknown")
        _stop_reason(course, procedure.get("statusReason"))
        for ext in extension(procedure, "radiation-dose"):
            values = sub_values(ext)
            radiation: dict[str, Any] = {}
            if "totalDose" in values:
                radiation["total_dose"] = {
                    "value": values["totalDose"]["value"],
                    "unit": values["totalDose"]["unit"],
                }
            if "fractions" in values:
                radiation["fractions"] = values["fractions"]
            if "site" in values:
                sites = values["site"]
                radiation["sites"] = sites if isinstance(sites, list) else [sites]
            course["radiation"] = radiation
        for ext in extension(procedure, "stem-cell-transplant"):
            values = sub_values(ext)
            names = {
                "type": "type",
                "donor": "donor",
                "stemCellSource": "stem_cell_source",
                "conditioningIntensity": "conditioning_intensity",
                "donorText": "donor_text",
                "conditioning": "conditioning",
                "gvhdProphylaxis": "gvhd_prophylaxis",
                "cd34Dose": "cd34_dose",
            }
            course["transplant"] = {names[k]: v for k, v in values.items() if k in names}
        name = concept_text("procedures", procedure_concept(course), procedure.get("code"))
        if name:
            course["name"] = name
        courses[key] = course
    for course in courses.values():
        if "agents" in course:
            course["agents"].sort(key=lambda a: a.pop("_position"))
    _reasons_given(index, courses)
    _attach_responses(index, courses)
    return [courses[k] for k in sorted(courses, key=natural_key)]


def _attach_responses(index: ResourceIndex, courses: dict[str, dict[str, Any]]) -> None:
    for key, obs in index.of_type("Observation"):
        course_id, _, rest = key.partition(".")
        if not rest.startswith("response") or course_id not in courses:
            continue
        text = str(obs.get("code", {}).get("text", ""))
        response: dict[str, Any] = {"compartment": text.split(" ", 1)[0].lower()}
        value = obs.get("valueCodeableConcept")
        if value:
            category = _record_key(obs) or concept_key("responses", value)
            if category:
                response["category"] = category
            words = concept_text("responses", category, value)
            if words:
                response["text"] = words
        elif "valueString" in obs:
            response["text"] = obs["valueString"]
        response.update(_time_fields(obs, "effectiveDateTime", extension(obs, "relative-time")))
        courses[course_id].setdefault("responses", []).append(response)


def _adverse_events(index: ResourceIndex) -> list[dict[str, Any]]:
    aliases = adverse_event_attributes()

    def reverse(name: str, concept: dict[str, Any] | None) -> str | None:
        if concept and "coding" not in concept:  # a value with no HL7 code travels as text
            text = concept.get("text")
            uncoded = next(
                (v for v, k in aliases[name].items() if k is None and text in _texts(name, v)),
                None,
            )
            if uncoded is not None:
                return str(uncoded)
        key = concept_key("ae-grades", concept)
        maps = [aliases[name], aliases["r4"].get(name, {})]
        found = next((v for m in maps for v, k in m.items() if k is not None and k == key), None)
        if found is None and concept and "coding" not in concept:
            # Values sent as text alone (no HL7 code, or R4 where no spelling passes both
            # validators) come back through the alias table's texts.
            found = next(
                (
                    alias.split(".", 1)[1]
                    for alias, words in aliases["text"].items()
                    if alias.startswith(f"{name}.") and words == concept.get("text")
                ),
                None,
            )
        return found

    def _texts(name: str, value: str) -> set[str]:
        return {aliases["text"].get(f"{name}.{value}", ""), value.replace("_", " ")}

    events = []
    for key, resource in index.of_type("AdverseEvent"):
        code = resource.get("event") or resource.get("code")
        term = _record_key(resource) or concept_key("adverse-events", code) or "unknown"
        event: dict[str, Any] = {"id": key, "term": term, "text": str((code or {}).get("text", ""))}
        for ext in extension(resource, "ae-grade"):
            grade = reverse("grade", ext.get("valueCodeableConcept"))
            if grade:
                event["grade"] = int(grade)
        onset_rel = extension(resource, "relative-onset")
        holder, element = resource, "date"
        if "occurrenceDateTime" in resource:
            element = "occurrenceDateTime"
        elif "occurrencePeriod" in resource:
            holder, element = resource["occurrencePeriod"], "start"
        event.update(_time_fields(holder, element, onset_rel, "onset", "onset_after"))
        end_rel = extension(resource, "relative-resolution")
        if end_rel:
            event["end_after"] = _relative(end_rel[0])
        seriousness = reverse("seriousness", resource.get("seriousness"))
        if seriousness:
            event["serious"] = seriousness == "serious"
        outcome = resource.get("outcome")
        if isinstance(outcome, list):
            outcome = outcome[0] if outcome else None
        outcome_key = reverse("outcome", outcome)
        if outcome_key:
            event["outcome"] = outcome_key
        suspects: list[dict[str, Any]] = []
        drugs_by_course: dict[str, set[str]] = {}
        for entity in resource.get("suspectEntity", []):
            target = index.resolve(entity.get("instance") or entity.get("instanceReference"))
            if target is not None and target[0] == "MedicationAdministration":
                parts = target[1].split(".")
                drugs_by_course.setdefault(parts[0], set()).add(parts[1])
        for entity in resource.get("suspectEntity", []):
            target = index.resolve(entity.get("instance") or entity.get("instanceReference"))
            if target is None:
                continue
            treatment = target[1].split(".", 1)[0]
            course_drugs = {
                k.split(".")[1]
                for (t, k) in index.by_key
                if t == "MedicationRequest" and k.split(".")[0] == treatment
            }
            causality = entity.get("causality")
            first = (
                causality[0]
                if isinstance(causality, list) and causality
                else causality
                if isinstance(causality, dict)
                else {}
            )
            suspect: dict[str, Any] = {"treatment": treatment}
            referenced = drugs_by_course.get(treatment, set())
            if target[0] == "MedicationAdministration" and referenced != course_drugs:
                suspect["drug"] = target[1].split(".")[1]
            assessment = first.get("assessment") or first.get("entityRelatedness")
            assess = reverse("causality", assessment)
            method = reverse("method", first.get("method") or first.get("assessmentMethod"))
            if assess:
                suspect["causality"] = assess
                beside = extension(first, "causality-words")
                words = beside[0]["valueString"] if beside else None
                words = words or _attribution_words(assess, assessment)
                if words:
                    suspect["text"] = words
            if method:
                suspect["method"] = method
            if suspect not in suspects:
                suspects.append(suspect)
        if suspects:
            event["suspects"] = suspects
        actions = [e["valueCode"] for e in extension(resource, "action-taken")]
        if actions:
            event["actions"] = actions
        events.append(event)
    return events


def _attribution_words(causality: str, concept: dict[str, Any] | None) -> str | None:
    """The source's words of a causality assessment: its text, unless that is just the
    code's display or the alias table's text."""
    text = (concept or {}).get("text")
    if not text:
        return None
    displays = {c.get("display") for c in (concept or {}).get("coding", [])}
    aliases = adverse_event_attributes()
    key = aliases["causality"].get(causality)
    defaults = {aliases["text"].get(f"causality.{causality}")}
    if key:
        defaults.add(terminology.lookup("ae-grades", key).display)
    if text in displays or text in defaults:
        return None
    return str(text)


def _observations(index: ResourceIndex) -> list[dict[str, Any]]:
    observations = []
    for key, obs in index.of_type("Observation"):
        if not key.startswith("obs"):
            continue
        kind = _record_key(obs) or concept_key("observations", obs.get("code")) or "unknown"
        item: dict[str, Any] = {"kind": kind}
        quantity = obs.get("valueQuantity")
        if quantity:
            item["value"] = quantity["value"]
            if "comparator" in quantity:
                item["comparator"] = quantity["comparator"]
        elif "valueString" in obs:
            item["text"] = obs["valueString"]
        item.update(_time_fields(obs, "effectiveDateTime", extension(obs, "relative-time")))
        observations.append(item)
    return observations


def _source(index: ResourceIndex, resources: Iterable[dict[str, Any]]) -> dict[str, Any]:
    source: dict[str, Any] = {"citation": "unknown", "case_number": 1}
    for resource in resources:
        if resource.get("resourceType") != "Provenance":
            continue
        for entity in resource.get("entity", []):
            what = entity.get("what", {})
            citation, _, number = str(what.get("display", "")).rpartition(", case ")
            if citation and number.isdigit():
                source = {"citation": citation, "case_number": int(number)}
            identifier = what.get("identifier", {})
            if str(identifier.get("value", "")).startswith("https://doi.org/"):
                source["doi"] = identifier["value"][len("https://doi.org/") :]
    for resource in resources:
        if resource.get("resourceType") != "Provenance":
            continue
        for entity in resource.get("entity", [])[1:]:
            what = entity.get("what", {})
            name, _, arm = str(what.get("display", "")).partition(", arm: ")
            trial: dict[str, Any] = {"name": name}
            if "identifier" in what:
                trial["registry_id"] = what["identifier"]["value"]
            if arm:
                trial["arm"] = arm
            source["trial"] = trial
    return source


def _follow_up_and_history(index: ResourceIndex, record: dict[str, Any]) -> None:
    obs = index.by_key.get(("Observation", "followup"))
    if obs:
        follow_up: dict[str, Any] = {}
        follow_up.update(_time_fields(obs, "effectiveDateTime", extension(obs, "relative-time")))
        status = _record_key(obs)
        if status:
            follow_up["status"] = status
        if obs.get("note"):
            follow_up["text"] = obs["note"][0]["text"]
        record["follow_up"] = follow_up
    history = []
    for key, item in index.of_type("Observation"):
        if key.startswith("history"):
            entry: dict[str, Any] = {}
            kind = extension(item, "history-kind")
            if kind:
                entry["kind"] = kind[0]["valueCode"]
            entry["text"] = item.get("valueString", "")
            if "effectiveDateTime" in item:
                entry["date"] = item["effectiveDateTime"]
            history.append(entry)
    if history:
        record["patient"]["history"] = history


def resources_to_record(
    resources: list[tuple[str | None, dict[str, Any]]], identifier_system: str, patient_system: str
) -> dict[str, Any]:
    """Rebuild a case record from the resources the forward mapping produced."""
    index = ResourceIndex.build(resources, identifier_system, patient_system)
    record: dict[str, Any] = {"record_id": index.record_id or "unknown", "schema_version": "1.0"}
    record["source"] = _source(index, index.others)
    record["patient"] = _patient(index)
    _follow_up_and_history(index, record)
    for name, items in (
        ("diagnoses", _diagnoses(index)),
        ("treatments", _treatments(index)),
        ("adverse_events", _adverse_events(index)),
        ("observations", _observations(index)),
    ):
        if items:
            record[name] = items
    return record
