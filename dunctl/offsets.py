"""Step offsets: '30m', '1h', '3d', '2w', '5bd' (business days), or combinations such as '1d12h'.

A step's time is its offset from the case's first failure. Business days skip Saturdays and Sundays, which is how
ACH returns surface (3-5 business days after the debit). A net-terms case is timed from its invoice's due date,
so its offsets may be negative ('-7d': a week before it falls due); business days never are.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_DAY = timedelta(days=1)
_PART = re.compile(r"(\d+)(bd|m|h|d|w)")
_WHOLE = re.compile(r"^(?:\d+(?:bd|m|h|d|w))+$")

ALLOWED = ("a number and a unit: m (minutes), h (hours), d (days), w (weeks), bd (business days), e.g. 30m, 3d, "
           "5bd, or -7d (before a net-terms invoice's due date)")


@dataclass(frozen=True)
class Offset:
    text: str
    minutes: int = 0
    business_days: int = 0

    def after(self, start: datetime) -> datetime:
        moment = start
        days = self.business_days
        while days > 0:
            moment += _DAY
            if moment.weekday() < 5:
                days -= 1
        return moment + self._span

    @functools.cached_property
    def _span(self) -> timedelta:   # the planner asks for every step's time on every plan
        return timedelta(minutes=self.minutes)

    @property
    def sort_key(self) -> float:
        # Business days are at least as long as calendar days; order them as 7/5 of a day each.
        return self.minutes + self.business_days * 1440 * 7 / 5


def parse_offset(text: str | int) -> Offset:
    """Parse an offset or raise ValueError with what is allowed."""
    value = str(text).strip().lower().replace(" ", "")
    if value == "0":
        return Offset("0")
    sign = -1 if value.startswith("-") else 1
    if not _WHOLE.match(value.removeprefix("-")):
        raise ValueError(f"'{text}' is not an offset; use {ALLOWED}")
    minutes = business = 0
    for number, unit in _PART.findall(value):
        n = int(number)
        if unit == "bd":
            business += n
        else:
            minutes += n * {"m": 1, "h": 60, "d": 1440, "w": 10080}[unit]
    if sign < 0 and business:
        raise ValueError(f"'{text}': business days cannot be negative; use d before a due date, e.g. -7d")
    return Offset(value, sign * minutes, business)


def parse_duration(text: str | int) -> timedelta:
    """A plain duration (no business days), for settings such as the grace period."""
    offset = parse_offset(text)
    if offset.minutes < 0:
        raise ValueError(f"'{text}' is negative; a duration is 0 or more")
    if offset.business_days:
        raise ValueError(f"'{text}' uses business days; use m, h, d or w here")
    return timedelta(minutes=offset.minutes)


def offset_text(delta: timedelta) -> str:
    """The shortest text parse_duration reads back as `delta` (to the minute): 3d, 36h, 90m."""
    minutes = int(delta.total_seconds() // 60)
    for unit, size in (("d", 1440), ("h", 60)):
        if minutes and minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"
