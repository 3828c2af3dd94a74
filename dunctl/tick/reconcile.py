"""Reconciling: what the synced invoices and signals mean for cases. Pure: returns changes, never acts."""

from __future__ import annotations

from datetime import datetime

from dunctl.conditions import matches
from dunctl.config import Config
from dunctl.experiments import assign, case_sequence
from dunctl.failures import DISPUTE, NET_TERMS, UNKNOWN, described_code, shown_code
from dunctl.ledger import ENDED_STATES
from dunctl.ledger.records import CaseRecord, CustomerRecord, InvoiceRecord, SignalRecord, SubscriptionRecord
from dunctl.money import format_amount
from dunctl.receivables.cases import follow_net_terms, is_net_terms, open_net_terms_case
from dunctl.tick.changes import Change, CustomerDispute, EndCase, Ending, FollowInvoice, HandToPerson, Hold, Note, \
    NotifyPerson, OpenCase, PaymentMethodChanged, Reclassify, Resume
from dunctl.tick.facts import condition_facts

ENDED_BY_INVOICE = {"paid": ("recovered", "invoice paid"), "void": ("voided", "invoice voided"),
                    "uncollectible": ("written_off", "invoice marked uncollectible")}


def open_case(invoice: InvoiceRecord, customer: CustomerRecord | None, subscription: SubscriptionRecord | None,
              config: Config, now: datetime) -> list[Change]:
    """A case for an invoice that failed, with the first segment whose rule matches (declaration order wins)."""
    if is_net_terms(invoice) and invoice.attempt_count < 1:
        return open_net_terms_case(invoice, customer, subscription, config, now)
    if not may_open(invoice):
        return []
    failure_type = invoice.failure_type or UNKNOWN
    facts = condition_facts(invoice, customer, subscription, failure_type, invoice.attempt_count, now)
    segment = next(s for s in config.file.segments if matches(s.when, facts))
    # sticky experiment assignment: a hash of (experiment, customer); a holdout case gets an empty sequence
    assignment = assign(config, invoice.customer_id, segment.name)
    return [OpenCase(invoice, segment.name, case_sequence(config, assignment, segment.name), failure_type,
                     shown_code(invoice.decline), assignment)]


def may_open(invoice: InvoiceRecord) -> bool:
    """Can the invoice open a case at all, whatever its customer and subscription (reconciling reads them only
    then): an open invoice that failed, or a net-terms one (its own rules: dunctl/receivables/cases.py). Most
    invoices a sync brings were paid on the first try."""
    if is_net_terms(invoice) and invoice.attempt_count < 1:
        return True
    return invoice.status == "open" and bool(invoice.first_failed_at) and invoice.attempt_count >= 1


def follow_case(case: CaseRecord, invoice: InvoiceRecord, now: datetime) -> list[Change]:
    """An invoice with a case changed: new attempts, a different decline, or it ended."""
    if case.state in ENDED_STATES:
        if invoice.status == "paid" and case.state not in ("recovered", "voided"):
            return end_case(case, invoice, "recovered", f"paid after the case ended ({case.state})", now)
        return []
    changes: list[Change] = []
    if case.failure_type == NET_TERMS:
        changes += follow_net_terms(case, invoice, now)
    attempts = case.attempts
    if invoice.attempt_count > case.attempts and invoice.status == "open":
        attempts = invoice.attempt_count
        code = described_code(invoice.decline)     # normalised, with the raw network code beside it
        changes.append(Note(case.id, invoice.failed_at or now, "attempt",
                            f"payment attempt {attempts} failed" + (f": {code}" if code else "")
                            + (f"; next Stripe attempt {invoice.row.get('next_payment_attempt')}"
                               if invoice.next_payment_attempt else ""), invoice.decline or None))
    changes.append(FollowInvoice(case.id, invoice.amount_remaining, attempts))
    if invoice.failure_type and invoice.failure_type != case.failure_type and case.failure_type not in (DISPUTE,
                                                                                                           NET_TERMS):
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
    """End a case. What follows (a pause dunctl made lifted, the customer thanked, the escalation channel told
    what happened) is decided from the case's whole record when the tick runs the `Ending` (tick/endings.py)."""
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
    return [EndCase(case.id, case.invoice_id, state, reason, at, fields), Ending(case.id, state)]


BANK_DEBITS = ("us_bank_account", "sepa_debit", "bacs_debit", "au_becs_debit", "acss_debit")


def apply_signal(signal: SignalRecord, cases: list[tuple[CaseRecord, InvoiceRecord]], now: datetime,
                 dispute_lost: str = "person") -> list[Change]:
    """A provider signal on the cases it concerns (found by invoice, subscription or customer)."""
    data = signal.data or {}
    if data.get("by_dunctl"):
        return []   # dunctl's own step did it (its pause_subscription): nothing to follow
    if signal.kind == "dispute" and on_customer(signal):
        return customer_disputes(signal, data, cases)
    if signal.kind == "dispute_closed" and on_customer(signal):
        return customer_dispute_closed(signal, data, cases, dispute_lost, now)
    changes: list[Change] = []
    for case, invoice in cases:
        changes += _SIGNALS.get(signal.kind, _ignore)(signal, data, case, invoice, now)
    return changes


def _ignore(*_) -> list[Change]:
    return []


def on_customer(signal) -> bool:
    """A dispute as Stripe reports it (dunctl.stripe.events): about the customer, with its dispute's facts. The
    simulated account's disputes name an open invoice and are followed on that invoice's case."""
    return bool(signal.customer_id and (signal.data or {}).get("dispute"))


def dispute_summary(data: dict) -> str:
    """A dispute in a person's words: amount, reason and when the evidence is due."""
    amount = format_amount(data["amount"], data["currency"]) if data.get("amount") is not None \
        and data.get("currency") else "an unknown amount"
    due = data.get("evidence_due_by")
    return (f"{amount} ({data.get('reason') or 'no reason given'}), evidence due "
            f"{due[:16].replace('T', ' ') + ' UTC' if due else 'date unknown'} (dispute {data.get('dispute')})")


def customer_disputes(signal, data: dict, cases) -> list[Change]:
    """A dispute on any of the customer's charges (its invoice is paid: disputes exist only on captured charges)
    holds every automated charge and customer message for that customer until it closes, and tells a person."""
    summary = dispute_summary(data)
    changes: list[Change] = [CustomerDispute(signal.customer_id, data["dispute"], summary)]
    why = f"{DISPUTE_HOLD}{summary}: no charges or messages to the customer until it closes"
    held = [case for case, _ in cases if case.is_open]
    for case in held:
        changes += [Hold(case.id, why), Note(case.id, signal.at, "dispute", why)]
    if cases:
        first = cases[0][0]
        changes.append(NotifyPerson(first.id, f"dispute-notice-{data.get('dispute')}",
                                    f"Payment disputed: {summary}"))
    return changes


def customer_dispute_closed(signal, data: dict, cases, dispute_lost: str, now: datetime) -> list[Change]:
    """The dispute closed: won (or closed with a warning) lifts the hold; lost does what `dunning.dispute_lost`
    says (default: a person decides)."""
    changes: list[Change] = [CustomerDispute(signal.customer_id, data["dispute"], None)]
    lost = data.get("status") == "lost"
    for case, invoice in cases:
        if not (case.row.get("held_because") or "").startswith(DISPUTE_HOLD):
            continue   # held for another reason (a person, the subscription): that hold stays
        if not lost or dispute_lost == "resume":
            changes += [Resume(case.id), Note(case.id, signal.at, "dispute", f"dispute closed ({data.get('status')})"
                                                                             ": back to the sequence")]
        elif dispute_lost == "write_off":
            changes += end_case(case, invoice, "written_off", "the customer's dispute was lost", now)
        else:
            changes += [HandToPerson(case.id, signal.at),
                        Hold(case.id, "the customer's dispute was lost: a person decides (`dunctl case resume` "
                                      "hands the case back)"),
                        Note(case.id, signal.at, "dispute", "dispute lost: handed to a person")]
    return changes


DISPUTE_HOLD = "the customer disputes a payment: "


def _dispute(signal, data, case, invoice, now) -> list[Change]:
    detail = f": {signal.detail}" if signal.detail else ""
    return [HandToPerson(case.id, signal.at, disputed=True),
            Note(case.id, signal.at, "dispute", f"payment disputed{detail}; dunning stopped, handed to a person"),
            NotifyPerson(case.id, "dispute-notice", "Payment disputed")]


def _dispute_closed(signal, data, case, invoice, now) -> list[Change]:
    if data.get("status") == "lost":
        return end_case(case, invoice, "written_off", "the dispute was lost", now)
    return [Note(case.id, signal.at, "dispute", f"dispute closed: {data.get('status') or signal.detail}; "
                                                "the case stays with the person who holds it")]


def _method_updated(signal, data, case, invoice, now) -> list[Change]:
    if not _charges_another_card(signal, data, invoice):
        return []
    return [PaymentMethodChanged(case.id, signal.at, signal.payment_method_id),
            Note(case.id, signal.at, "payment_method", "the customer's payment method changed"
                 + (f" ({signal.payment_method_id})" if signal.payment_method_id else ""))]


def _charges_another_card(signal, data, invoice) -> bool:
    """Would the invoice now be charged with another card than the one that failed? A new default on another
    invoice or subscription concerns only that one; the failed card made the default again, or an edit that
    left its number and expiry, is the same card: it keeps every rule of its decline (hard stops, advice-code
    and network waits, the attempt cap)."""
    if signal.invoice_id and signal.invoice_id != invoice.id:
        return False
    if signal.subscription_id and signal.subscription_id != invoice.subscription_id:
        return False
    if signal.payment_method_id and signal.payment_method_id == invoice.payment_method_id:
        return bool(data.get("card_changed"))     # the card updater gave the failed card a new number or expiry
    if data.get("card_changed"):
        return signal.payment_method_id is None or invoice.payment_method_id is None
    return True


def _mandate_inactive(signal, data, case, invoice, now) -> list[Change]:
    if invoice.payment_method_type not in BANK_DEBITS and invoice.payment_method_id != signal.payment_method_id:
        return []
    return [Reclassify(case.id, "bank_hard", "mandate_inactive"),
            Note(case.id, signal.at, "reclassified", f"re-classified {case.failure_type} -> bank_hard: the debit "
                                                     "mandate is no longer active; a new one is needed")]


def _subscription_canceled(signal, data, case, invoice, now) -> list[Change]:
    if case.row.get("churned"):
        # dunctl's own cancel step (Stripe takes no idempotency key on a DELETE, so its event cannot say so):
        # the case goes on to confirm it to the customer and closes with its own `close` step.
        return []
    why = data.get("reason") or data.get("comment") or signal.detail
    return end_case(case, invoice, "closed", "the subscription was cancelled outside dunctl"
                    + (f" ({why})" if why else "") + ": no more retries or messages", now)


PAUSED_FOR_PAYMENT = {"first_payment_failure": "the first payment failed",
                      "final_payment_failure": "the last payment retry failed"}


def _subscription_held(signal, data, case, invoice, now) -> list[Change]:
    if not case.is_open:
        return []
    if data.get("paused_for") in PAUSED_FOR_PAYMENT:
        # Stripe's failed-payment settings paused it: Stripe collects nothing until the invoice is paid, so the
        # case waits for the customer (the hosted invoice page still takes a payment); the pause is Stripe's,
        # and only Stripe or a person lifts it.
        why = (f"Stripe paused the subscription because {PAUSED_FOR_PAYMENT[data['paused_for']]} (its "
               "failed-payment settings); dunctl follows that pause and does not lift it")
        return [Hold(case.id, why), Note(case.id, signal.at, "held", why + ": no retries or messages")]
    what = "set to cancel" if signal.kind == "subscription_cancel_scheduled" else "paused"
    why = f"the subscription was {what} outside dunctl"
    return [Hold(case.id, why), Note(case.id, signal.at, "held", why + ": the case waits, no retries or messages")]


def _subscription_resumed(signal, data, case, invoice, now) -> list[Change]:
    if case.state != "paused" or case.with_person or case.failure_type == DISPUTE:
        return []   # only a case the subscription held; one a person holds stays with them
    return [Resume(case.id), Note(case.id, signal.at, "resumed", "the subscription resumed: back to the sequence")]


_SIGNALS = {"dispute": _dispute, "dispute_closed": _dispute_closed, "payment_method_updated": _method_updated,
            "mandate_inactive": _mandate_inactive, "subscription_canceled": _subscription_canceled,
            "subscription_cancel_scheduled": _subscription_held, "subscription_paused": _subscription_held,
            "subscription_resumed": _subscription_resumed}
