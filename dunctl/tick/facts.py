"""The facts a case is judged by: for segment rules and `when:` conditions, and the planner's snapshot. Pure."""

from __future__ import annotations

import json
from datetime import datetime

from dunctl.failures import NET_TERMS, network_retry_wait, retry_wait_reason, shown_code
from dunctl.ledger.records import CaseBundle, CustomerRecord, InvoiceRecord, SubscriptionRecord
from dunctl.planner import CaseSnapshot, StepRecord

STOP_PROVIDER_RETRIES = "stop-provider-retries"


def condition_facts(invoice: InvoiceRecord, customer: CustomerRecord | None, subscription: SubscriptionRecord | None,
                    failure_type: str, attempts: int, now: datetime, segment: str | None = None) -> dict:
    """What `when:` conditions in segments and steps can test."""
    decline = invoice.decline or {}
    first = invoice.first_failed_at
    return {
        "amount_due": invoice.amount_due,
        "amount_remaining": invoice.amount_remaining,
        "currency": invoice.currency,
        "failure_type": failure_type,
        "decline_code": shown_code(decline),
        "payment_method_type": invoice.payment_method_type or decline.get("payment_method_type"),
        "billing_reason": invoice.billing_reason,
        "attempt_count": attempts,
        "days_since_failure": (now - first).days if first else 0,
        "collection_method": invoice.collection_method,
        "days_overdue": _days_past(now, invoice.due_date or first),
        "usage_based": bool((subscription and subscription.usage_based)
                            or any(line.get("metered") for line in invoice.lines)),
        "livemode": bool(invoice.livemode),
        "segment": segment,
        "customer.metadata": customer.metadata if customer else {},
        "invoice.metadata": invoice.metadata,
        "subscription.metadata": subscription.metadata if subscription else {},
    }


def _days_past(now: datetime, due: datetime | None) -> int:
    """Whole days past `due`, negative before it (-1 on the day before): floor, so -0.5 days is -1."""
    return (now - due).days if due else 0


def step_records(bundle: CaseBundle) -> dict[str, StepRecord]:
    return {a.step_id: StepRecord(a.status, a.tries, a.finished_at) for a in bundle.actions if a.kind == "step"}


def snapshot(bundle: CaseBundle, now: datetime, dunctl_retries: bool, monitor: bool = False) -> CaseSnapshot:
    case, invoice = bundle.case, bundle.invoice
    blocked = not_before = wait_reason = None
    if dunctl_retries and invoice.failed_at is not None:
        # the network's own rule for the next attempt (Mastercard advice codes 24-30, Stripe's 24 h block)
        wait = network_retry_wait(invoice.decline)
        if wait is not None:
            not_before, wait_reason = invoice.failed_at + wait, retry_wait_reason(invoice.decline)
    if case.failure_type == NET_TERMS:
        # the customer pays a net-terms invoice; dunctl charges it only with a payment method on file
        blocked = None if invoice.payment_method_id else "a net-terms invoice with no payment method on file"
    elif dunctl_retries:
        stop = bundle.system().get(STOP_PROVIDER_RETRIES)
        # Monitoring only planned it (`would`): once live, Stripe's retries are on until the turn-off is done.
        if stop is None or stop.status not in (("done", "would") if monitor else ("done",)):
            blocked = "Stripe's own retries are not turned off on this invoice yet"
    return CaseSnapshot(
        first_failed_at=case.first_failed_at,
        failure_type=case.failure_type,
        attempts=case.attempts,
        facts=condition_facts(invoice, bundle.customer, bundle.subscription, case.failure_type, case.attempts, now,
                              case.segment),
        last_failed_at=invoice.failed_at,
        payment_method_changed_at=case.payment_method_changed_at,
        dunning_off=bool(bundle.customer and bundle.customer.dunning_off),
        timezone=bundle.customer.timezone if bundle.customer else None,
        retries_blocked=blocked,
        retry_not_before=not_before,
        retry_wait_reason=wait_reason,
        contacts=bundle.contacts,
        invoice_status=invoice.status,
        case_state=case.state,
        disputed=open_dispute(bundle.customer),
    )


def open_dispute(customer: CustomerRecord | None) -> str | None:
    """The customer's open disputes in words, or None: while one is open, charges and messages wait."""
    raw = customer.row.get("open_disputes") if customer is not None else None
    return "; ".join(json.loads(raw).values()) if raw else None
