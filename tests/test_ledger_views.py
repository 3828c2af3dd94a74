"""The read models' one WHERE builder for periods and cohorts (dunctl/ledger/views/period.py)."""

import pytest

from dunctl.ledger.views.period import Period


@pytest.mark.parametrize("period, kwargs, expected", [
    (Period(), {}, ("1", [])),
    (Period("2026-01-01T00:00:00Z"), {}, ("first_failed_at >= ?", ["2026-01-01T00:00:00Z"])),
    (Period(None, "2026-02-01"), {"column": "cohort_day"}, ("cohort_day < ?", ["2026-02-01"])),
    (Period("a", "b"), {"column": "c.first_failed_at"}, ("c.first_failed_at >= ? AND c.first_failed_at < ?",
                                                          ["a", "b"])),
    (Period("a", "b"), {"plus": True}, ("+first_failed_at >= ? AND +first_failed_at < ?", ["a", "b"])),
    (Period("a", "b", narrow=True), {"plus": True}, ("first_failed_at >= ? AND first_failed_at < ?", ["a", "b"])),
])
def test_a_period_is_one_where(period, kwargs, expected):
    assert period.where(**kwargs) == expected
