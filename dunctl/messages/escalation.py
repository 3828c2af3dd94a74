"""What a person needs to take a case over, as plain prose (an email, a Slack post and a webhook's text alike)."""

from __future__ import annotations

from datetime import datetime

from dunctl.clock import from_iso
from dunctl.failures import shown_code
from dunctl.messages.case import billing_contacts, consequence, customer_kind, dashboard_url, from_json
from dunctl.money import format_amount


def escalation_text(case: dict, invoice: dict, customer: dict | None, actions: list[dict], reason: str, *,
                    now: datetime | None = None, sequence=None, account: str | None = None) -> str:
    """What a person needs to take a case over, as plain prose (an email, a Slack post and a webhook's text
    alike; no markup): who owes what in which currency, for how many days, what was sent and tried, what happens
    next and when, and where the invoice is in the Stripe Dashboard."""
    currency = invoice["currency"]
    decline = from_json(invoice.get("decline"), {})
    first_failed = from_iso(case["first_failed_at"])
    days = max(0, (now - first_failed).days) if now and first_failed else None
    kind = customer_kind(customer, invoice)
    who = kind["company_name"] or kind["name"] or case["customer_id"]
    contacts = billing_contacts(customer, invoice)
    paragraphs = [f"{reason}."] if reason else []   # no reason: one invoice of a customer's escalation
    paragraphs += [
        f"{who} ({case['customer_id']}) owes {format_amount(invoice['amount_remaining'], currency)} "
        f"{currency.upper()} on invoice {invoice['number'] or invoice['id']} (of "
        f"{format_amount(invoice['amount_due'], currency)} {currency.upper()} due). Billing contact: "
        f"{', '.join(contacts) if contacts else 'none on file'}.",
        f"The payment first failed on {first_failed:%Y-%m-%d}"
        + (f", {days} days overdue" if days is not None else "")
        + f" ({case['failure_type']}, decline code {shown_code(decline) or 'none'}), "
        f"after {case['attempts']} payment attempt(s).",
        _history(actions),
        _next_consequence(sequence, first_failed, now),
        f"Stripe Dashboard: {dashboard_url(invoice['id'], bool(invoice.get('livemode')), account)}",
    ]
    if invoice.get("hosted_invoice_url"):
        paragraphs.append(f"The customer pays on: {invoice['hosted_invoice_url']}")
    return "\n\n".join(paragraphs)


def escalation_for_customer(reason: str, customer_id: str, customer: dict | None,
                            invoices: list[tuple[dict, str]]) -> str:
    """One customer's escalations as one message: the reason, the total owed per currency (amounts in different
    currencies are never added), then each invoice's own escalation text, as (invoice row, text) pairs."""
    totals: dict[str, int] = {}
    for invoice, _ in invoices:
        totals[invoice["currency"]] = totals.get(invoice["currency"], 0) + invoice["amount_remaining"]
    kind = customer_kind(customer, invoices[0][0])
    who = kind["company_name"] or kind["name"] or customer_id
    owed = "; ".join(f"{format_amount(amount, currency)} {currency.upper()}" for currency, amount in totals.items())
    per = " (a total per currency)" if len(totals) > 1 else ""
    head = f"{reason}.\n\n{who} ({customer_id}) has {len(invoices)} unpaid invoices. Total owed{per}: {owed}."
    parts = [f"Invoice {invoice['number'] or invoice['id']}:\n\n{text}" for invoice, text in invoices]
    return "\n\n".join([head, *parts])


def _history(actions: list[dict]) -> str:
    """What was sent and tried, oldest first, in one sentence."""
    # what the customer received (not notes to colleagues) and what was charged
    done = [a for a in actions if a["status"] == "done" and (a["action"] == "retry" or (
        a["action"] in ("email", "sms") and a.get("audience") != "internal"))]
    if not done:
        return "Nothing has been sent to the customer or retried yet."
    said = [f"{a['action']} {a['step_id']} on {str(a['finished_at'] or '')[:10]}" for a in done]
    sent = sum(a["action"] != "retry" for a in done)
    return f"So far {sent} message(s) sent and {len(done) - sent} retry(ies): " + "; ".join(said) + "."


_CONSEQUENCE_WORDS = {"pause_subscription": "the subscription is paused",
                      "cancel_subscription": "the subscription is cancelled",
                      "mark_uncollectible": "the invoice is written off as uncollectible",
                      "hand_off": "the invoice is handed to collections"}


def _next_consequence(sequence, first_failed: datetime | None, now: datetime | None) -> str:
    then = consequence(sequence, first_failed, now) if now else None
    if not then:
        return "No pause, cancellation or write-off is scheduled: what happens next is a person's decision."
    return f"Next, unless the invoice is paid: {_CONSEQUENCE_WORDS[then['action']]} on {then['at']:%Y-%m-%d}."
