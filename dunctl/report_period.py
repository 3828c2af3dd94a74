"""The cohort a report covers (cases whose first failure falls in [since, until)) and the rates over it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dunctl.clock import iso
from dunctl.errors import UsageError
from dunctl.ledger.views import report as q


@dataclass(frozen=True)
class Period:
    """The cohort: cases whose first failure is at or after `since` and before `until` (either may be open)."""

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self):
        if self.since and self.until and self.since >= self.until:
            raise UsageError(f"--since {iso(self.since)} is not before --until {iso(self.until)}",
                             "give a period whose start comes before its end")

    def span(self) -> q.Period:
        return q.Period(iso(self.since), iso(self.until))

    def condition(self) -> dict:
        """The period as a filter on first_failed_at, in the condition language's words."""
        bounds = {}
        if self.since:
            bounds["gte"] = iso(self.since)
        if self.until:
            bounds["lt"] = iso(self.until)
        return {"first_failed_at": bounds} if bounds else {}


def rate(numerator: int | None, denominator: int | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 6)
