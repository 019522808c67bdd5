"""Partial dates that keep the precision the source gave them.

A case report says "July 2019" far more often than "2019-07-08"; turning that into a full date
would invent a fact, so every date in the adapter is a ``PartialDate`` that remembers whether it
is known to the year, the month or the day, and arithmetic is only offered on day precision.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, timedelta
from enum import IntEnum

_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?\Z")

EARLIEST_YEAR = 1900
"""First year a record may state (dates and date-times); see :func:`in_date_window`."""

LATEST_YEAR = 2100
"""Last year a record may state. The mappers add offsets and dose schedules to stated dates;
a window this far from ``date.max`` (9999-12-31) keeps every such sum a real date, and no
patient of a registry or a case report is born before 1900 or treated after 2100."""


class Precision(IntEnum):
    """How much of a date the source gave; ordered so that ``DAY > MONTH > YEAR``."""

    YEAR = 1
    MONTH = 2
    DAY = 3


@dataclass(frozen=True, order=True)
class PartialDate:
    """A date known to the year, month or day; never silently padded."""

    year: int
    month: int | None = None
    day: int | None = None

    @classmethod
    def parse(cls, text: str) -> PartialDate:
        """Parse ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``; raise ValueError for anything else."""
        match = _PARTIAL_DATE.match(text)
        if not match:
            raise ValueError(f"{text!r} is not YYYY, YYYY-MM or YYYY-MM-DD")
        year = int(match.group(1))
        month = int(match.group(2)) if match.group(2) else None
        day = int(match.group(3)) if match.group(3) else None
        if year < 1800:
            raise ValueError(f"{text!r}: year before 1800")
        if month is not None and not 1 <= month <= 12:
            raise ValueError(f"{text!r}: month {month} does not exist")
        if day is not None and month is not None:
            last = calendar.monthrange(year, month)[1]
            if not 1 <= day <= last:
                raise ValueError(f"{text!r}: day {day} does not exist in {year}-{month:02d}")
        return cls(year, month, day)

    @classmethod
    def from_date(cls, value: date) -> PartialDate:
        """Wrap a full calendar date (day precision)."""
        return cls(value.year, value.month, value.day)

    @property
    def precision(self) -> Precision:
        """The precision the source gave."""
        if self.day is not None:
            return Precision.DAY
        if self.month is not None:
            return Precision.MONTH
        return Precision.YEAR

    def to_date(self) -> date:
        """The full date; only defined at day precision, because anything else would invent."""
        if self.month is None or self.day is None:
            raise ValueError(f"{self} is not known to the day")
        return date(self.year, self.month, self.day)

    def earliest(self) -> date:
        """First calendar day the partial date may denote (for ordering checks only)."""
        return date(self.year, self.month or 1, self.day or 1)

    def latest(self) -> date:
        """Last calendar day the partial date may denote (for ordering checks only)."""
        month = self.month or 12
        day = self.day or calendar.monthrange(self.year, month)[1]
        return date(self.year, month, day)

    def plus_days(self, days: int) -> PartialDate:
        """Day arithmetic, refused below day precision so no precision is made up."""
        return PartialDate.from_date(self.to_date() + timedelta(days=days))

    def __str__(self) -> str:
        if self.month is None:
            return f"{self.year:04d}"
        if self.day is None:
            return f"{self.year:04d}-{self.month:02d}"
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}"


def is_partial_date(text: object) -> bool:
    """jsonschema format checker for ``partial-date``: syntax and calendar validity."""
    if not isinstance(text, str):
        return True  # type errors are the "type" keyword's business
    try:
        PartialDate.parse(text)
    except ValueError:
        return False
    return True


def in_date_window(text: object) -> bool:
    """Whether a well-formed partial date or RFC 3339 date-time lies in the accepted years.

    The year is the first four digits of both forms; call this only on text the format check
    accepted (a malformed date is the format's error, not the window's).
    """
    if not isinstance(text, str) or not text[:4].isdigit():
        return True
    return EARLIEST_YEAR <= int(text[:4]) <= LATEST_YEAR
