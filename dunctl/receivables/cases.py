"""Net-terms cases: when one opens, how it follows its invoice (a moved due date, a partial payment, a credit
note). Pure like the rest of reconciling (dunctl/tick/reconcile.py): returns changes, never acts."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from dunctl.conditions import matches
from dunctl.experiments import assign, case_sequence
from dunctl.failures import NET_TERMS
from dunctl.ledger import Ledger
from dunctl.ledger import receivables as store
from dunctl.ledger.receivables import SEND_INVOICE
from dunctl.ledger.records import CaseRecord, CustomerRecord, InvoiceRecord, SubscriptionRecord
from dunctl.money import format_amount
from dunctl.receivables.terms import lead, takes_net_terms
from dunctl.tick import changes as case_changes
from dunctl.tick.changes import Applied, Change, Note, OpenCase
from dunctl.tick.facts import condition_facts


def is_net_terms(invoice: InvoiceRecord) -> bool:
    return invoice.collection_method == SEND_INVOICE and invoice.due_date is not None


@dataclass(frozen=True)
class OpenNetTermsCase(OpenCase):
    """A net-terms case opens: its `invoice` carries the due date as the time its steps count from."""

    def start(self) -> tuple[str, str]:
        invoice = self.invoice
        amount = format_amount(invoice.amount_remaining, invoice.currency)
        return "due", f"invoice due: {amount} ({invoice.number or invoice.id}, net terms)"


@dataclass(frozen=True)
class Retime:
    """The due date moved in Stripe: the case's steps count from the new one."""

    case_id: int
    due_date: datetime


def open_net_terms_case(invoice: InvoiceRecord, customer: CustomerRecord | None,
                        subscription: SubscriptionRecord | None, config, now: datetime) -> list[Change]:
    """A case for an open net-terms invoice whose first step is near, in the first segment that takes net-terms
    invoices and matches; none when no segment does (see the module's docstring)."""
    due = invoice.due_date
    if invoice.status != "open" or due is None or now < due - lead(config):
        return []
    facts = condition_facts(invoice, customer, subscription, NET_TERMS, invoice.attempt_count, now)
    segment = next((s for s in config.file.segments if takes_net_terms(s) and matches(s.when, facts)), None)
    if segment is None:
        return []
    assignment = assign(config, invoice.customer_id, segment.name)
    timed = replace(invoice, first_failed_at=due)
    return [OpenNetTermsCase(timed, segment.name, case_sequence(config, assignment, segment.name), NET_TERMS,
                             None, assignment)]


def follow_net_terms(case: CaseRecord, invoice: InvoiceRecord, now: datetime) -> list[Change]:
    """What changed on an open net-terms case's invoice besides its ending: the due date, the amount left."""
    changes: list[Change] = []
    due = invoice.due_date
    if due is not None and due != case.first_failed_at:
        changes += [Retime(case.id, due),
                    Note(case.id, now, "due_date", f"due date moved from {_day(case.first_failed_at)} to "
                                                   f"{_day(due)}: the remaining steps count from the new date")]
    if invoice.status == "open" and invoice.amount_remaining < case.amount_remaining:
        # when Stripe recorded the latest payment: the journal's date for a part paid (a tick a day late must not
        # move a payment of November 30 into December); the journal reads it only when the amount paid rose
        changes.append(Note(case.id, now, "partial", reduced_text(case, invoice),
                            {"amount_paid": invoice.amount_paid, "amount_due": invoice.amount_due,
                             "amount_remaining": invoice.amount_remaining,
                             "paid_at": invoice.row.get("amount_paid_at")}))
    return changes


def reduced_text(case: CaseRecord, invoice: InvoiceRecord) -> str:
    """Why less is owed, in words: paid in part, credited (a credit note lowers the amount due), or both."""
    money = invoice.currency
    paid = invoice.amount_paid - case.amount_paid_at_open
    credited = case.amount_due - invoice.amount_due
    how = [f"{format_amount(paid, money)} paid so far" if paid > 0 else "",
           f"{format_amount(credited, money)} credited" if credited > 0 else ""]
    return (f"amount remaining now {format_amount(invoice.amount_remaining, money)} (was "
            f"{format_amount(case.amount_remaining, money)}; {', '.join(h for h in how if h) or 'reduced'}): "
            "the case goes on for what is left")


def _day(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d") if moment else "none"


def _retime(ledger: Ledger, c: Retime, now: datetime, applied: Applied) -> None:
    store.retime_case(ledger.conn, c.case_id, c.due_date)
    applied.touched.add(c.case_id)


case_changes._APPLY.update({OpenNetTermsCase: case_changes._open, Retime: _retime})
