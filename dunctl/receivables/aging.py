"""Aging and DSO: what is owed, by how long past its due date, and how many days of sales it represents. Per
currency, never added across currencies.

Aging counts every open net-terms invoice (from its due date) and every open card case (a card invoice's due
date is its first failed attempt), in the buckets current (not past due), 1-30, 31-60, 61-90 and 90+ days past
due. DSO is the countback method on net-terms invoices: the open net-terms balance is matched against the
invoices issued in the latest 30-day period, then the one before, and so on; each period it covers whole adds 30
days, the last one it covers partly adds its share of 30 days. Card invoices are left out of DSO: the ledger
holds only the ones that failed, so their sales are not known."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dunctl.clock import from_iso, iso
from dunctl.ledger import ENDED_STATES, Ledger
from dunctl.ledger import receivables as store

BUCKETS = ("current", "1-30", "31-60", "61-90", "90+")
PERIOD_DAYS = 30
MAX_PERIODS = 12        # a balance older than a year of sales is "more than 360 days"


def bucket(days_past_due: int) -> str:
    """The aging bucket of an amount `days_past_due` whole days past its due date (0 or less: current)."""
    if days_past_due <= 0:
        return "current"
    for name, top in (("1-30", 30), ("31-60", 60), ("61-90", 90)):
        if days_past_due <= top:
            return name
    return "90+"


@dataclass
class AgingRow:
    currency: str
    bucket: str
    count: int
    amount: int              # minor units of `currency`


@dataclass
class Dso:
    currency: str
    days: float | None       # None: the balance is older than MAX_PERIODS periods of sales
    receivables: int         # the open net-terms balance it measures, minor units
    periods: int             # 30-day periods of sales it walked back through
    window: str              # in words: "countback over 30-day periods back from 2026-12-31"


@dataclass
class ClosedRow:
    """Cases a person closed as `outcome` (collected, settled, written_off) in one currency, in the report's
    period (by the day each was closed)."""
    outcome: str
    currency: str
    count: int
    received: int            # what came in when they were closed, minor units
    written_off: int         # what was given up, minor units


@dataclass
class ReceivablesSection:
    as_of: str
    aging: list[AgingRow] = field(default_factory=list)
    dso: list[Dso] = field(default_factory=list)
    # promises to pay and disputed invoices (dunctl/receivables/holds.py): kept, broken, ... in the report's
    # period (by the day each ended), and open at its end
    promises: dict[str, int] = field(default_factory=dict)
    disputes: dict[str, int] = field(default_factory=dict)
    # cases a person closed saying how (dunctl/receivables/closing.py), in the report's period
    closed_as: list[ClosedRow] = field(default_factory=list)

    @property
    def anything(self) -> bool:
        return bool(self.aging or self.dso or self.promises or self.disputes or self.closed_as)


def aging(rows: list[tuple[str, int, str, str]], now: datetime) -> list[AgingRow]:
    """Every bucket of every currency that has an open amount, in bucket order (empty buckets shown as 0)."""
    found: dict[tuple[str, str], AgingRow] = {}
    currencies = sorted({currency for currency, *_ in rows})
    for currency in currencies:
        for name in BUCKETS:
            found[currency, name] = AgingRow(currency, name, 0, 0)
    for currency, amount, due, _kind in rows:
        row = found[currency, bucket((now - from_iso(due)).days)]
        row.count += 1
        row.amount += amount
    return list(found.values())


def countback(balance: int, sales_by_period: list[int]) -> tuple[float | None, int]:
    """(DSO in days, periods walked back): countback of `balance` through sales, newest period first."""
    days = 0.0
    for walked, sales in enumerate(sales_by_period, start=1):
        if balance <= 0:
            return round(days, 1), walked - 1
        if sales >= balance:
            return round(days + PERIOD_DAYS * balance / sales, 1), walked
        days += PERIOD_DAYS
        balance -= sales
    return (round(days, 1), len(sales_by_period)) if balance <= 0 else (None, len(sales_by_period))


def dso(rows: list[tuple[str, int, str, str]], sales: list[tuple[str, int, str]], now: datetime) -> list[Dso]:
    period = timedelta(days=PERIOD_DAYS)
    balances: dict[str, int] = {}
    for currency, amount, _due, kind in rows:
        if kind == "net_terms":
            balances[currency] = balances.get(currency, 0) + amount
    by_period: dict[str, list[int]] = {c: [0] * MAX_PERIODS for c in balances}
    for currency, amount, created in sales:
        index = int((now - from_iso(created)) // period)
        if currency in by_period and 0 <= index < MAX_PERIODS:
            by_period[currency][index] += amount
    window = f"countback over 30-day periods back from {iso(now)}, net-terms invoices"
    found = []
    for currency, balance in sorted(balances.items()):
        days, periods = countback(balance, by_period[currency])
        found.append(Dso(currency, days, balance, periods, window))
    return found


def receivables_section(ledger: Ledger, now: datetime, since: datetime | None = None,
                        until: datetime | None = None) -> ReceivablesSection:
    """Aging and DSO as of `now`, for `report`; promises, disputes and cases closed by a person as counted in
    the report's period [since, until): each by the day it ended (a promise kept in November is November's, however
    long ago it was made), so two months' reports add up to the two months together."""
    rows = store.open_receivables(ledger.conn, ENDED_STATES)
    sales = store.net_terms_sales(ledger.conn, now - timedelta(days=PERIOD_DAYS * MAX_PERIODS), now)
    counts = store.hold_counts(ledger.conn, since, until)
    promises = {outcome: n for (kind, outcome), n in counts.items() if kind == "promise" and outcome != "replaced"}
    disputes = {outcome: n for (kind, outcome), n in counts.items() if kind == "dispute" and outcome != "replaced"}
    closed = [ClosedRow(*row) for row in store.closed_as_counts(ledger.conn, since, until)]
    return ReceivablesSection(iso(now), aging(rows, now), dso(rows, sales, now), promises, disputes, closed)
