"""Recovery metrics over the ledger: the data behind `dunctl report` and the headline of `dunctl status`.

Every metric is an SQL aggregate (dunctl/ledger/views/report.py), read from rollups the ledger keeps by cohort
day, so the cost follows the number of groups, not of cases; Python only combines the grouped rows. The definitions (and why they are what they are) are in docs/metrics.md; keep the two in step.

The cohort of a report is the cases whose first failure falls in [since, until). Every breakdown row carries
`filter`: the conditions, over the columns of `case_listing`, that select exactly the cases behind the row.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from dunctl.clock import iso
from dunctl.errors import UsageError
from dunctl.failures import NET_TERMS
from dunctl.ledger import Ledger
from dunctl.ledger.views import report as q
from dunctl.notices.report import PreDunning
from dunctl.report_churn import Churn, churn_denominator, churn_over, customer_denominator, with_months
from dunctl.report_period import Period, rate

# /2 (issue 24): the one `recovery_rate` (recovered of ended) became `recovered_of_failed` and
# `recovered_of_ended`, by count and by amount, so no machine reads the inflated rate by its generic name.
SCHEMA = "dunctl.report/2"
DIMENSIONS = ("segment", "failure_type", "sequence", "channel", "attempt", "currency", "cohort")
NO_TOUCH = q.NO_TOUCH
TOUCHES = q.TOUCHES
DEFAULT_ATTRIBUTION_WINDOW = timedelta(days=3)
# The default cohort, every case: Period is frozen, so one instance serves every call.
EVERY_CASE = Period()

# The cube's columns that breakdowns group by, keyed by dimension name.

# -- results ---------------------------------------------------------------------------------------------------


@dataclass
class CurrencyFigures:
    """The cohort's money in one currency, minor units. Never added to another currency's."""

    currency: str
    cases: int
    ended: int
    recovered: int
    recovered_of_failed: float | None  # recovered / cases: open cases count as not yet recovered
    recovered_of_ended: float | None   # recovered / ended: higher while cases are open
    amount_failed: int            # every case: amount_due - amount_paid_at_open
    amount_at_stake: int          # ended cases: amount_due - amount_paid_at_open
    amount_recovered: int         # ended cases: amount_recovered (includes partial payments)
    amount_recovered_of_failed: float | None   # amount_recovered / amount_failed
    amount_recovered_of_ended: float | None    # amount_recovered / amount_at_stake
    revenue_at_risk: int          # open and paused cases: amount_remaining


@dataclass
class DaysToRecovery:
    recovered: int                # how many recovered cases the figures describe
    median: float | None
    mean: float | None
    p90: float | None
    # Cases still open that may yet recover, later than any of them so far: while there are any, the figures are
    # censored, a lower bound and not yet known (issue 24: a young cohort's p90 is not its p90).
    still_open: int = 0
    censored: bool = False


@dataclass
class Headline:
    since: str | None
    until: str | None
    generated_at: str
    failed_invoices: int          # every case is one failed invoice
    open: int
    ended: int
    recovered: int
    recovered_of_failed: float | None  # recovered / failed_invoices: the anchors' definition, the one to quote
    recovered_of_ended: float | None   # recovered / ended
    ended_by_state: dict[str, int]
    currencies: list[CurrencyFigures]
    days_to_recovery: DaysToRecovery
    churn: Churn
    with_person: int              # escalated or disputed
    closed_by_person: int
    filter: dict
    planned: dict[str, int] = field(default_factory=dict)   # monitor mode: actions recorded `would`, by action
    # Of failed_invoices, the net-terms invoices (timed from their due date; no payment failed): the headline's
    # rates divide by both kinds, and its lines say so when there are any
    net_terms_cases: int = 0

    def currency(self, code: str) -> CurrencyFigures | None:
        return next((c for c in self.currencies if c.currency == code), None)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BreakdownRow:
    """The cases of the cohort with one value of a dimension, in one currency. For the channel dimension the
    row covers recovered cases only, so the fields about ended and open cases are None."""

    dimension: str
    key: str
    currency: str
    cases: int
    ended: int | None
    recovered: int
    recovered_of_failed: float | None
    recovered_of_ended: float | None
    amount_failed: int | None
    amount_at_stake: int | None
    amount_recovered: int
    amount_recovered_of_failed: float | None
    amount_recovered_of_ended: float | None
    revenue_at_risk: int | None
    with_person: int
    share_of_recovered: float | None  # this row's recovered cases / all the cohort's recovered cases
    filter: dict


@dataclass
class AttemptRow:
    """Retry success at payment attempt n (n >= 2; attempt 1 is the payment that failed)."""

    attempt: int
    reached: int                  # cases whose furthest attempt is n or later
    recovered: int                # cases recovered by attempt n
    success_rate: float | None
    filter: dict
    recovered_filter: dict


@dataclass
class CurvePoint:
    day: int
    recovered: int                # cases recovered less than day + 1 days after their first failure
    share: float                  # of all the cohort's cases


@dataclass
class Report:
    headline: Headline
    attribution_window_seconds: int
    dimensions: list[str]
    breakdowns: dict[str, list[BreakdownRow]] = field(default_factory=dict)
    retry_success: list[AttemptRow] = field(default_factory=list)
    recovery_curve: list[CurvePoint] = field(default_factory=list)
    schema: str = SCHEMA
    # Notices sent before a payment failed (dunctl/notices/report.py), by when they were sent; the CLI fills it.
    predunning: PreDunning | None = None
    # Aging and DSO (dunctl/receivables/aging.py), as of the report's time; the CLI fills it.
    receivables: object | None = None


# -- computing ---------------------------------------------------------------------------------------------------


def _days(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 86400, 4)


def parse_dimensions(names: list[str] | None) -> list[str]:
    """The breakdowns to compute, in the canonical order; all of them when none are named."""
    if not names:
        return list(DIMENSIONS)
    wanted = []
    for name in names:
        for part in name.split(","):
            part = part.strip().replace("-", "_")
            if part not in DIMENSIONS:
                raise UsageError(f"unknown breakdown '{part}'", "use one of: " + ", ".join(DIMENSIONS))
            wanted.append(part)
    return [d for d in DIMENSIONS if d in wanted]


def _rates(row: dict) -> dict:
    """Both rates, by count and by amount, from one grouped row of the cube: every place that shows a rate shows
    both, named by their denominator (issue 24)."""
    return {"recovered_of_failed": rate(row["recovered"], row["cases"]),
            "recovered_of_ended": rate(row["recovered"], row["ended"]),
            "amount_failed": row["failed_amount"], "amount_at_stake": row["at_stake"],
            "amount_recovered": row["recovered_amount"],
            "amount_recovered_of_failed": rate(row["recovered_amount"], row["failed_amount"]),
            "amount_recovered_of_ended": rate(row["recovered_amount"], row["at_stake"])}


def _headline(conn: sqlite3.Connection, period: Period, now: datetime, progress: q.Progress,
              rollup: bool, known: tuple[str, int | None] | None = None,
              customers: tuple[str, int | None] | None = None) -> Headline:
    """The headline from the cube (which must exist on `conn`)."""
    totals = q.cube_totals(conn)
    by_state = q.cube_ended_by_state(conn)
    currencies = [
        CurrencyFigures(currency=row["currency"], cases=row["cases"], ended=row["ended"], recovered=row["recovered"],
                        revenue_at_risk=row["at_risk"], **_rates(row))
        for row in q.cube_by_currency(conn)]
    cases = totals["cases"] or 0
    return Headline(
        since=iso(period.since), until=iso(period.until), generated_at=iso(now),
        failed_invoices=cases, open=totals["open"], ended=totals["ended"],
        recovered=totals["recovered"], recovered_of_failed=rate(totals["recovered"], cases),
        recovered_of_ended=rate(totals["recovered"], totals["ended"]),
        ended_by_state=by_state, currencies=currencies,
        days_to_recovery=_censored(_days_to_recovery(conn, period, progress, rollup), totals["open"]),
        churn=with_months(churn_over(conn, period, rollup, known), conn, period, now, customers),
        with_person=totals["with_person"], closed_by_person=totals["closed"],
        filter=period.condition(), planned=q.planned_in_monitor_mode(conn),
        net_terms_cases=q.cube_cases_of(conn, NET_TERMS))


def _censored(days: DaysToRecovery, still_open: int) -> DaysToRecovery:
    days.still_open, days.censored = still_open, bool(still_open and days.recovered)
    return days


def _days_to_recovery(conn: sqlite3.Connection, period: Period, progress: q.Progress,
                      rollup: bool) -> DaysToRecovery:
    """Median (mean of the two middle values when the count is even), mean, and p90 by nearest rank: the value
    at rank ceil(0.9 n) of the ascending durations.

    The ranks wanted are first located in the per-day counts; then only the cases of those (one to three)
    days are ranked, instead of sorting every recovered case."""
    by_day = progress.by_day
    n = sum(by_day.values())
    if not n:
        return DaysToRecovery(0, None, None, None)
    ranks = sorted({(n + 1) // 2, n // 2 + 1, math.ceil(0.9 * n)})
    within: dict[int, int] = {}          # overall rank -> rank among the cases of its day
    days: dict[int, list[int]] = {}      # day -> overall ranks that fall on it
    before = 0
    for day in sorted(by_day):
        for rank in ranks:
            if before < rank <= before + by_day[day]:
                within[rank] = rank - before
                days.setdefault(day, []).append(rank)
        before += by_day[day]
    values: dict[int, int] = {}
    for day, day_ranks in days.items():
        found = q.seconds_at_places(conn, period.span(), day, [within[r] for r in day_ranks], rollup)
        for rank in day_ranks:
            values[rank] = found[within[rank]]
    median = values[(n + 1) // 2] if n % 2 else (values[n // 2] + values[n // 2 + 1]) / 2
    return DaysToRecovery(n, _days(median), _days(progress.recovery_seconds / n), _days(values[math.ceil(0.9 * n)]))


def _breakdown_row(dimension: str, row: dict, conditions: dict, all_recovered: int,
                   channel: bool = False) -> BreakdownRow:
    # A channel row holds recovered cases only: no rate over failed or ended cases means anything there.
    rates = _rates(row)
    if channel:
        rates = {**dict.fromkeys(rates), "amount_recovered": row["recovered_amount"]}
    return BreakdownRow(
        dimension=dimension, key=row["key"] if row["key"] is not None else "", currency=row["currency"],
        cases=row["cases"], ended=None if channel else row["ended"], recovered=row["recovered"],
        revenue_at_risk=None if channel else row["at_risk"], with_person=row["with_person"],
        share_of_recovered=rate(row["recovered"], all_recovered), filter=conditions, **rates)


def _breakdown(conn: sqlite3.Connection, dimension: str, period: Period, all_recovered: int) -> list[BreakdownRow]:
    """One breakdown from the cube (which must exist on `conn`)."""
    rows = q.cube_breakdown(conn, dimension)
    return [_breakdown_row(dimension, row, {**period.condition(), dimension: row["key"], "currency": row["currency"]},
                           all_recovered)
            for row in rows]


def _channel_breakdown(rows: list[dict], period: Period, all_recovered: int) -> list[BreakdownRow]:
    return [_breakdown_row("channel", {**row, "ended": None, "at_stake": None, "at_risk": None,
                                            "failed_amount": None},
                           {**period.condition(), "state": "recovered", "channel": row["key"],
                            "currency": row["currency"]}, all_recovered, channel=True)
            for row in rows]


def _retry_success(progress: q.Progress, period: Period) -> list[AttemptRow]:
    grouped = progress.attempts          # a few dozen (furthest attempt, attempt that recovered) -> count
    top = max((furthest for furthest, _ in grouped), default=0)
    rows = []
    for n in range(2, top + 1):
        reached = sum(count for (furthest, _), count in grouped.items() if furthest >= n)
        won = sum(count for (_, won_at), count in grouped.items() if won_at == n)
        rows.append(AttemptRow(n, reached, won, rate(won, reached),
                               {**period.condition(), "reached_attempt": {"gte": n}},
                               {**period.condition(), "state": "recovered", "recovered_attempt": n}))
    return rows


def _recovery_curve(by_day: dict[int, int], cohort_cases: int) -> list[CurvePoint]:
    if not cohort_cases:
        return []
    points, running = [], 0
    for day in range(0, max(by_day, default=0) + 1):
        running += by_day.get(day, 0)
        points.append(CurvePoint(day, running, round(running / cohort_cases, 6)))
    return points


def build_report(ledger: Ledger, now: datetime, period: Period = EVERY_CASE, dimensions: list[str] | None = None,
                 attribution_window: timedelta = DEFAULT_ATTRIBUTION_WINDOW, rollup: bool = True,
                 active_subscriptions: int | None = None, active_customers: int | None = None) -> Report:
    """Compute the report for the cohort of `period` with the breakdowns named in `dimensions` (default all).
    Involuntary churn is a rate only where its denominator is known (`churn_denominator`).

    From the rollups by default: the cost follows the number of groups, not of cases. `rollup=False` computes
    every figure by scanning the cases instead: the reference the rollups are tested against."""
    dimensions = parse_dimensions(dimensions)
    conn = ledger.conn
    window = int(attribution_window.total_seconds())
    progress = q.progress(conn, period.span(), rollup)
    q.create_cube(conn, period.span(), rollup)
    try:
        headline = _headline(conn, period, now, progress, rollup, churn_denominator(ledger, active_subscriptions),
                             customer_denominator(ledger, active_customers))
        breakdowns = {d: _breakdown(conn, d, period, headline.recovered) for d in dimensions if d in q.CUBE_KEYS}
    finally:
        q.drop_cube(conn)
    if "channel" in dimensions:
        breakdowns["channel"] = _channel_breakdown(q.channel_rows(conn, period.span(), window, rollup), period,
                                                   headline.recovered)
    return Report(
        headline=headline, attribution_window_seconds=window,
        dimensions=dimensions, breakdowns={d: breakdowns[d] for d in dimensions if d in breakdowns},
        retry_success=_retry_success(progress, period),
        recovery_curve=_recovery_curve(progress.by_day, headline.failed_invoices))


def headline(ledger: Ledger, now: datetime, period: Period = EVERY_CASE, rollup: bool = True) -> Headline:
    """The headline alone (every case in the ledger by default), for `dunctl status`."""
    conn = ledger.conn
    progress = q.progress(conn, period.span(), rollup)
    q.create_cube(conn, period.span(), rollup)
    try:
        return _headline(conn, period, now, progress, rollup, churn_denominator(ledger), customer_denominator(ledger))
    finally:
        q.drop_cube(conn)


# -- tracing numbers to cases -------------------------------------------------------------------------------------

CASE_COLUMNS = ("case_id", "invoice_id", "customer_id", "subscription_id", "state", "segment", "failure_type",
                "sequence", "currency", "cohort", "first_failed_at", "recovered_at", "closed_at",
                "days_to_recovery", "channel", "reached_attempt", "recovered_attempt", "recovered_by",
                "amount_at_stake", "amount_recovered", "revenue_at_risk", "with_person", "churned", "in_cohort")


def case_listing(ledger: Ledger, period: Period = EVERY_CASE,
                 attribution_window: timedelta = DEFAULT_ATTRIBUTION_WINDOW) -> Iterator[dict]:
    """Every case behind the report, one row each, streamed, with the derived columns the metrics use (channel,
    days to recovery, reached attempt) named as in the rows' `filter`. Cases outside the cohort appear only
    when they count towards churn in the period (in_cohort = 0)."""
    cursor = q.case_listing(ledger.conn, period.span(), int(attribution_window.total_seconds()))
    names = [d[0] for d in cursor.description]
    for row in cursor:
        yield dict(zip(names, row))
