"""Reconciling: what the synced invoices and signals mean for cases. Pure: returns changes, never acts."""

from __future__ import annotations

from datetime import datetime

from dunctl.conditions import matches
from dunctl.config import Config
from dunctl.failures import DISPUTE, UNKNOWN, shown_code
from dunctl.ledger import ENDED_STATES
from dunctl.ledger.records import CaseRecord, CustomerRecord, InvoiceRecord, SignalRecord, SubscriptionRecord
from dunctl.tick.changes import Change, EndCase, FollowInvoice, HandToPerson, Note, NotifyPerson, OpenCase, \
    PaymentMethodChanged, Reclassify
from dunctl.tick.facts import condition_facts

ENDED_BY_INVOICE = {"paid": ("recovered", "invoice paid"), "void": ("voided", "invoice voided"),
                    "uncollectible": ("written_off", "invoice marked uncollectible")}


def open_case(invoice: InvoiceRecord, customer: CustomerRecord | None, subscription: SubscriptionRecord | None,
              config: Config, now: datetime) -> list[Change]:
    """A case for an invoice that failed, with the first segment whose rule matches (declaration order wins)."""
    if invoice.status != "open" or not invoice.first_failed_at or invoice.attempt_count < 1:
        return []
    failure_type = invoice.failure_type or UNKNOWN
    facts = condition_facts(invoice, customer, subscription, failure_type, invoice.attempt_count, now)
    segment = next(s for s in config.file.segments if matches(s.when, facts))
    return [OpenCase(invoice, segment.name, config.sequences[segment.sequence], failure_type,
                     shown_code(invoice.decline))]


def follow_case(case: CaseRecord, invoice: InvoiceRecord, now: datetime) -> list[Change]:
    """An invoice with a case changed: new attempts, a different decline, or it ended."""
    if case.state in ENDED_STATES:
        if invoice.status == "paid" and case.state not in ("recovered", "voided"):
            return end_case(case, invoice, "recovered", f"paid after the case ended ({case.state})", now)
        return []
    changes: list[Change] = []
    attempts = case.attempts
    if invoice.attempt_count > case.attempts and invoice.status == "open":
        attempts = invoice.attempt_count
        code = shown_code(invoice.decline)
        changes.append(Note(case.id, invoice.failed_at or now, "attempt",
                            f"payment attempt {attempts} failed" + (f": {code}" if code else "")
                            + (f"; next Stripe attempt {invoice.row.get('next_payment_attempt')}"
                               if invoice.next_payment_attempt else ""), invoice.decline or None))
    changes.append(FollowInvoice(case.id, invoice.amount_remaining, attempts))
    if invoice.failure_type and invoice.failure_type != case.failure_type and case.failure_type != DISPUTE:
        code = shown_code(invoice.decline)
        changes.append(Reclassify(case.id, invoice.failure_type, code))
        changes.append(Note(case.id, now, "reclassified",
                            f"re-classified {case.failure_type} -> {invoice.failure_type} ({code or 'no code'})"))
    if invoice.status in ENDED_BY_INVOICE:
        state, reason = ENDED_BY_INVOICE[invoice.status]
        changes.extend(end_case(case, invoice, state, reason, now, attempts=attempts))
    return changes


def end_case(case: CaseRecord, invoice: InvoiceRecord, state: str, reason: str, now: datetime,
             recovered_by: str | None = None, attempts: int | None = None) -> list[Change]:
    """End a case; a recovered case that a person held tells the escalation channel it needs no more work."""
    attempts = case.attempts if attempts is None else attempts
    fields: dict = {"amount_recovered": max(0, invoice.amount_paid - case.amount_paid_at_open),
                    "amount_remaining": invoice.amount_remaining}
    at = now
    if state == "recovered":
        at = invoice.paid_at or now
        if recovered_by is None:
            recovered_by = "provider_retry" if invoice.attempt_count > attempts else "customer"
        fields.update(recovered_at=at, recovered_by=recovered_by,
                      recovered_attempt=invoice.attempt_count if recovered_by != "customer" else None)
    changes: list[Change] = [EndCase(case.id, case.invoice_id, state, reason, at, fields)]
    if state == "recovered" and case.with_person:
        changes.append(NotifyPerson(case.id, "recovered-notice", "Recovered, no action needed"))
    return changes


def apply_signal(signal: SignalRecord, cases: list[CaseRecord]) -> list[Change]:
    """A provider signal (dispute, replaced payment method) on the open cases it concerns."""
    at = signal.at
    changes: list[Change] = []
    if signal.kind == "dispute":
        for case in cases:
            detail = f": {signal.detail}" if signal.detail else ""
            changes += [HandToPerson(case.id, at, disputed=True),
                        Note(case.id, at, "dispute", f"payment disputed{detail}; dunning stopped, handed to a person"),
                        NotifyPerson(case.id, "dispute-notice", "Payment disputed")]
    elif signal.kind == "payment_method_updated":
        for case in cases:
            changes += [PaymentMethodChanged(case.id, at),
                        Note(case.id, at, "payment_method", "the customer's payment method changed")]
    return changes
