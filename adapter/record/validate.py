"""Checks a parsed case record against the schema and the rules a schema cannot express.

The JSON Schema (mappings/case-record.schema.json) fixes the shape; this module adds what needs
the whole record or the code tables: unique local ids, references that resolve, concept keys
that exist in mappings/terminology/, ordering of dates, offsets that stay in the calendar.
Every error names its JSON path.

A valid record costs one fast schema verdict and the semantic rules; the detailed schema errors
are computed only for a record that fails (see :mod:`adapter.record.schema`). Every rule is
linear in the size of the record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from adapter import terminology
from adapter.mappings import regimens, staged_conditions
from adapter.record.dates import PartialDate
from adapter.record.errors import RecordError, RecordErrors, json_path

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

from adapter.record.schema import (
    DATE_WINDOW_RULE,
    fast_error_count,
    locations_of_definition,
    reference_errors,
    schema_valid,
    values_at,
)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _schema_errors(error: ValidationError) -> Iterator[RecordError]:
    """Rephrase one jsonschema error so it names the field and the rule in plain words."""
    path = list(error.absolute_path)
    rule = str(error.validator)
    instance = error.instance
    if rule == "additionalProperties" and isinstance(instance, dict):
        allowed = set(error.schema.get("properties", {}))
        for extra in sorted(set(instance) - allowed):
            yield RecordError(
                json_path([*path, extra]),
                "unknown-property",
                f"unknown property {extra!r} (allowed: {', '.join(sorted(allowed))})",
            )
        return
    if rule == "required" and isinstance(instance, dict):
        for missing in error.validator_value:
            if missing not in instance:
                yield RecordError(
                    json_path([*path, missing]), "required", "required property is missing"
                )
        return
    messages: dict[str, Callable[[], str]] = {
        "enum": lambda: (
            f"{_short(instance)} is not one of {', '.join(map(str, error.validator_value))}"
        ),
        "const": lambda: f"{_short(instance)} must be {error.validator_value!r}",
        "type": lambda: f"{_short(instance)} is not of type {error.validator_value}",
        "pattern": lambda: f"{_short(instance)} does not match the pattern {error.validator_value}",
        "format": lambda: (
            f"{_short(instance)} is not a valid {error.validator_value}"
            + (
                " (YYYY, YYYY-MM or YYYY-MM-DD, a real calendar date)"
                if error.validator_value == "partial-date"
                else ""
            )
        ),
        "minimum": lambda: f"{_short(instance)} is below the minimum {error.validator_value}",
        "maximum": lambda: f"{_short(instance)} is above the maximum {error.validator_value}",
        "exclusiveMinimum": lambda: (
            f"{_short(instance)} must be greater than {error.validator_value}"
        ),
        "minItems": lambda: f"needs at least {error.validator_value} item(s)",
        "minProperties": lambda: f"needs at least {error.validator_value} property",
        "uniqueItems": lambda: "items must be unique",
        "minLength": lambda: f"must have at least {error.validator_value} character(s)",
        "maxLength": lambda: f"must have at most {error.validator_value} characters",
        DATE_WINDOW_RULE: lambda: error.message,
        "anyOf": lambda: (
            "needs one of: "
            + ", ".join(
                "/".join(repr(k) for k in branch.get("required", [])) or "?"
                for branch in error.validator_value
            )
        ),
    }
    render = messages.get(rule)
    text = render() if render else error.message
    yield RecordError(json_path(path), rule, text)


MAX_OFFSET = {"days": 36_525, "weeks": 5_218, "months": 1_200}
"""Largest offset of a relative time, 100 years in each unit: with stated dates inside the
window of years, every date the mappers compute from an offset stays a real date."""


def _relative_times(record: dict[str, Any]) -> Iterator[tuple[list[Any], dict[str, Any]]]:
    """Every relative-time object in the record (they all carry a ``treatment`` reference),
    looked up where the schema allows one rather than by walking every node."""
    for location in locations_of_definition("relative_time"):
        for path, value in values_at(record, location):
            if isinstance(value, dict):
                yield path, value


def _semantic_errors(record: dict[str, Any]) -> Iterator[RecordError]:
    # Where each id was first seen, as (section, index): the path is worded only for an error.
    ids: dict[str, tuple[str, int]] = {}
    for section in ("diagnoses", "treatments", "adverse_events"):
        for index, item in enumerate(record.get(section, [])):
            first = ids.get(item["id"])
            if first is not None:
                yield RecordError(
                    json_path([section, index, "id"]),
                    "unique-id",
                    f"id {item['id']!r} is already used at {json_path([*first, 'id'])}",
                )
            else:
                ids[item["id"]] = (section, index)
    treatment_ids = {t["id"] for t in record.get("treatments", [])}
    diagnosis_ids = {d["id"] for d in record.get("diagnoses", [])}
    ae_ids = {a["id"] for a in record.get("adverse_events", [])}
    known_regimens = regimens()
    staging_applies = staged_conditions()

    def unknown(path: list[Any], table: str, key: str, what: str) -> RecordError:
        return RecordError(
            json_path(path),
            "unknown-concept",
            f"{key!r} is not a known {what} (mappings/terminology/{table}.json)",
        )

    for index, dx in enumerate(record.get("diagnoses", [])):
        if not terminology.has("conditions", dx["condition"]):
            yield unknown(
                ["diagnoses", index, "condition"], "conditions", dx["condition"], "condition"
            )
        if dx.get("stagings") and dx["condition"] not in staging_applies:
            yield RecordError(
                json_path(["diagnoses", index, "stagings"]),
                "staging-not-applicable",
                f"ISCL/EORTC staging applies only to {', '.join(sorted(staging_applies))}",
            )

    for index, treatment in enumerate(record.get("treatments", [])):
        base: list[Any] = ["treatments", index]
        agents = treatment.get("agents", [])
        if treatment["kind"] == "drug" and not agents:
            yield RecordError(
                json_path([*base, "agents"]),
                "required",
                "a drug treatment needs at least one agent",
            )
        if treatment["kind"] != "drug" and agents:
            yield RecordError(
                json_path([*base, "agents"]),
                "agents-on-procedure",
                f"a {treatment['kind']} treatment has no agents",
            )
        for a_index, agent in enumerate(agents):
            if not terminology.has("drugs", agent["drug"]):
                yield unknown([*base, "agents", a_index, "drug"], "drugs", agent["drug"], "drug")
        schedules = [([*base, "schedule"], treatment.get("schedule"))]
        schedules += [
            ([*base, "agents", i, "schedule"], a.get("schedule")) for i, a in enumerate(agents)
        ]
        schedules += [
            ([*base, "interruptions", i, "restart_schedule"], p.get("restart_schedule"))
            for i, p in enumerate(treatment.get("interruptions", []))
        ]
        for schedule_path, schedule in schedules:
            if schedule and "regimen" in schedule and schedule["regimen"] not in known_regimens:
                yield RecordError(
                    json_path([*schedule_path, "regimen"]),
                    "unknown-regimen",
                    f"{schedule['regimen']!r} is not a regimen of mappings/regimens.json",
                )
        if "for_diagnosis" in treatment and treatment["for_diagnosis"] not in diagnosis_ids:
            yield RecordError(
                json_path([*base, "for_diagnosis"]),
                "reference",
                f"{treatment['for_diagnosis']!r} is not a diagnosis id of this record",
            )
        for w_index, other in enumerate(treatment.get("with", [])):
            if other not in treatment_ids or other == treatment["id"]:
                yield RecordError(
                    json_path([*base, "with", w_index]),
                    "reference",
                    f"{other!r} is not another treatment of this record",
                )
        for p_index, pause in enumerate(treatment.get("interruptions", [])):
            if "adverse_event" in pause and pause["adverse_event"] not in ae_ids:
                yield RecordError(
                    json_path([*base, "interruptions", p_index, "adverse_event"]),
                    "reference",
                    f"{pause['adverse_event']!r} is not an adverse event id",
                )
        if "start" in treatment and "end" in treatment:
            start, end = PartialDate.parse(treatment["start"]), PartialDate.parse(treatment["end"])
            if end.latest() < start.earliest():
                yield RecordError(
                    json_path([*base, "end"]), "date-order", f"end {end} is before start {start}"
                )

    for index, event in enumerate(record.get("adverse_events", [])):
        if not terminology.has("adverse-events", event["term"]):
            yield unknown(
                ["adverse_events", index, "term"],
                "adverse-events",
                event["term"],
                "adverse-event term",
            )
        for s_index, suspect in enumerate(event.get("suspects", [])):
            s_path: list[Any] = ["adverse_events", index, "suspects", s_index]
            if suspect["treatment"] not in treatment_ids:
                yield RecordError(
                    json_path([*s_path, "treatment"]),
                    "reference",
                    f"{suspect['treatment']!r} is not a treatment id of this record",
                )
            if "drug" in suspect and not terminology.has("drugs", suspect["drug"]):
                yield unknown([*s_path, "drug"], "drugs", suspect["drug"], "drug")

    for index, observation in enumerate(record.get("observations", [])):
        kind = terminology.table("observations").get(observation["kind"])
        # a concept marked record_kind false codes the adapter's own Observations (the cancer
        # disease status), never a measurement a record may state
        if kind is None or kind.attributes.get("record_kind") is False:
            yield unknown(
                ["observations", index, "kind"],
                "observations",
                observation["kind"],
                "observation kind",
            )

    for relative_path, relative in _relative_times(record):
        if relative["treatment"] not in treatment_ids:
            yield RecordError(
                json_path([*relative_path, "treatment"]),
                "reference",
                f"{relative['treatment']!r} is not a treatment id of this record",
            )
        if not set(relative) & {"days", "weeks", "months", "after_dose", "after_cycle", "text"}:
            yield RecordError(
                json_path(relative_path),
                "required",
                "a relative time needs days, weeks, months, after_dose, after_cycle or text",
            )
        for unit, limit in MAX_OFFSET.items():
            offset = relative.get(unit)
            if isinstance(offset, int) and abs(offset) > limit:
                yield RecordError(
                    json_path([*relative_path, unit]),
                    DATE_WINDOW_RULE,
                    f"{offset} {unit} is more than {limit} {unit} (100 years) from its anchor",
                )


def _anchor_errors(record: dict[str, Any]) -> Iterator[RecordError]:
    """Stated cycle and dose dates must lie within the course and in order."""
    for index, treatment in enumerate(record.get("treatments", [])):
        base: list[Any] = ["treatments", index]
        start = PartialDate.parse(treatment["start"]) if "start" in treatment else None
        end = PartialDate.parse(treatment["end"]) if "end" in treatment else None
        before = PartialDate.parse(treatment["end_before"]) if "end_before" in treatment else None
        counts = treatment.get("counts", {})
        if before is not None and start is not None and before.latest() <= start.earliest():
            yield RecordError(
                json_path([*base, "end_before"]),
                "date-order",
                f"end_before {before} is not after start {start}",
            )
        if before is not None and end is not None and end.earliest() >= before.latest():
            yield RecordError(
                json_path([*base, "end_before"]),
                "date-order",
                f"end {end} is not before end_before {before}",
            )
        previous: tuple[int, Any] | None = None
        for a_index, anchor in enumerate(treatment.get("anchors", [])):
            path: list[Any] = [*base, "anchors", a_index]
            when = PartialDate.parse(anchor["date"]).to_date()
            if "cycle" in anchor and "dose" in anchor:
                yield RecordError(json_path(path), "anchor", "give cycle or dose, not both")
                continue
            if start is not None and when < start.earliest():
                yield RecordError(
                    json_path([*path, "date"]), "date-order", f"{when} is before start {start}"
                )
            if end is not None and when > end.latest():
                yield RecordError(
                    json_path([*path, "date"]), "date-order", f"{when} is after end {end}"
                )
            if before is not None and when >= before.earliest():
                yield RecordError(
                    json_path([*path, "date"]),
                    "date-order",
                    f"{when} is not before end_before {before}",
                )
            for field in ("cycle", "dose"):
                total = counts.get(f"{field}s")
                exact = total and not counts.get("approximate")
                if field in anchor and exact and anchor[field] > total:
                    yield RecordError(
                        json_path([*path, field]),
                        "anchor",
                        f"{field} {anchor[field]} is beyond the {total} {field}s of the course",
                    )
            if previous is not None and when <= previous[1]:
                yield RecordError(
                    json_path([*path, "date"]),
                    "date-order",
                    f"{when} is not after the anchor before it ({previous[1]})",
                )
            previous = (a_index, when)


def _dose_change_errors(record: dict[str, Any]) -> Iterator[RecordError]:
    """Dose changes follow the lead-in doses, in order; a dose or a maximum, not both."""
    for index, treatment in enumerate(record.get("treatments", [])):
        counts = treatment.get("counts", {})
        total = None if counts.get("approximate") else counts.get("doses")
        for a_index, agent in enumerate(treatment.get("agents", [])):
            base: list[Any] = ["treatments", index, "agents", a_index]
            if "dose" in agent and "max_dose" in agent:
                yield RecordError(
                    json_path([*base, "max_dose"]), "dose", "give dose or max_dose, not both"
                )
            floor = len(agent.get("initial_doses", [])) + 1
            for c_index, change in enumerate(agent.get("dose_changes", [])):
                path = json_path([*base, "dose_changes", c_index, "from_dose"])
                if change["from_dose"] <= floor:
                    yield RecordError(
                        path,
                        "dose",
                        f"{change['from_dose']} does not follow the earlier dose steps "
                        f"(must be above {floor})",
                    )
                if total and change["from_dose"] > total:
                    yield RecordError(
                        path, "dose", f"{change['from_dose']} is beyond the {total} doses"
                    )
                floor = max(floor, change["from_dose"])


def _detailed_schema_errors(record: dict[str, Any]) -> list[RecordError]:
    return [e for err in reference_errors(record) for e in _schema_errors(err)]


def _first_schema_errors(record: dict[str, Any], wanted: int) -> list[RecordError]:
    """The first ``wanted`` distinct errors in the reference's order (schema, then index)."""
    found: set[RecordError] = set()
    for error in reference_errors(record):
        found.update(_schema_errors(error))
        if len(found) >= wanted:
            break
    return sorted(found)[:wanted]


def validate_record(record: dict[str, Any], max_errors: int | None = None) -> RecordErrors:
    """All problems of a record, sorted by path; an empty list means the record is valid.

    Semantic rules run only on a schema-valid record: they rely on the shape the schema
    guarantees, and a shape error is what the author needs to fix first anyway.

    ``max_errors`` caps the list (for HTTP responses: a hostile record may carry 40,000
    errors); the result then holds at most ``max_errors`` errors, sorted by path, and
    ``omitted`` counts the rest. When a record has many more schema errors than the cap, the
    ones kept are the first the validator meets (in the order of the schema's properties,
    then of array items), not necessarily the smallest paths: rendering all of them would cost
    tens of microseconds each, and the count comes from the fast validator instead.
    """
    kept = None if max_errors is None else max(max_errors, 0)
    errors: list[RecordError] = []
    if not schema_valid(record):
        total = fast_error_count(record) if kept is not None else None
        if kept is not None and total is not None and total > 2 * kept + 10:
            first = _first_schema_errors(record, kept)
            return RecordErrors(first, omitted=max(total - len(first), 0))
        errors = _detailed_schema_errors(record)
    if not errors:
        errors = [
            *_semantic_errors(record),
            *_anchor_errors(record),
            *_dose_change_errors(record),
        ]
    ordered = sorted(set(errors))
    if kept is None or len(ordered) <= kept:
        return RecordErrors(ordered)
    return RecordErrors(ordered[:kept], omitted=len(ordered) - kept)
