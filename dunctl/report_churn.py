"""Involuntary churn in a report: subscriptions ended by exhausted dunning over the period, and per month in
customers, each a rate only where its denominator is known (given, simulated, or synced in full)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dunctl.clock import from_iso, iso
from dunctl.ledger import Ledger
from dunctl.ledger.views import report as q
from dunctl.report_period import Period, rate


@dataclass
class ChurnMonth:
    """One month of involuntary churn, Recurly's definition: customers whose subscription ended by exhausted
    dunning in the month / customers active at its start. `since`/`until` is the window counted: the whole UTC
    month unless the report's period or its clock cuts it (`partial`)."""

    month: str                    # YYYY-MM
    since: str
    until: str
    partial: bool
    churned_customers: int
    active_customers: int | None  # at `since`; None: unknown
    rate: float | None


@dataclass
class Churn:
    """Subscriptions ended by exhausted dunning in the period / subscriptions active in the period. The rate is
    given only where the denominator is known (`denominator` says which it is); otherwise `active_subscriptions`
    and `rate` are None and `unknown` says why and how to give it."""

    churned_subscriptions: int
    active_subscriptions: int | None
    rate: float | None
    filter: dict
    denominator: str | None = None    # what active_subscriptions counts, when known
    unknown: str | None = None        # why there is no rate, and how to get one
    # Per month, in customers (issue 24): the figure to quote. `monthly_rate` pools the complete months (churned
    # customers / customers active at each month's start, summed); None without a complete month or denominator.
    unit: str = "customers per month"
    months: list[ChurnMonth] = field(default_factory=list)
    monthly_rate: float | None = None
    customer_denominator: str | None = None   # what active_customers counts, when known


# Where the churn denominator comes from (issue 15): only these are the account's active subscriptions.
GIVEN = "active subscriptions as given (--active-subscriptions)"
SIMULATED = "subscriptions in the simulated book"
SYNCED = ("subscriptions in the ledger not canceled before the period start: every active subscription was synced "
          "(the pre-dunning backfill) and kept current by events")
UNKNOWN = ("involuntary churn not computed: the number of active subscriptions is unknown (the ledger holds only "
           "the subscriptions it has seen); pass --active-subscriptions N, or turn pre-dunning notices on so sync "
           "lists every active subscription")


def churn_over(conn: sqlite3.Connection, period: Period, rollup: bool, known: tuple[str, int | None] | None) -> Churn:
    """Churn over the denominator `known` names ((what, count); count None: count the ledger's subscriptions),
    or churned subscriptions without a rate when it is None."""
    churned, in_ledger = q.churn_counts(conn, period.span(), iso(period.since), rollup)
    bounds = period.condition().get("first_failed_at", {})
    condition = {"churned": 1, **({"closed_at": bounds} if bounds else {})}
    if known is None:
        return Churn(churned, None, None, condition, unknown=UNKNOWN)
    what, count = known
    active = in_ledger if count is None else count
    return Churn(churned, active, rate(churned, active), condition, denominator=what)


GIVEN_CUSTOMERS = "customers active at each month's start as given (--active-customers)"
SIMULATED_CUSTOMERS = "customers in the simulated book, less those churned before the month"
SYNCED_CUSTOMERS = ("customers with a subscription in the ledger not cancelled before the month's start (every "
                    "active subscription was synced)")
UNKNOWN_CUSTOMERS = ("the number of active customers is unknown: pass --active-customers N (customers active at "
                     "the start of the month), or turn pre-dunning notices on so sync lists every subscription")
MAX_MONTHS = 120


def _month_starts(first: datetime, last: datetime) -> list[datetime]:
    month = first.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    starts = []
    while month < last and len(starts) < MAX_MONTHS:
        starts.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    return starts


def _active_customers(conn: sqlite3.Connection, source: tuple[str, int | None] | None, at: str) -> int | None:
    if source is None:
        return None
    what, count = source
    if what == GIVEN_CUSTOMERS:
        return count
    if what == SIMULATED_CUSTOMERS:
        return count - q.churned_customers_before(conn, at)
    return q.customers_with_subscription_at(conn, at)


def monthly_churn(conn: sqlite3.Connection, period: Period, now: datetime,
                  source: tuple[str, int | None] | None) -> tuple[list[ChurnMonth], float | None]:
    """Churn month by month over the period (without --since: from the ledger's first failure; without --until:
    to `now`), and the pooled rate of its complete months."""
    # Without --since, whole months from the one of the ledger's first failure.
    start = q.first_activity(conn)
    first = period.since or (from_iso(start).replace(day=1, hour=0, minute=0, second=0) if start else None)
    last = min(period.until or now, now)
    if first is None or first >= last:
        return [], None
    months = []
    for start in _month_starts(first, last):
        end = (start + timedelta(days=32)).replace(day=1)
        since, until = max(start, first), min(end, last)
        churned = q.churned_customers_by_month(conn, iso(since), iso(until)).get(start.strftime("%Y-%m"), 0)
        active = _active_customers(conn, source, iso(since))
        months.append(ChurnMonth(start.strftime("%Y-%m"), iso(since), iso(until), (since, until) != (start, end),
                                 churned, active, rate(churned, active)))
    whole = [m for m in months if not m.partial and m.active_customers is not None]
    return months, rate(sum(m.churned_customers for m in whole), sum(m.active_customers for m in whole))


def customer_denominator(ledger: Ledger, active_customers: int | None = None) -> tuple[str, int | None] | None:
    """Where the customers active at a month's start are known: given; a demo ledger's simulated book; a ledger
    whose sync listed every active subscription. None: unknown."""
    if active_customers:
        return GIVEN_CUSTOMERS, active_customers
    simulation = ledger.get_state("simulation") or {}
    if simulation.get("customers"):
        return SIMULATED_CUSTOMERS, int(simulation["customers"])
    if churn_denominator(ledger) == (SYNCED, None):
        return SYNCED_CUSTOMERS, None
    return None


def with_months(churn: Churn, conn: sqlite3.Connection, period: Period, now: datetime,
                 customers: tuple[str, int | None] | None) -> Churn:
    churn.months, churn.monthly_rate = monthly_churn(conn, period, now, customers)
    churn.customer_denominator = customers[0] if customers else UNKNOWN_CUSTOMERS
    return churn


def churn_denominator(ledger: Ledger, active_subscriptions: int | None = None) -> tuple[str, int | None] | None:
    """Where the churn denominator is known: given (--active-subscriptions N); the simulated book a demo ledger
    records; or a ledger whose sync listed every active subscription (the pre-dunning backfill, done and current:
    events keep it so afterwards), whose subscriptions then are the account's (count None: counted per period).
    None: unknown. A ledger that synced only the subscriptions of failed invoices knows none of these."""
    if active_subscriptions:
        return GIVEN, active_subscriptions
    simulation = ledger.get_state("simulation") or {}
    if simulation.get("subscriptions"):
        return SIMULATED, int(simulation["subscriptions"])
    backfilled = ledger.get_state("billing_backfill_done")
    if backfilled is not None and backfilled == (ledger.get_state("cursor") or {}).get("since"):
        return SYNCED, None
    return None
