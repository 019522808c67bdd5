from datetime import date

import pytest

from adapter.record.dates import PartialDate, Precision, is_partial_date


@pytest.mark.parametrize(
    ("text", "precision"),
    [("2019", Precision.YEAR), ("2019-07", Precision.MONTH), ("2019-07-08", Precision.DAY)],
)
def test_precision_is_kept_and_printed_back_unchanged(text: str, precision: Precision) -> None:
    parsed = PartialDate.parse(text)
    assert parsed.precision is precision
    assert str(parsed) == text


@pytest.mark.parametrize(
    "text", ["2019-13", "2019-02-29", "2020-02-30", "2019-00", "19-07", "2019/07", "2019-7", ""]
)
def test_impossible_or_malformed_dates_are_rejected(text: str) -> None:
    assert not is_partial_date(text)
    with pytest.raises(ValueError):
        PartialDate.parse(text)


def test_leap_day_exists_in_leap_years_only() -> None:
    assert is_partial_date("2020-02-29")
    assert not is_partial_date("2021-02-29")


def test_arithmetic_refuses_to_invent_a_day() -> None:
    with pytest.raises(ValueError):
        PartialDate.parse("2020-06").plus_days(7)
    assert str(PartialDate.parse("2020-12-23").plus_days(28)) == "2021-01-20"


def test_bounds_of_a_month_precision_date() -> None:
    month = PartialDate.parse("2020-02")
    assert month.earliest() == date(2020, 2, 1)
    assert month.latest() == date(2020, 2, 29)
