"""What a run did for net-terms invoices, measured on its ledger: how many were paid by the due date, within two
weeks of it, by the end; how many days they took to pay; countback DSO at the end (the report's own code); the
reminders it took. `simulate` and the backtest compare reminder cadences on these, as they compare card sequences
on recovery.

The denominator of every share is the net-terms invoices due at least WATCH_DAYS before the run's last tick (so
each had those days past due to be paid in): an invoice due the day the run stops has had no chance to be late.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import mean, median

from dunctl.clock import from_iso
from dunctl.ledger import Ledger
from dunctl.ledger.views import net_terms as q
from dunctl.receivables.aging import receivables_section

WATCH_DAYS = 14


@dataclass
class NetTermsDso:
    currency: str
    days: float | None            # countback DSO at the end of the run; None: older than the report's window
    receivables: int              # the open net-terms balance it measures, minor units


@dataclass
class NetTermsOutcome:
    """Net-terms invoices in one run. Shares are over `watched`: the invoices due at least `watch_days` before
    the run's last tick."""

    customers: int                # customers with net-terms invoices
    invoices: int                 # net-terms invoices issued in the run (the ledger's)
    watched: int                  # the denominator: due at least watch_days before the end
    paid_by_due: int              # of watched: paid on or before the due date
    paid_within_watch: int        # of watched: paid within watch_days past the due date
    collected: int                # of watched: paid by the end of the run
    days_to_pay_median: float | None   # watched invoices paid by the end: days from issue to payment
    days_to_pay_mean: float | None
    days_to_pay_p90: float | None
    days_late_mean: float | None  # watched invoices paid by the end: days past the due date (0 when on time)
    reminders: int                # reminders customers received on net-terms cases (a grouped email once)
    handed_to_collections: int    # cases handed to collections
    dso: list[NetTermsDso] = field(default_factory=list)
    collected_by: dict[str, int] = field(default_factory=dict)   # simulation only: on time, late, reminder, person
    watch_days: int = WATCH_DAYS


def measure_net_terms(ledger: Ledger, now: datetime, collected_by: dict | None = None,
                      issued: tuple[datetime | None, datetime | None] = (None, None)) -> NetTermsOutcome | None:
    """The run's net-terms outcome as of `now` (its last tick), over the invoices `issued` in [since, until) (a
    backtest's period); None when there is none. DSO is the ledger's as a whole, as `report` gives it."""
    since, until = issued
    rows = [r for r in q.invoices(ledger) if (since is None or from_iso(r["created_at"]) >= since)
            and (until is None or from_iso(r["created_at"]) < until)]
    if not rows:
        return None
    watched = [r for r in rows if from_iso(r["due_date"]) <= now - timedelta(days=WATCH_DAYS)]
    paid = [r for r in watched if r["paid_at"] and from_iso(r["paid_at"]) <= now]

    def late(r) -> float:
        return (from_iso(r["paid_at"]) - from_iso(r["due_date"])).total_seconds() / 86400

    days = sorted((from_iso(r["paid_at"]) - from_iso(r["created_at"])).total_seconds() / 86400 for r in paid)
    reminders, handed = q.reminders_and_hand_offs(ledger)
    section = receivables_section(ledger, now)
    return NetTermsOutcome(
        customers=len({r["customer_id"] for r in rows}), invoices=len(rows), watched=len(watched), paid_by_due=sum(1 for r in paid if late(r) <= 0),
        paid_within_watch=sum(1 for r in paid if late(r) <= WATCH_DAYS), collected=len(paid),
        days_to_pay_median=_round(median(days) if days else None), days_to_pay_mean=_round(mean(days) if days else None),
        days_to_pay_p90=_round(days[min(len(days) - 1, int(0.9 * len(days)))] if days else None),
        days_late_mean=_round(mean(max(late(r), 0.0) for r in paid) if paid else None),
        reminders=reminders, handed_to_collections=handed,
        dso=[NetTermsDso(d.currency, d.days, d.receivables) for d in section.dso],
        collected_by=dict(sorted((collected_by or {}).items())))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@contextmanager
def card_part(ledger: Ledger) -> Iterator[Ledger]:
    """The ledger's card cases alone: an in-memory copy without the net-terms cases when it holds any, else the
    ledger itself. The card figures of a run (recovered of failed, messages per recovered...) are about failed
    payments; net-terms invoices never failed and have their own figures (`measure_net_terms`)."""
    if not q.any_net_terms_case(ledger):
        yield ledger
        return
    part = ledger.snapshot_in_memory()
    try:
        part.cases.keep_net_terms(False)
        yield part
    finally:
        part.close()
