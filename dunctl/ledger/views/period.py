"""A period of the ledger's history, and the one WHERE builder every cohort and period query uses."""

from __future__ import annotations

from dataclasses import dataclass

from dunctl.ledger.sql import conjunction


@dataclass(frozen=True)
class Period:
    """A column (first_failed_at unless told) in [since, until); either bound may be open. ISO text, or days
    ('2026-11-03') for the rollups' cohort_day."""

    since: str | None = None
    until: str | None = None
    narrow: bool = False          # at most a day: worth an index range scan on first_failed_at

    def where(self, column: str = "first_failed_at", plus: bool = False) -> tuple[str, list[str]]:
        """The terms (joined by AND; "1" when both bounds are open) and their parameters. `plus` puts SQLite's
        unary + on the column, which keeps it from an index range scan where a wide period makes the table scan
        cheaper (never on a narrow period)."""
        prefix = "+" if plus and not self.narrow else ""
        return conjunction([(f"{prefix}{column} >= ?", self.since), (f"{prefix}{column} < ?", self.until)])
