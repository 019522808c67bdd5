"""Seeded synthetic case records whose distributions are drawn from the worked examples.

The benchmarks need thousands to millions of case records of realistic shape; uniform noise
would time the wrong thing (no regimens, no dose expansion, no staging). So the generator reads
the example records of ``examples/cases/*.json`` once (:func:`seed_model`), turns each of them
into *templates* and *frequency pools*, and builds every synthetic record by sampling those
pools with replacement: the frequencies of the output converge to the frequencies of the seeds.

Drawn from the seed cases (one pool entry per seed item, so a pool is its own histogram):

* the primary diagnosis (mycosis fungoides, Sézary syndrome, L-HES), sex, age (± 3 years),
  what the age refers to, race statements, personal history, trial participation, death;
* per primary diagnosis: its status and variant, its evidence kinds, its ISCL/EORTC stagings
  (T, N including NX, M, B and group, copied whole from a seed case with the same diagnosis
  so that categories and group agree), the number of other diagnoses, of lines of therapy,
  of adverse events and of observations, and the observation templates;
* lines of therapy: each seed line (the courses sharing a line number or given ``with`` each
  other) is a template with its courses, agents, doses, routes, schedules or named regimens,
  counts (± 50 %), status, stop reason, interruptions and responses, and with its relative place
  in the story, so a synthetic story keeps the seeds' order (steroids first, mogamulizumab late);
* adverse events: term, grade or no grade, seriousness, outcome, actions, causality, and the
  drug (or therapy) suspected, so a term is only given to a case that has its suspect;
* observations: kind, value (± 20 %, log-normal), comparator, context and timing;
* the precision of every kind of date (absent, year, month, day) and of relative times
  (after the Nth dose or cycle, N days or months after a start);
* whether an item has a note, and the note's length.

Synthetic, on purpose: ids, the calendar (a story starts in a year some seed starts in and
its lines follow each other with gaps), free texts and notes (filler of the seeds' lengths).
Concepts a seed uses that are not (yet) in ``mappings/terminology/`` are left out of the
pools, so every record passes :func:`adapter.record.validate.validate_record`.

One knob departs from the seeds: ``day_start_share``, the share of courses whose start is
known to the day (what makes a course expand into one MedicationAdministration per dose).
Published case reports rarely give exact dates (about 5 % of the seed courses); registry
extracts usually do. The default, :data:`DEFAULT_DAY_START_SHARE` (0.8), was tuned so that a
bundle has about 40 resources on average (measured: 40.6 over 5,000 records of seed 0; the
seeds' own share gives about 31, the seed bundles themselves average 32), the "realistic size"
of the benchmarks; ``None`` keeps the seeds' own share. A course started on a known day but
bounded by no dose or cycle count gets at most a month-precise end, so that a daily drug is
not expanded over years.

Each record depends only on ``(seed, index)`` and the seed files, so ranges of a stream can be
generated in separate processes and still concatenate to the same stream.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from adapter import terminology
from adapter.mappings import regimens, staged_conditions

Json = dict[str, Any]

EXAMPLES_ENV = "FHIR_ADAPTER_EXAMPLES"
"""Environment variable naming another folder of seed records."""

DEFAULT_DAY_START_SHARE = 0.8
"""Share of courses started on a known day; tuned for ≈ 40 resources per bundle (seeds: 5 %)."""

RECORDED_AT = "2025-01-01T00:00:00Z"
"""``recorded_at`` of every synthetic record, so that conversions are byte-identical."""

_RELATIVE_KINDS = ("after_dose", "after_cycle", "days", "weeks", "months")
_PRECISIONS = {4: "year", 7: "month", 10: "day"}
_FILLER = "Synthetic note of the length the example cases give to their notes; it states no fact. "
_NONE = "none"


# --------------------------------------------------------------------------------------------
# The seed model


@dataclass(frozen=True)
class LineTemplate:
    """One line of therapy of a seed case: its courses and its place in the story (0 to 1)."""

    position: float
    numbered: bool
    courses: tuple[Json, ...]


@dataclass(frozen=True)
class Profile:
    """What the seed cases of one primary diagnosis look like."""

    condition: str
    statuses: tuple[str | None, ...]
    variants: tuple[str | None, ...]
    evidence: tuple[tuple[Json, ...], ...]
    stagings: tuple[tuple[Json, ...], ...]
    other_diagnosis_counts: tuple[int, ...]
    line_counts: tuple[int, ...]
    numbering: tuple[bool, ...]
    lines: tuple[LineTemplate, ...]
    adverse_event_counts: tuple[int, ...]
    observation_counts: tuple[int, ...]
    observations: tuple[Json, ...]


@dataclass(frozen=True)
class SeedModel:
    """Templates and frequency pools derived from the seed cases (see the module docstring)."""

    files: tuple[str, ...]
    primaries: tuple[str, ...]
    profiles: Mapping[str, Profile]
    sexes: tuple[str, ...]
    ages: tuple[int, ...]
    age_refers_to: tuple[str, ...]
    races: tuple[tuple[Json, ...], ...]
    histories: tuple[tuple[Json, ...], ...]
    trials: tuple[Json | None, ...]
    deaths: tuple[Json | None, ...]
    follow_ups: tuple[Json | None, ...]
    other_diagnoses: tuple[Json, ...]
    adverse_events: tuple[Json, ...]
    precisions: Mapping[str, tuple[str, ...]]
    """Per kind of date: one entry per seed item, ``none`` when the seed gave no date."""
    note_lengths: Mapping[str, tuple[int, ...]]
    """Per section: one entry per seed item, 0 when it had no note."""
    start_years: tuple[int, ...]

    @property
    def seed_day_start_share(self) -> float:
        """Share of seed courses whose start is known to the day."""
        starts = self.precisions["treatment.start"]
        return starts.count("day") / len(starts) if starts else 0.0


def examples_dir() -> Path:
    """The seed folder: ``$FHIR_ADAPTER_EXAMPLES`` or ``examples/cases`` of the checkout."""
    override = os.environ.get(EXAMPLES_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "examples" / "cases"


def _precision(value: Any) -> str:
    return _PRECISIONS.get(len(value), _NONE) if isinstance(value, str) else _NONE


def _year(value: Any) -> int | None:
    if isinstance(value, str) and len(value) >= 4 and value[:4].isdigit():
        return int(value[:4])
    return None


def _timing(item: Json, date_key: str = "date", after_key: str = "after") -> str:
    """``date:<precision>``, ``after:<kind>`` (kind may be empty) or ``none``."""
    relative = item.get(after_key)
    if isinstance(relative, dict):
        kind = next((k for k in _RELATIVE_KINDS if k in relative), "")
        return f"after:{kind}"
    precision = _precision(item.get(date_key))
    return _NONE if precision == _NONE else f"date:{precision}"


def _note_length(item: Json) -> int:
    note = item.get("note")
    return len(note) if isinstance(note, str) else 0


def _known(table: str, key: Any) -> bool:
    return isinstance(key, str) and terminology.has(table, key)


def _clean_schedule(schedule: Any, regimens: Mapping[str, Any]) -> Json | None:
    if not isinstance(schedule, dict):
        return None
    cleaned = {k: copy.deepcopy(v) for k, v in schedule.items() if k != "text"}
    if "regimen" in cleaned and cleaned["regimen"] not in regimens:
        del cleaned["regimen"]
    if not cleaned:
        return None
    if "text" in schedule:
        cleaned["text"] = schedule["text"]
    return cleaned


def _course_template(treatment: Json, regimens: Mapping[str, Any]) -> Json | None:
    """A seed course without its ids, dates, links and notes; None if nothing valid is left."""
    kind = treatment.get("kind")
    template: Json = {"kind": kind}
    if kind == "drug":
        agents = []
        for agent in treatment.get("agents", []):
            if not _known("drugs", agent.get("drug")):
                continue
            clean = {k: copy.deepcopy(v) for k, v in agent.items() if k != "schedule"}
            schedule = _clean_schedule(agent.get("schedule"), regimens)
            if schedule:
                clean["schedule"] = schedule
            agents.append(clean)
        if not agents:
            return None
        template["agents"] = agents
    elif not _known("procedures", kind):
        return None
    for key in ("name", "counts", "status", "stop_reason", "radiation", "transplant"):
        if key in treatment:
            template[key] = copy.deepcopy(treatment[key])
    schedule = _clean_schedule(treatment.get("schedule"), regimens)
    if schedule:
        template["schedule"] = schedule
    template["_responses"] = [
        {
            "compartment": r["compartment"],
            **({"category": r["category"]} if "category" in r else {}),
            "_timing": _timing(r),
        }
        for r in treatment.get("responses", [])
    ]
    template["_interruptions"] = [
        {
            **{k: p[k] for k in ("after_dose", "duration_days", "duration_months") if k in p},
            "reason": "paused (synthetic)",
            **(
                {"restart_schedule": s}
                if (s := _clean_schedule(p.get("restart_schedule"), regimens))
                else {}
            ),
            "_ae": "adverse_event" in p,
        }
        for p in treatment.get("interruptions", [])
    ]
    template["_concomitant"] = bool(treatment.get("with"))
    template["_note"] = _note_length(treatment)
    template["_affinity"] = _affinity(treatment)
    return template


def _affinity(treatment: Json | None) -> str | None:
    """What makes a course the same kind of suspect: its first agent, or its therapy kind."""
    if not treatment:
        return None
    if treatment.get("kind") == "drug":
        agents = treatment.get("agents") or [{}]
        drug = agents[0].get("drug")
        return str(drug) if drug else None
    return str(treatment.get("kind"))


def _line_groups(treatments: list[Json]) -> list[list[Json]]:
    """Courses of one line: same line number or linked by ``with``; in story order."""
    parent = list(range(len(treatments)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_id = {t.get("id"): i for i, t in enumerate(treatments)}
    by_line: dict[int, int] = {}
    for i, treatment in enumerate(treatments):
        line = treatment.get("line")
        if isinstance(line, int):
            if line in by_line:
                parent[find(i)] = find(by_line[line])
            else:
                by_line[line] = i
        for other in treatment.get("with", []):
            if other in by_id:
                parent[find(i)] = find(by_id[other])
    groups: dict[int, list[Json]] = {}
    for i, treatment in enumerate(treatments):
        groups.setdefault(find(i), []).append(treatment)
    return sorted(groups.values(), key=lambda g: treatments.index(g[0]))


def _observation_template(item: Json) -> Json | None:
    if not _known("observations", item.get("kind")):
        return None
    template: Json = {"kind": item["kind"], "_timing": _timing(item)}
    for key in ("value", "comparator", "context"):
        if key in item:
            template[key] = item[key]
    if "value" not in item:
        template["text"] = str(item.get("text", "not stated"))[:80]
    return template


def _adverse_event_template(event: Json, treatments: Mapping[str, Json]) -> Json | None:
    if not _known("adverse-events", event.get("term")):
        return None
    template: Json = {"term": event["term"], "_timing": _timing(event, "onset", "onset_after")}
    for key in ("grade", "serious", "outcome", "actions"):
        if key in event:
            template[key] = copy.deepcopy(event[key])
    suspects = event.get("suspects") or []
    anchor_id = None
    if suspects:
        suspect = suspects[0]
        anchor_id = suspect.get("treatment")
        template["_suspect"] = {
            k: suspect[k]
            for k in ("drug", "causality", "method")
            if k in suspect and (k != "drug" or _known("drugs", suspect[k]))
        }
    elif isinstance(event.get("onset_after"), dict):
        anchor_id = event["onset_after"].get("treatment")
    suspect_drug = template.get("_suspect", {}).get("drug")
    template["_affinity"] = suspect_drug or _affinity(treatments.get(anchor_id or ""))
    template["_note"] = _note_length(event)
    return template


def _load_seeds(folder: Path) -> list[tuple[str, Json]]:
    """Seed records in file-name order; files still being written (not JSON yet) are skipped."""
    seeds = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("patient"), dict):
            seeds.append((path.name, record))
    return seeds


def build_seed_model(folder: Path | None = None) -> SeedModel:
    """Derive the templates and pools from the seed records of a folder."""
    regimen_table = regimens()
    staging_applies = staged_conditions()
    files: list[str] = []
    primaries: list[str] = []
    per_condition: dict[str, dict[str, list[Any]]] = {}
    sexes: list[str] = []
    ages: list[int] = []
    refers: list[str] = []
    races: list[tuple[Json, ...]] = []
    histories: list[tuple[Json, ...]] = []
    trials: list[Json | None] = []
    deaths: list[Json | None] = []
    follow_ups: list[Json | None] = []
    other_dx: list[Json] = []
    events: list[Json] = []
    precisions: dict[str, list[str]] = {}
    notes: dict[str, list[int]] = {}
    years: list[int] = []

    def precision(kind: str, value: Any) -> None:
        precisions.setdefault(kind, []).append(_precision(value))

    def note(section: str, item: Json) -> None:
        notes.setdefault(section, []).append(_note_length(item))

    for name, record in _load_seeds(folder or examples_dir()):
        try:
            diagnoses = record.get("diagnoses", [])
            primary = next((d for d in diagnoses if d.get("role") == "primary"), None)
            if primary is None or not _known("conditions", primary.get("condition")):
                continue
            condition = primary["condition"]
            pools = per_condition.setdefault(condition, {})

            def add(key: str, value: Any, pools: dict[str, list[Any]] = pools) -> None:
                pools.setdefault(key, []).append(value)

            files.append(name)
            primaries.append(condition)
            note("record", record)
            patient = record["patient"]
            sexes.append(patient["sex"])
            for age in patient.get("ages", [])[:1]:
                ages.append(int(age["years"]))
                refers.append(age["refers_to"])
                precision("age.date", age.get("date"))
                note("age", age)
            races.append(tuple(patient.get("race", [])))
            histories.append(tuple(patient.get("history", [])))
            trial = record.get("source", {}).get("trial")
            trials.append(copy.deepcopy(trial) if trial else None)
            deceased = patient.get("deceased")
            deaths.append(
                {"_timing": _timing(deceased), "cause": "cause as stated (synthetic)"}
                if isinstance(deceased, dict) and "cause" in deceased
                else ({"_timing": _timing(deceased)} if isinstance(deceased, dict) else None)
            )
            follow_up = record.get("follow_up")
            follow_ups.append(
                {"_timing": _timing(follow_up), **{"status": follow_up["status"]}}
                if isinstance(follow_up, dict) and "status" in follow_up
                else ({"_timing": _timing(follow_up)} if isinstance(follow_up, dict) else None)
            )

            # diagnoses
            add("statuses", primary.get("status"))
            add("variants", primary.get("variant"))
            add(
                "evidence",
                tuple(
                    {"kind": e["kind"], **({"site": e["site"]} if "site" in e else {})}
                    for e in primary.get("evidence", [])
                ),
            )
            stagings = tuple(
                {k: v for k, v in s.items() if k != "text"} for s in primary.get("stagings", [])
            )
            add("stagings", stagings if condition in staging_applies else ())
            for staging in stagings:
                precision("staging.date", staging.get("date"))
            precision("diagnosis.diagnosed", primary.get("diagnosed"))
            precision("diagnosis.onset", primary.get("onset"))
            note("diagnosis", primary)
            others = [
                d for d in diagnoses if d is not primary and _known("conditions", d["condition"])
            ]
            add("other_diagnosis_counts", len(others))
            for other in others:
                other_dx.append(
                    {
                        k: other[k]
                        for k in ("condition", "role", "status", "verification")
                        if k in other
                    }
                    | {"_evidence": tuple(e["kind"] for e in other.get("evidence", []))}
                )
                precision("other_diagnosis.diagnosed", other.get("diagnosed"))
                note("other_diagnosis", other)
            for dx in diagnoses:
                for key in ("diagnosed", "onset"):
                    if (y := _year(dx.get(key))) is not None:
                        years.append(y)

            # treatments, grouped into lines
            treatments = record.get("treatments", [])
            by_id = {t["id"]: t for t in treatments}
            groups = _line_groups(treatments)
            add("line_counts", len(groups))
            add("numbering", any(isinstance(t.get("line"), int) for t in treatments))
            for index, group in enumerate(groups):
                courses = tuple(
                    c for t in group if (c := _course_template(t, regimen_table)) is not None
                )
                if courses:
                    position = index / (len(groups) - 1) if len(groups) > 1 else 0.5
                    numbered = any(isinstance(t.get("line"), int) for t in group)
                    add("lines", LineTemplate(position, numbered, courses))
            for treatment in treatments:
                has_start = "start" in treatment
                precision("treatment.start", treatment.get("start"))
                precision(
                    "treatment.end" if has_start else "treatment.end_without_start",
                    treatment.get("end"),
                )
                for response in treatment.get("responses", []):
                    if "date" in response:
                        precision("response.date", response["date"])
                if (y := _year(treatment.get("start"))) is not None:
                    years.append(y)

            # adverse events and observations
            seed_events = [
                template
                for event in record.get("adverse_events", [])
                if (template := _adverse_event_template(event, by_id)) is not None
            ]
            events.extend(seed_events)
            add("adverse_event_counts", len(seed_events))
            for event in record.get("adverse_events", []):
                if "onset" in event:
                    precision("adverse_event.onset", event["onset"])
            seed_observations = [
                template
                for item in record.get("observations", [])
                if (template := _observation_template(item)) is not None
            ]
            add("observation_counts", len(seed_observations))
            pools.setdefault("observations", []).extend(seed_observations)
        except (KeyError, TypeError, AttributeError, ValueError):
            # a seed still being written: take what was gathered, skip the rest of it
            continue

    if not primaries:
        raise ValueError(f"no usable seed case records in {folder or examples_dir()}")
    profiles = {
        condition: Profile(
            condition=condition,
            statuses=tuple(p.get("statuses", [None])),
            variants=tuple(p.get("variants", [None])),
            evidence=tuple(p.get("evidence", [()])),
            stagings=tuple(p.get("stagings", [()])),
            other_diagnosis_counts=tuple(p.get("other_diagnosis_counts", [0])),
            line_counts=tuple(p.get("line_counts", [0])),
            numbering=tuple(p.get("numbering", [False])),
            lines=tuple(p.get("lines", [])),
            adverse_event_counts=tuple(p.get("adverse_event_counts", [0])),
            observation_counts=tuple(p.get("observation_counts", [0])),
            observations=tuple(p.get("observations", [])),
        )
        for condition, p in per_condition.items()
    }
    return SeedModel(
        files=tuple(files),
        primaries=tuple(primaries),
        profiles=profiles,
        sexes=tuple(sexes),
        ages=tuple(ages) or (60,),
        age_refers_to=tuple(refers) or ("diagnosis",),
        races=tuple(races),
        histories=tuple(histories),
        trials=tuple(trials),
        deaths=tuple(deaths),
        follow_ups=tuple(follow_ups),
        other_diagnoses=tuple(other_dx),
        adverse_events=tuple(events),
        precisions={k: tuple(v) for k, v in precisions.items()},
        note_lengths={k: tuple(v) for k, v in notes.items()},
        start_years=tuple(years) or (2018,),
    )


@cache
def seed_model() -> SeedModel:
    """The model of the default seed folder, built once per process."""
    return build_seed_model()


# --------------------------------------------------------------------------------------------
# Sampling one record


class _Case:
    """The state of one record being generated: its random stream, calendar and ids."""

    def __init__(self, model: SeedModel, rng: random.Random, day_start_share: float | None):
        self.model = model
        self.rng = rng
        self.day_start_share = day_start_share
        self.treatments: list[Json] = []
        self.windows: dict[str, tuple[date, date]] = {}
        self.expected_doses: dict[str, int] = {}
        self.affinities: dict[str, str | None] = {}
        self.cursor = date(rng.choice(model.start_years), 1, 1) + timedelta(rng.randrange(365))
        self.diagnosed = self.cursor

    # small helpers --------------------------------------------------------------------------

    def precision(self, kind: str, default: str = _NONE) -> str:
        pool = self.model.precisions.get(kind)
        return self.rng.choice(pool) if pool else default

    def note(self, section: str, item: Json) -> None:
        pool = self.model.note_lengths.get(section)
        length = self.rng.choice(pool) if pool else 0
        if length:
            repeats = _FILLER * (length // len(_FILLER) + 1)
            item["note"] = repeats[: min(length, 4000)].rstrip() or "Synthetic note."

    def between(self, first: date, last: date) -> date:
        span = max((last - first).days, 0)
        return first + timedelta(self.rng.randint(0, span))

    @property
    def story_end(self) -> date:
        return max([self.cursor, *(w[1] for w in self.windows.values())])

    def relative(self, treatment_id: str, kind: str) -> Json:
        """A relative time of a seed's kind, anchored on one of this record's courses."""
        rng = self.rng
        relative: Json = {"treatment": treatment_id}
        doses = self.expected_doses.get(treatment_id, 6)
        if kind == "after_dose":
            relative["after_dose"] = rng.randint(1, max(doses, 1))
            relative["text"] = f"after dose {relative['after_dose']}"
        elif kind == "after_cycle":
            relative["after_cycle"] = rng.randint(1, max(doses // 2, 1))
            relative["text"] = f"after cycle {relative['after_cycle']}"
        elif kind == "days":
            relative["days"] = rng.randint(7, 365)
            relative["text"] = f"day +{relative['days']}"
        elif kind == "weeks":
            relative["weeks"] = rng.randint(1, 26)
            relative["text"] = f"{relative['weeks']} weeks after the start"
        elif kind == "months":
            relative["months"] = rng.randint(1, 36)
            relative["text"] = f"{relative['months']} months after the start"
        else:
            relative["text"] = "during this treatment"
        return relative

    def timed(
        self,
        item: Json,
        timing: str,
        window: tuple[date, date],
        anchor: str | None,
        date_key: str = "date",
        after_key: str = "after",
    ) -> None:
        """Give an item a date of the seed's precision, or a relative time, or neither."""
        if timing.startswith("date:"):
            item[date_key] = render(self.between(*window), timing[5:])
        elif timing.startswith("after:") and anchor is not None:
            item[after_key] = self.relative(anchor, timing[6:])

    # sections -------------------------------------------------------------------------------

    def patient(self) -> Json:
        model, rng = self.model, self.rng
        patient: Json = {"sex": rng.choice(model.sexes)}
        years = rng.choice(model.ages) + rng.randint(-3, 3)
        age: Json = {
            "years": min(max(years, min(model.ages)), max(model.ages)),
            "refers_to": rng.choice(model.age_refers_to),
        }
        precision = self.precision("age.date")
        if precision != _NONE:
            age["date"] = render(self.diagnosed, precision)
        self.note("age", age)
        patient["ages"] = [age]
        race = rng.choice(model.races) if model.races else ()
        if race:
            patient["race"] = copy.deepcopy(list(race))
        history = rng.choice(model.histories) if model.histories else ()
        if history:
            patient["history"] = copy.deepcopy(list(history))
        return patient

    def diagnoses(self, profile: Profile) -> list[Json]:
        rng = self.rng
        primary: Json = {
            "id": "dx1",
            "condition": profile.condition,
            "text": terminology.lookup("conditions", profile.condition).display,
            "role": "primary",
        }
        variant = rng.choice(profile.variants)
        if variant:
            primary["variant"] = variant
        onset = self.precision("diagnosis.onset")
        if onset != _NONE:
            primary["onset"] = render(self.diagnosed - timedelta(rng.randint(30, 900)), onset)
        diagnosed = self.precision("diagnosis.diagnosed")
        if diagnosed != _NONE:
            primary["diagnosed"] = render(self.diagnosed, diagnosed)
        status = rng.choice(profile.statuses)
        if status:
            primary["status"] = status
        evidence = rng.choice(profile.evidence)
        if evidence:
            primary["evidence"] = [
                {**e, "text": f"{e['kind'].replace('_', ' ')} finding (synthetic)"}
                for e in evidence
            ]
        stagings = rng.choice(profile.stagings)
        if stagings:
            primary["stagings"] = []
            for staging in stagings:
                copied = dict(staging)
                if "date" in copied:
                    copied["date"] = render(self.diagnosed, _precision(copied["date"]))
                primary["stagings"].append(copied)
        self.note("diagnosis", primary)
        out = [primary]
        seen = {profile.condition}
        pool = self.model.other_diagnoses
        for _ in range(rng.choice(profile.other_diagnosis_counts) if pool else 0):
            template = rng.choice(pool)
            if template["condition"] in seen:
                continue
            seen.add(template["condition"])
            dx: Json = {
                "id": f"dx{len(out) + 1}",
                "condition": template["condition"],
                "text": terminology.lookup("conditions", template["condition"]).display,
                **{k: v for k, v in template.items() if not k.startswith("_") and k != "condition"},
            }
            precision = self.precision("other_diagnosis.diagnosed")
            if precision != _NONE:
                dx["diagnosed"] = render(self.between(self.diagnosed, self.story_end), precision)
            if template["_evidence"]:
                dx["evidence"] = [
                    {"kind": kind, "text": f"{kind.replace('_', ' ')} finding (synthetic)"}
                    for kind in template["_evidence"]
                ]
            self.note("other_diagnosis", dx)
            out.append(dx)
        return out

    def start_precision(self) -> str:
        if self.day_start_share is None:
            return self.precision("treatment.start")
        if self.rng.random() < self.day_start_share:
            return "day"
        pool = [p for p in self.model.precisions.get("treatment.start", ()) if p != "day"]
        return self.rng.choice(pool) if pool else _NONE

    def lines(self, profile: Profile, trial: bool) -> None:
        rng = self.rng
        if not profile.lines:
            return
        count = rng.choice(profile.line_counts)
        chosen = sorted(
            (rng.choice(profile.lines) for _ in range(count)),
            key=lambda line: line.position + rng.uniform(-0.15, 0.15),
        )
        numbered = rng.choice(profile.numbering)
        line_number = 0
        self.cursor = self.diagnosed + timedelta(rng.randint(0, 90))
        for line in chosen:
            start = self.cursor
            precision = self.start_precision()
            if numbered and line.numbered:
                line_number += 1
            ids = [f"t{len(self.treatments) + i + 1}" for i in range(len(line.courses))]
            concomitant = [i for i, c in zip(ids, line.courses, strict=True) if c["_concomitant"]]
            longest = 0
            for course_id, template in zip(ids, line.courses, strict=True):
                course, days = self.course(course_id, template, start, precision)
                if numbered and line.numbered:
                    course["line"] = line_number
                if course_id in concomitant and len(concomitant) > 1:
                    course["with"] = [other for other in concomitant if other != course_id]
                self.treatments.append(course)
                longest = max(longest, days)
            self.cursor = start + timedelta(longest + rng.randint(0, 120))
        if trial:
            drugs = [t for t in self.treatments if t["kind"] == "drug"]
            if drugs:
                drugs[-1]["in_trial"] = True

    def course(
        self, course_id: str, template: Json, start: date, precision: str
    ) -> tuple[Json, int]:
        """One course from its template; returns it and its length in days."""
        rng = self.rng
        course: Json = {"id": course_id, "kind": template["kind"]}
        for key in ("name", "agents", "schedule", "status", "stop_reason"):
            if key in template:
                course[key] = copy.deepcopy(template[key])
        counts: Json = copy.deepcopy(template.get("counts") or {})
        if counts:
            for key in ("cycles", "doses", "sessions", "weeks", "months", "days"):
                if key in counts:
                    counts[key] = max(1, round(counts[key] * rng.uniform(0.5, 1.5)))
            course["counts"] = counts
        for key in ("radiation", "transplant"):
            if key in template:
                course[key] = copy.deepcopy(template[key])
        days, doses = _course_length(course, rng)
        self.expected_doses[course_id] = doses
        self.windows[course_id] = (start, start + timedelta(days))
        self.affinities[course_id] = template["_affinity"]
        if precision != _NONE:
            course["start"] = render(start, precision)
            end_precision = self.precision("treatment.end")
            bounded = (
                bool(counts)
                and not counts.get("approximate")
                and ("doses" in counts or "cycles" in counts)
            )
            if precision == "day" and end_precision == "day" and not bounded:
                end_precision = "month"  # an exact end would expand a daily drug for years
            if end_precision != _NONE:
                course["end"] = render(start + timedelta(days), end_precision)
        else:
            end_precision = self.precision("treatment.end_without_start")
            if end_precision != _NONE:
                course["end"] = render(start + timedelta(days), end_precision)
        responses = []
        for response_template in template["_responses"]:
            response: Json = {k: v for k, v in response_template.items() if not k.startswith("_")}
            timing = response_template["_timing"]
            if timing.startswith("date:"):
                timing = "date:" + self.precision("response.date", timing[5:])
            self.timed(response, timing, self.windows[course_id], course_id)
            response["text"] = f"{response['compartment']} response" + (
                f": {response['category']}" if "category" in response else " (as stated)"
            )
            responses.append(response)
        if responses:
            course["responses"] = responses
        pauses = [
            {k: copy.deepcopy(v) for k, v in p.items() if k != "_ae"} | {"_ae": p["_ae"]}
            for p in template["_interruptions"]
        ]
        if pauses:
            course["interruptions"] = pauses
        self.note("treatment", course)
        return course, days

    def adverse_events(self, profile: Profile) -> list[Json]:
        rng = self.rng
        by_affinity: dict[str, list[str]] = {}
        for course_id, affinity in self.affinities.items():
            if affinity:
                by_affinity.setdefault(affinity, []).append(course_id)
        eligible = [
            e
            for e in self.model.adverse_events
            if e["_affinity"] is None or e["_affinity"] in by_affinity
        ]
        events: list[Json] = []
        if not eligible:
            return events
        for _ in range(rng.choice(profile.adverse_event_counts)):
            template = rng.choice(eligible)
            ids = by_affinity.get(template["_affinity"]) or []
            anchor = rng.choice(ids) if ids else None
            if anchor is None and self.treatments:
                anchor = rng.choice(self.treatments)["id"]
            term = template["term"]
            event: Json = {
                "id": f"ae{len(events) + 1}",
                "term": term,
                "text": terminology.lookup("adverse-events", term).display,
            }
            for key in ("grade", "serious", "outcome", "actions"):
                if key in template:
                    event[key] = copy.deepcopy(template[key])
            window = self.windows.get(anchor or "", (self.diagnosed, self.story_end))
            timing = template["_timing"]
            if timing.startswith("date:"):
                timing = "date:" + self.precision("adverse_event.onset", timing[5:])
            self.timed(event, timing, window, anchor, "onset", "onset_after")
            if "_suspect" in template and anchor is not None and ids:
                event["suspects"] = [{"treatment": anchor, **template["_suspect"]}]
            self.note("adverse_event", event)
            events.append(event)
        # a pause the seed blamed on an adverse event names one of its course's events
        for treatment in self.treatments:
            for pause in treatment.get("interruptions", []):
                if pause.pop("_ae", False):
                    blamed = next(
                        (
                            e["id"]
                            for e in events
                            if any(s["treatment"] == treatment["id"] for s in e.get("suspects", []))
                        ),
                        None,
                    )
                    if blamed:
                        pause["adverse_event"] = blamed
        return events

    def observations(self, profile: Profile) -> list[Json]:
        rng = self.rng
        out: list[Json] = []
        if not profile.observations:
            return out
        for _ in range(rng.choice(profile.observation_counts)):
            template = rng.choice(profile.observations)
            item: Json = {k: v for k, v in template.items() if not k.startswith("_")}
            if "value" in item:
                item["value"] = _jitter(item["value"], template["kind"], rng)
                item["text"] = f"{item.get('comparator', '')}{item['value']} (synthetic)"
            timing = template["_timing"]
            context = item.get("context")
            if context in {"diagnosis", "baseline"} or not self.treatments:
                window = (self.diagnosed, self.diagnosed + timedelta(30))
                anchor = self.treatments[0]["id"] if self.treatments else None
            else:
                anchor = rng.choice(self.treatments)["id"]
                window = self.windows[anchor]
            self.timed(item, timing, window, anchor)
            out.append(item)
        return out

    def follow_up(self, deceased: Json | None) -> Json | None:
        model, rng = self.model, self.rng
        template = rng.choice(model.follow_ups) if model.follow_ups else None
        if template is None and deceased is None:
            return None
        follow_up: Json = {}
        if deceased is not None:
            follow_up["status"] = "dead"
        elif template and "status" in template:
            follow_up["status"] = template["status"]
        last = self.treatments[-1]["id"] if self.treatments else None
        timing = template["_timing"] if template else _NONE
        self.timed(follow_up, timing, (self.story_end, self.story_end + timedelta(365)), last)
        follow_up["text"] = "last follow-up (synthetic)"
        return follow_up


def render(value: date, precision: str) -> str:
    """A date at a precision: ``year``, ``month`` or ``day``."""
    if precision == "year":
        return f"{value.year:04d}"
    if precision == "month":
        return f"{value.year:04d}-{value.month:02d}"
    return value.isoformat()


def _course_length(course: Json, rng: random.Random) -> tuple[int, int]:
    """Approximate length in days and number of doses of a course, for the synthetic calendar."""
    counts = course.get("counts") or {}
    cycle_days = 28
    for agent in course.get("agents", []):
        phases = (agent.get("schedule") or {}).get("phases")
        if phases:
            cycle_days = int(phases[0]["cycle_length_days"])
    if "days" in counts:
        days = int(counts["days"])
    elif "weeks" in counts:
        days = 7 * int(counts["weeks"])
    elif "months" in counts:
        days = round(30.4 * int(counts["months"]))
    elif "cycles" in counts:
        days = cycle_days * int(counts["cycles"])
    elif "doses" in counts:
        days = 14 * int(counts["doses"])
    elif "sessions" in counts:
        days = 7 * int(counts["sessions"])
    else:
        days = rng.randint(60, 540)
    doses = int(counts.get("doses") or 2 * counts.get("cycles", 0) or max(days // 14, 1))
    return max(days, 1), doses


def _jitter(value: Any, kind: str, rng: random.Random) -> int | float:
    """A seed value moved by ± 20 % (log-normal), keeping its type and its number of decimals."""
    if not isinstance(value, int | float) or value == 0:
        return value if isinstance(value, int | float) else 0
    moved = value * math.exp(rng.gauss(0.0, 0.2))
    attributes = terminology.lookup("observations", kind).attributes
    if attributes.get("unit") == "%":
        moved = min(moved, 100.0)
    if isinstance(value, int):
        return max(1, round(moved)) if value > 0 else round(moved)
    decimals = len(repr(value).split(".")[1]) if "." in repr(value) else 1
    return round(moved, min(decimals, 3)) or value


def record_id(index: int) -> str:
    """``synth-000001`` for index 1."""
    return f"synth-{index:06d}"


def generate_case(
    index: int,
    seed: int = 0,
    *,
    day_start_share: float | None = DEFAULT_DAY_START_SHARE,
    model: SeedModel | None = None,
) -> Json:
    """The synthetic record number ``index`` (1-based) of the stream of ``seed``."""
    model = model or seed_model()
    rng = random.Random(f"adapter.synthetic/{seed}/{index}")
    case = _Case(model, rng, day_start_share)
    condition = rng.choice(model.primaries)
    profile = model.profiles[condition]
    trial = rng.choice(model.trials) if model.trials else None
    source: Json = {
        "citation": f"Synthetic case record generated by adapter.synthetic (seed {seed})",
        "case_number": index,
    }
    if trial:
        source["trial"] = copy.deepcopy(trial)
    patient = case.patient()
    diagnoses = case.diagnoses(profile)
    case.lines(profile, trial is not None)
    events = case.adverse_events(profile)
    observations = case.observations(profile)
    death_template = rng.choice(model.deaths) if model.deaths else None
    deceased: Json | None = None
    if death_template is not None:
        deceased = {k: v for k, v in death_template.items() if not k.startswith("_")}
        first = case.treatments[0]["id"] if case.treatments else None
        end = case.story_end
        case.timed(deceased, death_template["_timing"], (end, end + timedelta(365)), first)
        patient["deceased"] = deceased
    follow_up = case.follow_up(deceased)
    record: Json = {
        "record_id": record_id(index),
        "schema_version": "1.0",
        "recorded_at": RECORDED_AT,
        "source": source,
        "patient": patient,
        "diagnoses": diagnoses,
    }
    if case.treatments:
        record["treatments"] = case.treatments
    if events:
        record["adverse_events"] = events
    if observations:
        record["observations"] = observations
    if follow_up:
        record["follow_up"] = follow_up
    case.note("record", record)
    for treatment in case.treatments:
        for pause in treatment.get("interruptions", []):
            pause.pop("_ae", None)
    return record


def generate_cases(
    n: int,
    seed: int = 0,
    *,
    start: int = 1,
    day_start_share: float | None = DEFAULT_DAY_START_SHARE,
    model: SeedModel | None = None,
) -> Iterator[Json]:
    """Stream ``n`` valid synthetic case records (``synth-000001``...), deterministic per seed.

    A generator: one record exists at a time, whatever ``n``. ``start`` begins the stream at
    another index (records ``start`` to ``start + n - 1`` of the same stream), so that ranges
    can be generated in parallel.
    """
    model = model or seed_model()
    for index in range(start, start + n):
        yield generate_case(index, seed, day_start_share=day_start_share, model=model)
