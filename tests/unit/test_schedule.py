"""Dose expansion: only from a day-precise start with a bound, and exactly per schedule."""

from datetime import date, timedelta

from adapter.mapping.courses import plan_treatment
from adapter.mapping.schedule import expand

STANDARD_MOGA = {"regimen": "mogamulizumab_standard"}


def offsets(start: str, doses: list) -> list[int]:
    first = date.fromisoformat(start)
    return [(d.when - first).days + 1 for d in doses]


def test_standard_mogamulizumab_six_cycles_is_fourteen_doses() -> None:
    doses = expand("2020-12-23", None, STANDARD_MOGA, {"cycles": 6})
    assert doses is not None
    assert len(doses) == 14
    expected_days = [1, 8, 15, 22] + [28 * c + d for c in range(1, 6) for d in (1, 15)]
    assert offsets("2020-12-23", doses) == expected_days
    assert doses[0].when == date(2020, 12, 23)
    assert doses[4].when == date(2021, 1, 20)  # day 1 of cycle 2
    assert [d.cycle for d in doses[:6]] == [1, 1, 1, 1, 2, 2]


def test_weekly_and_every_two_weeks_frequencies() -> None:
    weekly = expand(
        "2021-01-04",
        None,
        {"frequency": {"times": 1, "period": 1, "period_unit": "wk"}},
        {"doses": 4},
    )
    assert weekly is not None and offsets("2021-01-04", weekly) == [1, 8, 15, 22]
    biweekly = expand(
        "2021-01-04",
        None,
        {"frequency": {"times": 1, "period": 2, "period_unit": "wk"}},
        {"doses": 3},
    )
    assert biweekly is not None and offsets("2021-01-04", biweekly) == [1, 15, 29]


def test_three_times_a_week_uses_days_1_3_5() -> None:
    doses = expand(
        "2021-03-01",
        None,
        {"frequency": {"times": 3, "period": 1, "period_unit": "wk"}},
        {"weeks": 2, "doses": 6},
    )
    assert doses is not None
    assert offsets("2021-03-01", doses) == [1, 3, 5, 8, 10, 12]


def test_21_and_28_day_cycles() -> None:
    gem21 = expand(
        "2021-03-01",
        None,
        {"phases": [{"days": [1, 8, 15], "cycle_length_days": 21}]},
        {"cycles": 2},
    )
    assert gem21 is not None and offsets("2021-03-01", gem21) == [1, 8, 15, 22, 29, 36]
    gem28 = expand(
        "2021-03-01",
        None,
        {"phases": [{"days": [1, 8, 15], "cycle_length_days": 28}]},
        {"cycles": 2},
    )
    assert gem28 is not None and offsets("2021-03-01", gem28) == [1, 8, 15, 29, 36, 43]


def test_end_date_bounds_the_expansion() -> None:
    doses = expand(
        "2021-01-01",
        "2021-01-20",
        {"frequency": {"times": 1, "period": 1, "period_unit": "wk"}},
        None,
    )
    assert doses is not None
    assert [d.when for d in doses] == [date(2021, 1, 1) + timedelta(days=7 * i) for i in range(3)]


def test_no_expansion_without_day_precise_start_or_bound() -> None:
    assert expand("2020-12", None, STANDARD_MOGA, {"cycles": 6}) is None
    assert expand("2020", None, STANDARD_MOGA, {"cycles": 6}) is None
    assert expand("2020-12-23", None, STANDARD_MOGA, None) is None
    assert expand("2020-12-23", "2021-06", STANDARD_MOGA, None) is None  # end only to the month
    assert expand("2020-12-23", None, STANDARD_MOGA, {"cycles": 6, "approximate": True}) is None
    assert expand("2020-12-23", None, {"text": "monthly"}, {"cycles": 6}) is None


def test_initial_doses_precede_the_maintenance_dose() -> None:
    doses = expand(
        "2010-01-04",
        None,
        {"regimen": "alemtuzumab_low_dose_sc"},
        {"doses": 4},
        dose={"value": 10, "unit": "mg"},
        initial_doses=[{"value": 3, "unit": "mg"}],
    )
    assert doses is not None
    assert [d.quantity["value"] for d in doses if d.quantity] == [3, 10, 10, 10]


def _course(**extra: object) -> dict:
    course = {
        "id": "t1",
        "kind": "drug",
        "start": "2021-01-04",
        "agents": [
            {
                "drug": "mogamulizumab",
                "schedule": {"frequency": {"times": 1, "period": 1, "period_unit": "wk"}},
            }
        ],
    }
    course.update(extra)
    return course


def test_interruption_and_restart_shift_later_doses() -> None:
    course = _course(counts={"doses": 6}, interruptions=[{"after_dose": 2, "end": "2021-03-01"}])
    plan = plan_treatment(course)[0]
    assert plan.doses is not None
    assert [d.when for d in plan.doses] == [
        date(2021, 1, 4),
        date(2021, 1, 11),
        date(2021, 3, 1),
        date(2021, 3, 8),
        date(2021, 3, 15),
        date(2021, 3, 22),
    ]
    assert [d.number for d in plan.doses] == [1, 2, 3, 4, 5, 6]


def test_restart_with_a_new_schedule() -> None:
    course = _course(
        counts={"doses": 4},
        interruptions=[
            {
                "after_dose": 2,
                "end": "2021-03-01",
                "restart_schedule": {"frequency": {"times": 1, "period": 2, "period_unit": "wk"}},
            }
        ],
    )
    plan = plan_treatment(course)[0]
    assert plan.doses is not None
    assert [d.when for d in plan.doses][2:] == [date(2021, 3, 1), date(2021, 3, 15)]


def test_interruption_without_known_restart_day_is_not_expanded() -> None:
    course = _course(counts={"doses": 6}, interruptions=[{"after_dose": 2, "end": "2021-03"}])
    assert plan_treatment(course)[0].doses is None


def test_regimen_dose_and_route_fill_an_agent_that_names_the_regimen() -> None:
    course = {
        "id": "t1",
        "kind": "drug",
        "start": "2021-01-04",
        "counts": {"cycles": 1},
        "agents": [{"drug": "mogamulizumab", "schedule": STANDARD_MOGA}],
    }
    plan = plan_treatment(course)[0]
    assert plan.dose == {"value": 1, "unit": "mg/kg"}
    assert plan.route == "intravenous"
    assert plan.doses is not None and len(plan.doses) == 4
