"""Case changes: what reconciling (and acting) decides should happen to a case, as data.

Reconciling returns these and never writes or sends; `apply` stores them in one transaction and hands back the
notifications to people, which the executor then runs like any other effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from dunctl.config import Sequence, sequence_definition, sequence_hash
from dunctl.failures import described_code
from dunctl.ledger import Ledger
from dunctl.ledger.records import InvoiceRecord
from dunctl.model import SyncBatch


@dataclass(frozen=True)
class CaseChange:
    """A change to one case, named by its ledger id: most of what reconciling and acting decide."""

    case_id: int


@dataclass(frozen=True)
class Note(CaseChange):
    """A line on a case's timeline."""

    at: datetime
    kind: str
    summary: str
    data: dict | None = None


@dataclass(frozen=True)
class OpenCase:
    invoice: InvoiceRecord
    segment: str
    sequence: Sequence
    failure_type: str
    decline_code: str | None
    assignment: object = None     # dunctl.experiments.Assignment, recorded on the case, never changed

    def start(self) -> tuple[str, str]:
        """The case's first timeline line (kind, summary): what happened when its steps start counting."""
        return "failed", f"payment failed: {described_code(self.invoice.decline) or 'no code'} ({self.failure_type})"


@dataclass(frozen=True)
class FollowInvoice(CaseChange):
    amount_remaining: int
    attempts: int


@dataclass(frozen=True)
class Reclassify(CaseChange):
    failure_type: str
    decline_code: str | None


@dataclass(frozen=True)
class EndCase(CaseChange):
    invoice_id: str
    state: str
    reason: str
    at: datetime
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class HandToPerson(CaseChange):
    at: datetime
    disputed: bool = False


@dataclass(frozen=True)
class Hold(CaseChange):
    """The subscription was paused or set to cancel outside dunctl: the case waits, no step runs."""

    because: str | None = None      # why it waits, in words for `status` and `case show`


@dataclass(frozen=True)
class Resume(CaseChange):
    """The hold ends: the case's steps are planned again."""


@dataclass(frozen=True)
class PaymentMethodChanged(CaseChange):
    at: datetime
    payment_method_id: str | None = None    # the new card: a retry for it names it (Stripe's order would not)


@dataclass(frozen=True)
class CustomerDispute:
    """A dispute on one of the customer's charges opened (`summary`: what it is) or closed (None): while any is
    open, every automated charge and customer message for that customer waits (dunctl/tick/facts.py)."""

    customer_id: str
    dispute_id: str
    summary: str | None


@dataclass(frozen=True)
class Churned(CaseChange):
    """dunctl's own step cancelled the case's subscription: involuntary churn, as the report counts it."""


@dataclass(frozen=True)
class NotifyPerson(CaseChange):
    """Tell the escalation channel about a held case (recovered, disputed): run by the executor, once."""

    name: str
    note: str


@dataclass(frozen=True)
class Ending(CaseChange):
    """A case ended (`what`: its ended state), or dunctl paused its subscription (`what`: "paused"): the tick
    runs what follows through the executor (dunctl/tick/endings.py): a pause dunctl made is lifted on payment,
    the customer thanked, the escalation channel told what happened."""

    what: str


Change = OpenCase | FollowInvoice | Reclassify | EndCase | HandToPerson | Hold | Resume | PaymentMethodChanged | \
    Churned | NotifyPerson | Ending | Note | CustomerDispute


@dataclass
class Applied:
    opened: list[str] = field(default_factory=list)
    closed: list[tuple[str, str]] = field(default_factory=list)     # (invoice id, how it ended)
    touched: set[int] = field(default_factory=set)                   # cases to reschedule
    notify: list[NotifyPerson | Ending] = field(default_factory=list)
    # case id -> for each of its effects recorded: did it end as planned (done, or would in monitor mode) and
    # change nothing else? A case whose every planned effect did is scheduled from its plan (run_due).
    as_planned: dict[int, list[bool]] = field(default_factory=dict)


def apply(ledger: Ledger, changes: list[Change], now: datetime, applied: Applied | None = None) -> Applied:
    """Store changes. The caller holds the transaction."""
    applied = applied or Applied()
    for change in changes:
        _APPLY[type(change)](ledger, change, now, applied)
    return applied


def _open(ledger: Ledger, c: OpenCase, now: datetime, applied: Applied) -> None:
    digest = sequence_hash(c.sequence)
    case_id = ledger.cases.open(invoice=c.invoice, segment=c.segment, sequence=c.sequence.name, sequence_hash=digest,
                               sequence_def=sequence_definition(c.sequence), failure_type=c.failure_type,
                               decline_code=c.decline_code, now=now)
    if c.assignment is not None:
        ledger.cases.assign_arm(case_id, c.assignment.experiment, c.assignment.arm)
    ledger.cases.add_timeline(case_id, c.invoice.first_failed_at, *c.start(), c.invoice.decline)
    ledger.cases.add_timeline(case_id, now, "opened",
                        f"case opened: segment {c.segment}, sequence {c.sequence.name} ({digest})")
    applied.opened.append(c.invoice.id)
    applied.touched.add(case_id)


def _follow(ledger: Ledger, c: FollowInvoice, now: datetime, applied: Applied) -> None:
    ledger.cases.follow_invoice(c.case_id, amount_remaining=c.amount_remaining, attempts=c.attempts)
    applied.touched.add(c.case_id)


def _reclassify(ledger: Ledger, c: Reclassify, now: datetime, applied: Applied) -> None:
    ledger.cases.reclassify(c.case_id, c.failure_type, c.decline_code)
    applied.touched.add(c.case_id)


def _end(ledger: Ledger, c: EndCase, now: datetime, applied: Applied) -> None:
    ledger.cases.end(c.case_id, c.state, c.reason, c.at, **c.fields)
    ledger.cases.add_timeline(c.case_id, now, "closed", f"case {c.state}: {c.reason}")
    applied.closed.append((c.invoice_id, c.state))
    applied.touched.discard(c.case_id)


def _hand(ledger: Ledger, c: HandToPerson, now: datetime, applied: Applied) -> None:
    ledger.cases.hand_to_person(c.case_id, c.at, disputed=c.disputed)
    applied.touched.add(c.case_id)


def _hold(ledger: Ledger, c: Hold, now: datetime, applied: Applied) -> None:
    ledger.cases.hold(c.case_id, c.because)
    applied.touched.discard(c.case_id)


def _resume(ledger: Ledger, c: Resume, now: datetime, applied: Applied) -> None:
    ledger.cases.unhold(c.case_id)
    applied.touched.add(c.case_id)


def _method(ledger: Ledger, c: PaymentMethodChanged, now: datetime, applied: Applied) -> None:
    ledger.cases.note_payment_method_change(c.case_id, c.at, c.payment_method_id)
    applied.touched.add(c.case_id)


def _customer_dispute(ledger: Ledger, c: CustomerDispute, now: datetime, applied: Applied) -> None:
    ledger.sync.note_dispute(c.customer_id, c.dispute_id, c.summary)


def _churned(ledger: Ledger, c: Churned, now: datetime, applied: Applied) -> None:
    ledger.cases.mark_churned(c.case_id)


def _notify(ledger: Ledger, c: NotifyPerson, now: datetime, applied: Applied) -> None:
    applied.notify.append(c)


def _ending(ledger: Ledger, c: Ending, now: datetime, applied: Applied) -> None:
    applied.notify.append(c)    # run after the batch, like a notification (tick/run.py _notify)


def _note(ledger: Ledger, c: Note, now: datetime, applied: Applied) -> None:
    ledger.cases.add_timeline(c.case_id, c.at, c.kind, c.summary, c.data)


_APPLY = {OpenCase: _open, FollowInvoice: _follow, Reclassify: _reclassify, EndCase: _end, HandToPerson: _hand, Hold: _hold, Resume: _resume,
          PaymentMethodChanged: _method, Churned: _churned, CustomerDispute: _customer_dispute,
          NotifyPerson: _notify, Ending: _ending, Note: _note}


@dataclass(frozen=True)
class Attempted(CaseChange):
    """dunctl made a payment attempt (declined, or submitted and not settled yet)."""

    attempts: int
    decline_code: str | None = None


@dataclass(frozen=True)
class StoreInvoice:
    """A fresh read of the invoice from the provider (after a successful retry or a write-off)."""

    invoice: object           # dunctl.model.Invoice
    reconcile: bool = False   # leave it for the next reconcile (it may end the case)


def _attempted(ledger: Ledger, c: Attempted, now: datetime, applied: Applied) -> None:
    ledger.cases.record_attempt(c.case_id, c.attempts, c.decline_code)
    applied.touched.add(c.case_id)


def _store(ledger: Ledger, c: StoreInvoice, now: datetime, applied: Applied) -> None:
    ledger.sync.apply_batch(SyncBatch(invoices=[c.invoice]), now)
    if not c.reconcile:
        ledger.sync.clear_pending(c.invoice.id)


_APPLY.update({Attempted: _attempted, StoreInvoice: _store})
