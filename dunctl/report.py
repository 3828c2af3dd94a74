"""Recovery metrics over the ledger: the data behind `dunctl report` and the headline of `dunctl status`.

Every metric is an SQL aggregate; Python only combines the handful of grouped rows SQLite returns, never loops
over cases. The definitions (and why they are what they are) are in docs/metrics.md; keep the two in step.

The cohort of a report is the cases whose first failure falls in [since, until). Every breakdown row carries
`filter`: the conditions, over the columns of `case_listing`, that select exactly the cases behind the row.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dunctl.clock import iso
from dunctl.errors import UsageError
from dunctl.ledger import ENDED_STATES, OPEN_STATES, Ledger

SCHEMA = "dunctl.report/1"
DIMENSIONS = ("segment", "failure_type", "sequence", "channel", "attempt", "currency", "cohort")
NO_TOUCH = "no touch"
# A touch is a done action a customer or a person noticed; the channel it is credited to.
TOUCHES = {"email": "email", "sms": "sms", "retry": "retry", "escalate": "person"}
DEFAULT_ATTRIBUTION_WINDOW = timedelta(days=3)

_ENDED = "state IN ({})".format(", ".join(f"'{s}'" for s in ENDED_STATES))
_OPEN = "state IN ({})".format(", ".join(f"'{s}'" for s in OPEN_STATES))
# Whole seconds from first failure to payment. julianday() keeps millisecond precision; rounding makes it exact.
_SECONDS = "CAST(round((julianday(recovered_at) - julianday(first_failed_at)) * 86400) AS INTEGER)"
# The furthest payment attempt a case reached: the attempt that succeeded counts as reached even if `attempts`
# lags behind it.
_REACHED = "max(attempts, coalesce(recovered_attempt, 0))"
# The cube's columns that breakdowns group by, keyed by dimension name.
_CUBE_KEYS = {"segment": "segment", "failure_type": "failure_type", "sequence": "sequence",
              "channel": "channel", "currency": "currency", "cohort": "cohort"}


# -- results ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """The cohort: cases whose first failure is at or after `since` and before `until` (either may be open)."""

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self):
        if self.since and self.until and self.since >= self.until:
            raise UsageError(f"--since {iso(self.since)} is not before --until {iso(self.until)}",
                             "give a period whose start comes before its end")

    def where(self, column: str = "first_failed_at") -> tuple[str, list[str]]:
        parts, params = [], []
        if self.since:
            parts.append(f"{column} >= ?")
            params.append(iso(self.since))
        if self.until:
            parts.append(f"{column} < ?")
            params.append(iso(self.until))
        return (" AND ".join(parts) or "1"), params

    def condition(self) -> dict:
        """The period as a filter on first_failed_at, in the condition language's words."""
        bounds = {}
        if self.since:
            bounds["gte"] = iso(self.since)
        if self.until:
            bounds["lt"] = iso(self.until)
        return {"first_failed_at": bounds} if bounds else {}


@dataclass
class CurrencyFigures:
    """The cohort's money in one currency, minor units. Never added to another currency's."""

    currency: str
    cases: int
    ended: int
    recovered: int
    amount_at_stake: int          # ended cases: amount_due - amount_paid_at_open
    amount_recovered: int         # ended cases: amount_recovered (includes partial payments)
    amount_recovery_rate: float | None
    revenue_at_risk: int          # open and paused cases: amount_remaining


@dataclass
class DaysToRecovery:
    recovered: int                # how many recovered cases the figures describe
    median: float | None
    mean: float | None
    p90: float | None


@dataclass
class Churn:
    """Subscriptions ended by exhausted dunning in the period / subscriptions active in the period."""

    churned_subscriptions: int
    active_subscriptions: int
    rate: float | None
    filter: dict


@dataclass
class Headline:
    since: str | None
    until: str | None
    generated_at: str
    failed_invoices: int          # every case is one failed invoice
    open: int
    ended: int
    recovered: int
    recovery_rate: float | None   # recovered / ended
    ended_by_state: dict[str, int]
    currencies: list[CurrencyFigures]
    days_to_recovery: DaysToRecovery
    churn: Churn
    with_person: int              # escalated or disputed
    closed_by_person: int
    filter: dict

    def currency(self, code: str) -> CurrencyFigures | None:
        return next((c for c in self.currencies if c.currency == code), None)


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
    recovery_rate: float | None
    amount_at_stake: int | None
    amount_recovered: int
    amount_recovery_rate: float | None
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


# -- computing ---------------------------------------------------------------------------------------------------


def _rate(numerator: int | None, denominator: int | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 6)


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


class _Cube:
    """The cohort aggregated once by every dimension: a temporary table of a few thousand rows at most, which
    the headline and every breakdown then group further."""

    def __init__(self, ledger: Ledger, period: Period, window: timedelta):
        self.db = ledger.db
        where, params = period.where()
        touches = ", ".join(f"'{a}'" for a in TOUCHES)
        credited = " ".join(f"WHEN '{a}' THEN '{c}'" for a, c in TOUCHES.items())
        self.db.execute("DROP TABLE IF EXISTS temp.report_cube")
        # The last touch is a correlated lookup on actions(case_id, finished_at), made for recovered cases only.
        self.db.execute(
            f"""CREATE TEMP TABLE report_cube AS
                SELECT segment, failure_type, sequence, currency, cohort, state, channel,
                       count(*) AS cases,
                       sum(amount_due - amount_paid_at_open) AS at_stake,
                       sum(amount_recovered) AS recovered_amount,
                       sum(amount_remaining) AS remaining,
                       sum(with_person) AS with_person
                FROM (SELECT segment, first_failure_type AS failure_type, sequence, currency,
                             substr(first_failed_at, 1, 7) AS cohort, state, amount_due, amount_paid_at_open,
                             amount_recovered, amount_remaining, with_person,
                             CASE WHEN state = 'recovered' THEN coalesce(
                               (SELECT CASE a.action {credited} END FROM actions a
                                WHERE a.case_id = c.id AND a.status = 'done' AND a.action IN ({touches})
                                  AND a.finished_at <= c.recovered_at
                                  AND a.finished_at >= strftime('%Y-%m-%dT%H:%M:%SZ', c.recovered_at, ?)
                                ORDER BY a.finished_at DESC, a.id DESC LIMIT 1),
                               '{NO_TOUCH}') END AS channel
                      FROM cases c WHERE {where})
                GROUP BY segment, failure_type, sequence, currency, cohort, state, channel""",
            [f"-{int(window.total_seconds())} seconds", *params])

    def rows(self, sql: str, params=()) -> list[dict]:
        return list(self.db.query(sql, params))

    def drop(self) -> None:
        self.db.execute("DROP TABLE IF EXISTS temp.report_cube")


def _headline(ledger: Ledger, cube: _Cube, period: Period, now: datetime) -> Headline:
    totals = cube.rows(
        f"""SELECT coalesce(sum(cases), 0) AS cases,
                   coalesce(sum(CASE WHEN {_OPEN} THEN cases END), 0) AS open,
                   coalesce(sum(CASE WHEN {_ENDED} THEN cases END), 0) AS ended,
                   coalesce(sum(CASE WHEN state = 'recovered' THEN cases END), 0) AS recovered,
                   coalesce(sum(CASE WHEN state = 'closed' THEN cases END), 0) AS closed,
                   coalesce(sum(with_person), 0) AS with_person
            FROM report_cube""")[0]
    by_state = {row["state"]: row["n"] for row in cube.rows(
        f"SELECT state, sum(cases) AS n FROM report_cube WHERE {_ENDED} GROUP BY state ORDER BY state")}
    currencies = [
        CurrencyFigures(
            currency=row["currency"], cases=row["cases"], ended=row["ended"], recovered=row["recovered"],
            amount_at_stake=row["at_stake"], amount_recovered=row["recovered_amount"],
            amount_recovery_rate=_rate(row["recovered_amount"], row["at_stake"]), revenue_at_risk=row["at_risk"])
        for row in cube.rows(
            f"""SELECT currency, sum(cases) AS cases,
                       coalesce(sum(CASE WHEN {_ENDED} THEN cases END), 0) AS ended,
                       coalesce(sum(CASE WHEN state = 'recovered' THEN cases END), 0) AS recovered,
                       coalesce(sum(CASE WHEN {_ENDED} THEN at_stake END), 0) AS at_stake,
                       coalesce(sum(CASE WHEN {_ENDED} THEN recovered_amount END), 0) AS recovered_amount,
                       coalesce(sum(CASE WHEN {_OPEN} THEN remaining END), 0) AS at_risk
                FROM report_cube GROUP BY currency ORDER BY currency""")]
    return Headline(
        since=iso(period.since), until=iso(period.until), generated_at=iso(now),
        failed_invoices=totals["cases"], open=totals["open"], ended=totals["ended"],
        recovered=totals["recovered"], recovery_rate=_rate(totals["recovered"], totals["ended"]),
        ended_by_state=by_state, currencies=currencies,
        days_to_recovery=_days_to_recovery(ledger, period, totals["recovered"]),
        churn=_churn(ledger, period), with_person=totals["with_person"], closed_by_person=totals["closed"],
        filter=period.condition())


def _days_to_recovery(ledger: Ledger, period: Period, recovered: int) -> DaysToRecovery:
    """Median (mean of the two middle values when the count is even), mean, and p90 by nearest rank: the
    value at rank ceil(0.9 n) of the ascending durations."""
    if not recovered:
        return DaysToRecovery(0, None, None, None)
    where, params = period.where()
    n = recovered
    ranks = sorted({(n + 1) // 2, n // 2 + 1, math.ceil(0.9 * n)})
    # One sort of the recovered cases; the rows wanted are picked by rank inside SQLite.
    sql = f"""SELECT rank, seconds, total FROM (
                SELECT {_SECONDS} AS seconds, row_number() OVER (ORDER BY {_SECONDS}) AS rank,
                       sum({_SECONDS}) OVER () AS total
                FROM cases WHERE state = 'recovered' AND {where})
              WHERE rank IN ({", ".join("?" * len(ranks))})"""
    values, total = {}, 0
    for row in ledger.db.execute(sql, [*params, *ranks]):
        values[row[0]] = row[1]
        total = row[2]
    median = values[(n + 1) // 2] if n % 2 else (values[n // 2] + values[n // 2 + 1]) / 2
    return DaysToRecovery(n, _days(median), _days(total / n), _days(values[math.ceil(0.9 * n)]))


def _churn(ledger: Ledger, period: Period) -> Churn:
    closed_where, closed_params = period.where("closed_at")
    churned = ledger.db.execute(
        f"""SELECT count(DISTINCT coalesce(subscription_id, 'case:' || id)) FROM cases
            WHERE churned = 1 AND closed_at IS NOT NULL AND {closed_where}""", closed_params).fetchone()[0]
    if period.since:
        active = ledger.db.execute("SELECT count(*) FROM subscriptions WHERE canceled_at IS NULL OR canceled_at >= ?",
                                   [iso(period.since)]).fetchone()[0]
    else:
        active = ledger.db.execute("SELECT count(*) FROM subscriptions").fetchone()[0]
    bounds = period.condition().get("first_failed_at", {})
    return Churn(churned, active, _rate(churned, active),
                 {"churned": 1, **({"closed_at": bounds} if bounds else {})})


def _breakdown(cube: _Cube, dimension: str, period: Period, all_recovered: int) -> list[BreakdownRow]:
    column = _CUBE_KEYS[dimension]
    channel = dimension == "channel"
    rows = cube.rows(
        f"""SELECT {column} AS key, currency, sum(cases) AS cases,
                   coalesce(sum(CASE WHEN {_ENDED} THEN cases END), 0) AS ended,
                   coalesce(sum(CASE WHEN state = 'recovered' THEN cases END), 0) AS recovered,
                   coalesce(sum(CASE WHEN {_ENDED} THEN at_stake END), 0) AS at_stake,
                   coalesce(sum(CASE WHEN {_ENDED} THEN recovered_amount END), 0) AS recovered_amount,
                   coalesce(sum(CASE WHEN {_OPEN} THEN remaining END), 0) AS at_risk,
                   sum(with_person) AS with_person
            FROM report_cube {"WHERE state = 'recovered'" if channel else ""}
            GROUP BY key, currency
            ORDER BY {"recovered DESC" if channel else "cases DESC"}, key, currency""")
    result = []
    for row in rows:
        key = row["key"] if row["key"] is not None else ""
        conditions = {**period.condition(), **({"state": "recovered"} if channel else {}),
                      dimension: key, "currency": row["currency"]}
        if dimension == "currency":
            conditions = {**period.condition(), "currency": key}
        result.append(BreakdownRow(
            dimension=dimension, key=key, currency=row["currency"], cases=row["cases"],
            ended=None if channel else row["ended"], recovered=row["recovered"],
            recovery_rate=None if channel else _rate(row["recovered"], row["ended"]),
            amount_at_stake=None if channel else row["at_stake"], amount_recovered=row["recovered_amount"],
            amount_recovery_rate=None if channel else _rate(row["recovered_amount"], row["at_stake"]),
            revenue_at_risk=None if channel else row["at_risk"], with_person=row["with_person"],
            share_of_recovered=_rate(row["recovered"], all_recovered), filter=conditions))
    return result


def _retry_success(ledger: Ledger, period: Period) -> list[AttemptRow]:
    where, params = period.where()
    # Cases grouped by (furthest attempt, attempt that recovered them): a few dozen rows, summed per attempt.
    grouped = ledger.db.execute(
        f"""SELECT {_REACHED} AS reached,
                   CASE WHEN state = 'recovered' THEN recovered_attempt END AS won_at, count(*)
            FROM cases WHERE {where} GROUP BY reached, won_at""", params).fetchall()
    top = max((row[0] for row in grouped), default=0)
    rows = []
    for n in range(2, top + 1):
        reached = sum(count for furthest, _, count in grouped if furthest >= n)
        won = sum(count for _, won_at, count in grouped if won_at == n)
        rows.append(AttemptRow(n, reached, won, _rate(won, reached),
                               {**period.condition(), "reached_attempt": {"gte": n}},
                               {**period.condition(), "state": "recovered", "recovered_attempt": n}))
    return rows


def _recovery_curve(ledger: Ledger, period: Period, cohort_cases: int) -> list[CurvePoint]:
    where, params = period.where()
    by_day = dict(ledger.db.execute(
        f"""SELECT max({_SECONDS}, 0) / 86400 AS day, count(*) FROM cases
            WHERE state = 'recovered' AND {where} GROUP BY day""", params).fetchall())
    if not cohort_cases:
        return []
    points, running = [], 0
    for day in range(0, max(by_day, default=0) + 1):
        running += by_day.get(day, 0)
        points.append(CurvePoint(day, running, round(running / cohort_cases, 6)))
    return points


def build_report(ledger: Ledger, now: datetime, period: Period = Period(), dimensions: list[str] | None = None,
                 attribution_window: timedelta = DEFAULT_ATTRIBUTION_WINDOW) -> Report:
    """Compute the report for the cohort of `period` with the breakdowns named in `dimensions` (default all)."""
    dimensions = parse_dimensions(dimensions)
    cube = _Cube(ledger, period, attribution_window)
    try:
        headline = _headline(ledger, cube, period, now)
        breakdowns = {d: _breakdown(cube, d, period, headline.recovered) for d in dimensions if d != "attempt"}
    finally:
        cube.drop()
    return Report(
        headline=headline, attribution_window_seconds=int(attribution_window.total_seconds()),
        dimensions=dimensions, breakdowns=breakdowns, retry_success=_retry_success(ledger, period),
        recovery_curve=_recovery_curve(ledger, period, headline.failed_invoices))


def headline(ledger: Ledger, now: datetime, period: Period = Period()) -> Headline:
    """The headline alone (all cases by default), for the top of `dunctl status`."""
    cube = _Cube(ledger, period, DEFAULT_ATTRIBUTION_WINDOW)
    try:
        return _headline(ledger, cube, period, now)
    finally:
        cube.drop()


# -- tracing numbers to cases -------------------------------------------------------------------------------------

CASE_COLUMNS = ("case_id", "invoice_id", "customer_id", "subscription_id", "state", "segment", "failure_type",
                "sequence", "currency", "cohort", "first_failed_at", "recovered_at", "closed_at",
                "days_to_recovery", "channel", "reached_attempt", "recovered_attempt", "recovered_by",
                "amount_at_stake", "amount_recovered", "revenue_at_risk", "with_person", "churned", "in_cohort")


def case_listing(ledger: Ledger, period: Period = Period(),
                 attribution_window: timedelta = DEFAULT_ATTRIBUTION_WINDOW) -> Iterator[dict]:
    """Every case behind the report, one row each, with the derived columns the metrics use (channel, days to
    recovery, reached attempt), streamed. Cases outside the cohort appear only when they count towards churn
    in the period (in_cohort = 0)."""
    where, params = period.where()
    closed_where, closed_params = period.where("closed_at")
    touches = ", ".join(f"'{a}'" for a in TOUCHES)
    credited = " ".join(f"WHEN '{a}' THEN '{c}'" for a, c in TOUCHES.items())
    sql = f"""
        SELECT id AS case_id, invoice_id, customer_id, subscription_id, state, segment,
               first_failure_type AS failure_type, sequence, currency, substr(first_failed_at, 1, 7) AS cohort,
               first_failed_at, recovered_at, closed_at,
               CASE WHEN state = 'recovered' THEN round({_SECONDS} / 86400.0, 4) END AS days_to_recovery,
               CASE WHEN state = 'recovered' THEN coalesce(
                 (SELECT CASE a.action {credited} END FROM actions a
                  WHERE a.case_id = c.id AND a.status = 'done' AND a.action IN ({touches})
                    AND a.finished_at <= c.recovered_at
                    AND a.finished_at >= strftime('%Y-%m-%dT%H:%M:%SZ', c.recovered_at, ?)
                  ORDER BY a.finished_at DESC, a.id DESC LIMIT 1), '{NO_TOUCH}') END AS channel,
               {_REACHED} AS reached_attempt,
               CASE WHEN state = 'recovered' THEN recovered_attempt END AS recovered_attempt, recovered_by,
               CASE WHEN {_ENDED} THEN amount_due - amount_paid_at_open END AS amount_at_stake,
               CASE WHEN {_ENDED} THEN amount_recovered END AS amount_recovered,
               CASE WHEN {_OPEN} THEN amount_remaining END AS revenue_at_risk,
               with_person, churned, ({where}) AS in_cohort
        FROM cases c
        WHERE ({where}) OR (churned = 1 AND closed_at IS NOT NULL AND {closed_where})
        ORDER BY first_failed_at, id"""
    cursor = ledger.db.execute(sql, [f"-{int(attribution_window.total_seconds())} seconds", *params, *params,
                                     *closed_params])
    names = [d[0] for d in cursor.description]
    for row in cursor:
        yield dict(zip(names, row))
