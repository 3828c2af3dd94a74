"""The report's SQL: each figure two ways, from the rollups (what `dunctl report` runs) and by scanning the cases
(the reference the tests compare the rollups against on random ledgers).

The rollups (migration m102) hold the cases aggregated by cohort day of first failure. A period whose bounds fall
mid-day is answered from the rollup rows of its whole days plus a scan of the cases of the (at most two) partial
days, so every answer is exact. Times are compared as the ledger's ISO text ('2026-11-03T09:00:00Z').

`rollup=False` everywhere selects the reference path: the same figures from the cases table alone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from dunctl.ledger.sql import ENDED_STATES, OPEN_STATES
from dunctl.ledger.views.period import Period

ENDED = "state IN ({})".format(", ".join(f"'{s}'" for s in ENDED_STATES))
OPEN = "state IN ({})".format(", ".join(f"'{s}'" for s in OPEN_STATES))
# Whole seconds from first failure to payment. julianday() keeps millisecond precision; rounding makes it exact.
# Textually the same as the expression of the cases_recovery_seconds index (m102), so lookups can use it.
SECONDS = "max(CAST(round((julianday(recovered_at) - julianday(first_failed_at)) * 86400) AS INTEGER), 0)"
# The furthest payment attempt a case reached: the attempt that succeeded counts as reached even if `attempts`
# lags behind it.
REACHED = "max(attempts, coalesce(recovered_attempt, 0))"
NO_TOUCH = "no touch"
# A touch is a done action a customer or a person noticed; the channel it is credited to.
TOUCHES = {"email": "email", "sms": "sms", "retry": "retry", "escalate": "person"}


# -- periods -------------------------------------------------------------------------------------------------------


def _midnight(day: str) -> str:
    return f"{day}T00:00:00Z"


def _next_day(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


@dataclass(frozen=True)
class Split:
    """A period as whole cohort days [day_from, day_to) read from the rollups, plus partial spans scanned."""

    whole: tuple[str | None, str | None] | None
    partial: tuple[Period, ...]

    def days_where(self, column: str = "cohort_day") -> tuple[str, list[str]]:
        assert self.whole is not None
        return Period(*self.whole).where(column)


def split(span: Period) -> Split:
    partial = []
    day_from = day_to = None
    if span.since:
        day = span.since[:10]
        if span.since == _midnight(day):
            day_from = day
        else:
            day_from = _next_day(day)
            partial.append(Period(span.since, _midnight(day_from), narrow=True))
    if span.until:
        day = span.until[:10]
        day_to = day
        if span.until != _midnight(day):
            partial.append(Period(_midnight(day), span.until, narrow=True))
    if day_from and day_to and day_from >= day_to:
        return Split(None, (Period(span.since, span.until, narrow=True),))   # within two days: scan it all
    return Split((day_from, day_to), tuple(partial))


# -- the cube: cases by every dimension but channel ----------------------------------------------------------------

_CUBE_RAW = """SELECT segment, first_failure_type AS failure_type, sequence, currency,
                       substr(first_failed_at, 1, 7) AS cohort, state, count(*) AS cases,
                       sum(amount_due - amount_paid_at_open) AS at_stake, sum(amount_recovered) AS recovered_amount,
                       sum(amount_remaining) AS remaining, sum(with_person) AS with_person
                FROM cases WHERE {where}
                GROUP BY segment, first_failure_type, sequence, currency, substr(first_failed_at, 1, 7), state"""


def _union(span: Period, rollup: bool, whole: Callable[[str], str],
           raw: Callable[[Period], tuple[str, list]]) -> tuple[list[str], list]:
    """The parts of a UNION ALL that answers `span`, and their parameters: with rollups, the rollup rows of its
    whole days (`whole` of their WHERE) and the cases of its partial days (`raw`); without, the cases alone."""
    parts, params = [], []
    spans: tuple | list = (span,)
    if rollup:
        plan = split(span)
        if plan.whole is not None:
            where, where_params = plan.days_where()
            parts.append(whole(where))
            params += where_params
        spans = plan.partial
    for part in spans:
        sql, part_params = raw(part)
        parts.append(sql)
        params += part_params
    return parts, params


def create_cube(conn: sqlite3.Connection, span: Period, rollup: bool = True) -> None:
    """temp.report_cube: the cohort aggregated by segment, failure type, sequence, currency, cohort month and
    state: a few thousand rows at most, which the headline and the breakdowns group further."""
    def raw(part: Period) -> tuple[str, list]:
        where, params = part.where(plus=True)
        return _CUBE_RAW.format(where=where), params

    parts, params = _union(span, rollup, lambda where: f"""
        SELECT segment, failure_type, sequence, currency, substr(cohort_day, 1, 7) AS cohort, state,
               sum(cases) AS cases, sum(at_stake) AS at_stake, sum(recovered_amount) AS recovered_amount,
               sum(remaining) AS remaining, sum(with_person) AS with_person
        FROM report_cases WHERE {where}
        GROUP BY segment, failure_type, sequence, currency, substr(cohort_day, 1, 7), state""", raw)
    conn.execute("DROP TABLE IF EXISTS temp.report_cube")
    conn.execute(
        f"""CREATE TEMP TABLE report_cube AS
            SELECT segment, failure_type, sequence, currency, cohort, state, sum(cases) AS cases,
                   sum(at_stake) AS at_stake, sum(recovered_amount) AS recovered_amount,
                   sum(remaining) AS remaining, sum(with_person) AS with_person
            FROM ({" UNION ALL ".join(parts)})
            GROUP BY segment, failure_type, sequence, currency, cohort, state""", params)


def drop_cube(conn: sqlite3.Connection) -> None:
    conn.execute("DROP TABLE IF EXISTS temp.report_cube")

# The breakdowns the cube answers: dimension -> its column.
CUBE_KEYS = {"segment": "segment", "failure_type": "failure_type", "sequence": "sequence",
             "currency": "currency", "cohort": "cohort"}
_MEASURES = f"""sum(cases) AS cases,
       coalesce(sum(CASE WHEN {OPEN} THEN cases END), 0) AS open,
       coalesce(sum(CASE WHEN {ENDED} THEN cases END), 0) AS ended,
       coalesce(sum(CASE WHEN state = 'recovered' THEN cases END), 0) AS recovered,
       coalesce(sum(CASE WHEN state = 'closed' THEN cases END), 0) AS closed,
       coalesce(sum(at_stake), 0) AS failed_amount,
       coalesce(sum(CASE WHEN {ENDED} THEN at_stake END), 0) AS at_stake,
       coalesce(sum(CASE WHEN {ENDED} THEN recovered_amount END), 0) AS recovered_amount,
       coalesce(sum(CASE WHEN {OPEN} THEN remaining END), 0) AS at_risk,
       coalesce(sum(with_person), 0) AS with_person"""


def cube_totals(conn: sqlite3.Connection) -> dict:
    """The cube's measures over the whole cohort (the cube must exist on `conn`)."""
    return _query(conn, f"SELECT {_MEASURES} FROM report_cube")[0]


def cube_cases_of(conn: sqlite3.Connection, failure_type: str) -> int:
    """How many of the cohort's cases are of `failure_type` (the cube must exist on `conn`)."""
    return conn.execute("SELECT coalesce(sum(cases), 0) FROM report_cube WHERE failure_type = ?",
                        [failure_type]).fetchone()[0]


def cube_ended_by_state(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute(
        f"SELECT state, sum(cases) FROM report_cube WHERE {ENDED} GROUP BY state ORDER BY state").fetchall())


def cube_by_currency(conn: sqlite3.Connection) -> list[dict]:
    return _query(conn, f"SELECT currency, {_MEASURES} FROM report_cube GROUP BY currency ORDER BY currency")


def cube_breakdown(conn: sqlite3.Connection, dimension: str) -> list[dict]:
    """The cube's measures by one dimension (a CUBE_KEYS name) and currency, most cases first."""
    return _query(conn, f"""SELECT {CUBE_KEYS[dimension]} AS key, currency, {_MEASURES} FROM report_cube
                            GROUP BY key, currency ORDER BY cases DESC, key, currency""")


# -- progress: days to recovery and attempts -----------------------------------------------------------------------


@dataclass
class Progress:
    """Recovered cases by whole day to payment, the sum of their seconds to payment, and the cases grouped by
    (furthest attempt, attempt that recovered them or 0)."""

    by_day: dict[int, int]
    recovery_seconds: int
    attempts: dict[tuple[int, int], int]


def _raw_progress(conn: sqlite3.Connection, span: Period, into: Progress) -> None:
    where, params = span.where(plus=True)
    # One integer group key, (day + 1) * 10^6 + furthest attempt * 10^3 + attempt that recovered, sorts much
    # faster than three columns. Attempts stay far below 1000 (card networks allow 15 in 30 days).
    # LIMIT -1 keeps the inner query from being flattened, so the duration is computed once per case.
    rows = conn.execute(
        f"""SELECT (coalesce(seconds / 86400, -1) + 1) * 1000000 + min(reached, 999) * 1000
                   + min(coalesce(won_at, 0), 999) AS k, count(*), sum(seconds) FROM (
              SELECT CASE WHEN state = 'recovered' THEN {SECONDS} END AS seconds, {REACHED} AS reached,
                     CASE WHEN state = 'recovered' THEN recovered_attempt END AS won_at
              FROM cases WHERE {where} LIMIT -1)
            GROUP BY k""", params).fetchall()
    for key, count, seconds in rows:
        day, rest = divmod(key, 1000000)
        reached, won_at = divmod(rest, 1000)
        if day:
            into.by_day[day - 1] = into.by_day.get(day - 1, 0) + count
        into.recovery_seconds += seconds or 0
        into.attempts[(reached, won_at)] = into.attempts.get((reached, won_at), 0) + count


def progress(conn: sqlite3.Connection, span: Period, rollup: bool = True) -> Progress:
    result = Progress({}, 0, {})
    if not rollup:
        _raw_progress(conn, span, result)
        return result
    plan = split(span)
    if plan.whole is not None:
        where, params = plan.days_where()
        for day, count, seconds in conn.execute(
                f"SELECT day, sum(cases), sum(seconds) FROM report_recovery_days WHERE {where} GROUP BY day",
                params):
            result.by_day[day] = result.by_day.get(day, 0) + count
            result.recovery_seconds += seconds
        for reached, won_at, count in conn.execute(
                f"SELECT reached, won_at, sum(cases) FROM report_attempts WHERE {where} GROUP BY reached, won_at",
                params):
            result.attempts[(reached, won_at)] = result.attempts.get((reached, won_at), 0) + count
    for part in plan.partial:
        _raw_progress(conn, part, result)
    return result


def seconds_at_places(conn: sqlite3.Connection, span: Period, day: int, places: list[int],
                      rollup: bool = True) -> dict[int, int]:
    """The seconds to payment of the recovered cases at 1-based `places` among the cohort's cases recovered on
    `day`, in ascending order. The rollup path reads one day's range of the cases_recovery_seconds index."""
    if rollup:
        where, params = span.where()
        found = {}
        for place in places:
            row = conn.execute(
                f"""SELECT {SECONDS} FROM cases INDEXED BY cases_recovery_seconds
                    WHERE state = 'recovered' AND {SECONDS} >= ? AND {SECONDS} < ? AND {where}
                    ORDER BY {SECONDS} LIMIT 1 OFFSET ?""",
                [day * 86400, (day + 1) * 86400, *params, place - 1]).fetchone()
            found[place] = row[0]
        return found
    where, params = span.where(plus=True)
    return dict(conn.execute(
        f"""SELECT place, seconds FROM (
              SELECT seconds, row_number() OVER (ORDER BY seconds) AS place FROM (
                SELECT {SECONDS} AS seconds FROM cases WHERE +state = 'recovered' AND {where} LIMIT -1)
              WHERE seconds / 86400 = ?)
            WHERE place IN ({", ".join("?" * len(places))})""",
        [*params, day, *places]).fetchall())


# -- churn ---------------------------------------------------------------------------------------------------------


def churn_counts(conn: sqlite3.Connection, closed: Period, active_since: str | None,
                 rollup: bool = True) -> tuple[int, int]:
    """(subscriptions ended by exhausted dunning with closed_at in `closed`, subscriptions not cancelled before
    `active_since`, or all of them). The rollup path reads only churned cases (cases_churned) and the
    subscriptions rollup."""
    where, params = closed.where(column="closed_at", plus=not rollup)
    churned = conn.execute(
        f"""SELECT count(DISTINCT coalesce(subscription_id, 'case:' || id)) FROM cases
            WHERE churned = 1 AND closed_at IS NOT NULL AND {where}""", params).fetchone()[0]
    if not rollup:
        if active_since:
            active = conn.execute("SELECT count(*) FROM subscriptions WHERE canceled_at IS NULL OR canceled_at >= ?",
                                  [active_since]).fetchone()[0]
        else:
            active = conn.execute("SELECT count(*) FROM subscriptions").fetchone()[0]
        return churned, active
    if not active_since:
        return churned, conn.execute("SELECT coalesce(sum(subscriptions), 0) FROM report_subscriptions").fetchone()[0]
    day = active_since[:10]
    later = conn.execute("SELECT coalesce(sum(subscriptions), 0) FROM report_subscriptions "
                         "WHERE canceled_day = '' OR canceled_day > ?", [day]).fetchone()[0]
    same_day = conn.execute("SELECT count(*) FROM subscriptions WHERE canceled_at >= ? AND canceled_at < ?",
                            [active_since, _midnight(_next_day(day))]).fetchone()[0]
    return churned, later + same_day


def churned_customers_by_month(conn: sqlite3.Connection, since: str, until: str) -> dict[str, int]:
    """Customers whose subscription dunning ended (churned cases) with closed_at in [since, until), by UTC month
    of closed_at, each customer once a month however many of their subscriptions (add-ons) ended. Reads only the
    churned cases (the cases_churned index), so rollups and scans share it."""
    return dict(conn.execute(
        """SELECT substr(closed_at, 1, 7), count(DISTINCT customer_id) FROM cases INDEXED BY cases_churned
           WHERE churned = 1 AND closed_at >= ? AND closed_at < ? GROUP BY substr(closed_at, 1, 7)""",
        [since, until]).fetchall())


def churned_customers_before(conn: sqlite3.Connection, moment: str) -> int:
    return conn.execute("""SELECT count(DISTINCT customer_id) FROM cases INDEXED BY cases_churned
                           WHERE churned = 1 AND closed_at < ?""", [moment]).fetchone()[0]


def customers_with_subscription_at(conn: sqlite3.Connection, moment: str) -> int:
    """Customers with a subscription in the ledger not cancelled before `moment` (add-ons do not count twice)."""
    return conn.execute("""SELECT count(DISTINCT customer_id) FROM subscriptions
                           WHERE canceled_at IS NULL OR canceled_at >= ?""", [moment]).fetchone()[0]


def first_activity(conn: sqlite3.Connection) -> str | None:
    """The earliest first failure or churn in the ledger: where a report without --since starts counting months."""
    return conn.execute("SELECT min(first_failed_at) FROM cases").fetchone()[0]


# -- channel -------------------------------------------------------------------------------------------------------


def last_touch(alias: str = "c") -> str:
    """The channel credited with a recovered case (alias `alias`): its last touch finished within the attribution
    window (the one parameter, an SQLite modifier like '-259200 seconds') up to and including the moment of
    payment, else 'no touch'. One indexed lookup per case, on actions(case_id, finished_at)."""
    touches = ", ".join(f"'{a}'" for a in TOUCHES)
    credited = " ".join(f"WHEN '{a}' THEN '{c}'" for a, c in TOUCHES.items())
    return f"""coalesce(
        (SELECT CASE a.action {credited} END FROM actions a
         WHERE a.case_id = {alias}.id AND a.status = 'done' AND a.action IN ({touches})
           AND a.finished_at <= {alias}.recovered_at
           AND a.finished_at >= strftime('%Y-%m-%dT%H:%M:%SZ', {alias}.recovered_at, ?)
         ORDER BY a.finished_at DESC, a.id DESC LIMIT 1), '{NO_TOUCH}')"""


def window_modifier(window_seconds: int) -> str:
    return f"-{window_seconds} seconds"


def _query(conn: sqlite3.Connection, sql: str, params=()) -> list[dict]:
    cursor = conn.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor]


def _raw_channel_sql(span: Period) -> tuple[str, list]:
    """Recovered cases by the channel of their last touch. The cases are read in table order (NOT INDEXED)
    so the lookups into actions, ordered by case id, stay local; LIMIT -1 keeps SQLite from evaluating the
    lookup twice per case (once to group, once to output). Its first parameter is the window modifier."""
    where, params = span.where(plus=True)
    scan = "" if span.narrow else "NOT INDEXED"
    return (f"""SELECT channel AS key, currency, count(*) AS cases, sum(amount_recovered) AS recovered_amount,
                       sum(with_person) AS with_person
                FROM (SELECT {last_touch()} AS channel, currency, amount_recovered, with_person
                      FROM cases c {scan} WHERE state = 'recovered' AND {where} LIMIT -1)
                GROUP BY channel, currency""", params)


def use_attribution_window(conn: sqlite3.Connection, window_seconds: int) -> None:
    """Make report_channels credit touches under this window, rebuilding it once when the window changed."""
    stored = conn.execute("SELECT value FROM report_settings WHERE name = 'attribution_window_seconds'").fetchone()
    if stored and stored[0] == window_seconds:
        return
    in_transaction = conn.in_transaction
    if not in_transaction:
        conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("INSERT INTO report_settings VALUES ('attribution_window_seconds', ?) "
                     "ON CONFLICT(name) DO UPDATE SET value = excluded.value", [window_seconds])
        from dunctl.ledger.migrations import rebuild_channels   # lazy: see dunctl/lazy.py

        rebuild_channels(conn)
    except BaseException:
        if not in_transaction:
            conn.execute("ROLLBACK")
        raise
    if not in_transaction:
        conn.execute("COMMIT")


def channel_rows(conn: sqlite3.Connection, span: Period, window_seconds: int, rollup: bool = True) -> list[dict]:
    """Recovered cases by credited channel and currency: key, currency, cases, recovered_amount, with_person;
    most recovered first."""
    def raw(part: Period) -> tuple[str, list]:
        sql, params = _raw_channel_sql(part)
        return sql, [window_modifier(window_seconds), *params]

    if rollup:
        use_attribution_window(conn, window_seconds)
    parts, params = _union(span, rollup, lambda where: f"""
        SELECT channel AS key, currency, sum(cases) AS cases, sum(recovered_amount) AS recovered_amount,
               sum(with_person) AS with_person
        FROM report_channels WHERE {where} GROUP BY channel, currency""", raw)
    if not parts:
        return []
    return _query(conn, f"""SELECT key, currency, sum(cases) AS cases, sum(cases) AS recovered,
                                   sum(recovered_amount) AS recovered_amount, sum(with_person) AS with_person
                            FROM ({" UNION ALL ".join(parts)})
                            GROUP BY key, currency ORDER BY recovered DESC, key, currency""", params)


# -- the case listing ----------------------------------------------------------------------------------------------


def case_listing(conn: sqlite3.Connection, span: Period, window_seconds: int) -> sqlite3.Cursor:
    """Every case behind the report, one row each, with the derived columns the metrics use. Cases outside the
    cohort appear only when they count towards churn in the period (in_cohort = 0)."""
    where, params = span.where(plus=True)
    closed_where, closed_params = Period(span.since, span.until).where("closed_at", plus=True)
    sql = f"""
        SELECT id AS case_id, invoice_id, customer_id, subscription_id, state, segment,
               first_failure_type AS failure_type, sequence, currency, substr(first_failed_at, 1, 7) AS cohort,
               first_failed_at, recovered_at, closed_at,
               CASE WHEN state = 'recovered' THEN round({SECONDS} / 86400.0, 4) END AS days_to_recovery,
               CASE WHEN state = 'recovered' THEN {last_touch()} END AS channel,
               {REACHED} AS reached_attempt,
               CASE WHEN state = 'recovered' THEN recovered_attempt END AS recovered_attempt, recovered_by,
               CASE WHEN {ENDED} THEN amount_due - amount_paid_at_open END AS amount_at_stake,
               CASE WHEN {ENDED} THEN amount_recovered END AS amount_recovered,
               CASE WHEN {OPEN} THEN amount_remaining END AS revenue_at_risk,
               with_person, churned, ({where}) AS in_cohort
        FROM cases c
        WHERE ({where}) OR (churned = 1 AND closed_at IS NOT NULL AND {closed_where})
        ORDER BY first_failed_at, id"""
    return conn.execute(sql, [window_modifier(window_seconds), *params, *params, *closed_params])


# -- a reference aggregate, for the benchmark ----------------------------------------------------------------------


def raw_full_scan(conn: sqlite3.Connection) -> int:
    """One aggregate that must read every case row: what a report computed from the cases alone costs at least."""
    return conn.execute(f"SELECT count(*), sum(amount_due - amount_paid_at_open), sum({SECONDS}) FROM cases "
                        "NOT INDEXED").fetchone()[0]


def planned_in_monitor_mode(conn: sqlite3.Connection) -> dict[str, int]:
    """Actions monitor mode planned and recorded as `would` (nothing was sent), by action: from their own
    partial index, so a live ledger pays nothing for it."""
    return dict(conn.execute("SELECT action, count(*) FROM actions INDEXED BY actions_would WHERE status = 'would' "
                             "GROUP BY action ORDER BY action").fetchall())


# -- messages ------------------------------------------------------------------------------------------------------


def customer_message(alias: str = "") -> str:
    """The SQL condition for an action that is a message a customer received: an email or SMS step, done, to the
    customer (audience `customer`; rows from before audiences were recorded count as the customer's). Every
    count of messages the project prints uses it (issue 24: one engine)."""
    a = f"{alias}." if alias else ""
    return (f"{a}status = 'done' AND {a}kind = 'step' AND {a}action IN ('email', 'sms') "
            f"AND coalesce({a}audience, 'customer') = 'customer'")


def messages_delivered(conn: sqlite3.Connection) -> int:
    """Emails and SMS dunning steps delivered to customers, one per delivery: a grouped message covering several
    of one customer's cases (one `message_ref`) counts once, as the customer received it. A message to a person
    inside the company (an account manager: audience `internal`) is not a customer message (issue 24)."""
    return conn.execute(
        f"""SELECT count(DISTINCT coalesce(message_ref, 'action:' || id)) FROM actions
            WHERE {customer_message()}""").fetchone()[0]


# dunctl's own payment attempts: retry steps, and the retry it makes once a new card arrives (a system action).
DUNCTL_RETRIES = ("retry", "retry_now")


def retries_made(conn: sqlite3.Connection) -> tuple[int, int]:
    """(dunctl's retries, Stripe's retries) over every case. A case's attempts after the one that failed are
    dunctl's where the ledger records dunctl making them (DUNCTL_RETRIES, done), the rest Stripe's: so a retry
    dunctl made after a card update is never counted as Stripe's (issue 24)."""
    marks = ", ".join(f"'{a}'" for a in DUNCTL_RETRIES)
    row = conn.execute(
        f"""SELECT coalesce(sum(ours), 0), coalesce(sum(max(later - ours, 0)), 0) FROM (
              SELECT max(c.attempts, coalesce(c.recovered_attempt, 0)) - 1 AS later,
                     (SELECT count(*) FROM actions a WHERE a.case_id = c.id AND a.status = 'done'
                        AND a.action IN ({marks})) AS ours
              FROM cases c)""").fetchone()
    return row[0], row[1]
