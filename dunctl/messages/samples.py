"""Sample cases that `dunctl check` and the template tests render every template against."""

from __future__ import annotations

import json
from datetime import datetime

from dunctl.failures import FAILURE_TYPES
from dunctl.messages.case import CasePart
from dunctl.messages.context import MessageContext, build_context
from dunctl.messages.sms import sample_link


_SAMPLE_SEQUENCE = {"name": "standard", "steps": [
    {"id": "notice", "at": "30m", "action": "email"}, {"id": "final-notice", "at": "12d", "action": "email"},
    {"id": "suspend", "at": "21d", "action": "pause_subscription"}]}


def sample_contexts(company: str = "Acme", default_locale: str = "en", locale: str | None = None
                    ) -> list[MessageContext]:
    """Sample cases for `dunctl check`: one per failure type (templates branch on it), a business on a
    high-value invoice, and one message covering two invoices, so every branch a template takes is rendered."""
    samples = [sample_context(company, failure_type, default_locale=default_locale, locale=locale)
               for failure_type in FAILURE_TYPES]
    samples.append(sample_context(company, "card_soft", business=True, segment="human-review",
                                  default_locale=default_locale, locale=locale))
    samples.append(sample_context(company, "card_update", invoices=2, default_locale=default_locale, locale=locale))
    return samples


def sample_context(company: str = "Acme", failure_type: str = "card_soft", *, business: bool = False,
                   segment: str = "default", invoices: int = 1, default_locale: str = "en",
                   locale: str | None = None, currency: str = "usd", amount: int = 12900) -> MessageContext:
    """A representative case for `dunctl check` and the template tests: usage-based, with a card."""
    def case_and_invoice(n: int) -> tuple[dict, dict]:
        case = {"customer_id": "cus_sample", "invoice_id": f"in_sample{n}", "first_failed_at": "2026-01-01T00:00:00Z",
                "failure_type": failure_type, "attempts": 2, "segment": segment, "sequence": "standard",
                "sequence_def": json.dumps(_SAMPLE_SEQUENCE)}
        usage = amount * 3000 // 12900
        invoice = {"id": f"in_sample{n}", "number": f"ACME-004{n}", "currency": currency,
                   "amount_due": amount * n, "amount_remaining": amount * n,
                   "hosted_invoice_url": sample_link(n),
                   # a net-terms invoice's (dunctl/receivables): its due date and PDF; a card invoice has none
                   "due_date": "2026-01-10T00:00:00Z", "invoice_pdf": sample_link(n) + "/pdf",
                   "customer_name": "Ada Lovelace", "customer_email": "ada@example.com",
                   "payment_method_type": "card",
                   "decline": json.dumps({"decline_code": "insufficient_funds"}),
                   "lines": json.dumps([
                       {"description": "Pro plan", "amount": (amount - usage) * n, "quantity": 1, "metered": False},
                       {"description": "API calls over plan", "amount": usage * n, "quantity": 30000,
                        "metered": True}])}
        return case, invoice

    customer = {"name": "Wayne Health" if business else "Ada Lovelace", "email": "ada@example.com",
                "metadata": json.dumps({"billing_email": "ap@wayne.test"} if business else {}),
                "preferred_locale": locale}
    method = {"type": "card", "brand": "visa", "last4": "4242"}
    case, invoice = case_and_invoice(1)
    also = [CasePart(*case_and_invoice(n), method, sample_link(n)) for n in range(2, invoices + 1)]
    statement = [{"id": f"in_sample{n}", "number": f"ACME-003{n}", "currency": currency, "amount_remaining": amount * n,
                  "due": f"2025-12-{10 + n}T00:00:00Z", "hosted_invoice_url": sample_link(n)} for n in (1, 2)]
    return build_context(case=case, invoice=invoice, customer=customer, payment_method=method,
                         update_link=sample_link(1), company=company,
                         now=datetime.fromisoformat("2026-01-13T00:00:00+00:00"), default_locale=default_locale,
                         also=also, locale=locale, open_invoices=statement)
