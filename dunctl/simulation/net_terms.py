"""Net-30 business customers in a simulated account: invoices sent with payment terms (Stripe's
`collection_method: send_invoice`, `days_until_due: 30`), paid on time, late or not at all, sooner after a reminder.

They are added to the card book, never drawn from it: their own generator for the book, their own named draws for
each invoice, their own counters. The card customers meet the same luck with or without them, so the card figures of
a seed do not move when net-terms customers join.

What a customer does with an invoice is drawn when it is issued (`assumptions`, "net-terms"): pay before the due
date, pay a number of days after it, or never without a person. A reminder dunctl delivers may bring the payment
forward to the customer's next payment run; a person following up (an escalation) may too. Whichever comes first
pays the invoice; the rest find it paid.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dunctl.model import Customer, Invoice, InvoiceLine
from dunctl.simulation.assumptions import DEFAULT, Assumptions
from dunctl.simulation.population import COMPANY_A, COMPANY_B, FIRST, LOCALES, ZONES, _minor, pick
from dunctl.simulation.world import HOSTED, World, _CustomerState, _InvoiceState, add_months

SEND_INVOICE = "send_invoice"
PDF = "https://pay.stripe.test/invoice/"
# Net-terms customers buy the larger plans: business and enterprise price ranges (assumptions.monthly_price_usd).
TIERS = (("business", 0.8), ("enterprise", 0.2))


@dataclass(frozen=True)
class NetTermsCustomer:
    """A business billed monthly by invoice with payment terms, paying from its accounts-payable team."""

    id: str
    tier: str
    name: str
    email: str                 # the product user
    billing_email: str         # accounts payable: where invoices and reminders go
    currency: str
    timezone: str
    locale: str
    monthly_amount: int        # minor units
    anchor: timedelta          # when in the month before the simulation starts its first invoice was issued


@dataclass
class HistoricalNetTermsInvoice:
    """A net-terms invoice as a ledger recorded it, for `simulate --from-ledger` to replay."""

    invoice_id: str
    customer: Customer
    currency: str
    amount_due: int
    number: str | None
    created: datetime
    due_date: datetime
    lines: list[InvoiceLine]


@dataclass
class NetTermsStats:
    """What happened to the net-terms invoices inside the account (a simulation knows who really paid why)."""

    invoices: int = 0
    collected_by: Counter = field(default_factory=Counter)   # on time, late, reminder, person


def build_net_terms_book(customers: int, seed: int, assumptions: Assumptions = DEFAULT) -> list[NetTermsCustomer]:
    """The net-terms customers that join a book of `customers` card customers: `net_terms_share` of its size,
    from a generator of their own (the card book is the same with or without them)."""
    a = assumptions
    rng = random.Random(f"dunctl-book/{seed}/net-terms")
    book = []
    for n in range(round(customers * a.net_terms_share)):
        tier = pick(rng, dict(TIERS))
        currency = pick(rng, a.net_terms_currency_mix)
        low, high = a.monthly_price_usd["enterprise" if tier == "enterprise" else "b2b"]
        monthly = _minor(math.exp(rng.uniform(math.log(low), math.log(high))), currency, a.fx_per_usd)
        company = f"{rng.choice(COMPANY_A)} {rng.choice(COMPANY_B)} Group {n + 1}"
        domain = company.lower().replace(" ", "") + ".test"
        book.append(NetTermsCustomer(
            id=f"cus_net{n:04d}", tier=tier, name=company, email=f"{rng.choice(FIRST).lower()}@{domain}",
            billing_email=f"{rng.choice(('ap', 'accounts', 'finance'))}@{domain}", currency=currency,
            timezone=rng.choice(ZONES[currency]), locale=rng.choice(LOCALES[currency]), monthly_amount=monthly,
            anchor=timedelta(seconds=rng.randrange(30 * 86400))))
    return book


class NetTerms(World):
    """Part of SimulatedAccount (dunctl/simulation/account.py): net-terms customers, their invoices and payments.
    Listed first among its parts, so the hooks below see a net-terms invoice before the card model does."""

    net_terms_stats: NetTermsStats

    def _add_net_terms_customer(self, p: NetTermsCustomer) -> None:
        metadata = {"kind": "b2b", "tier": p.tier, "billing_email": p.billing_email, "terms": "net 30"}
        customer = Customer(id=p.id, name=p.name, email=p.email, metadata=metadata, preferred_locale=p.locale,
                            timezone=p.timezone)
        # No payment method on file: they pay by transfer or on the invoice page (nothing for dunctl to charge).
        self._customers[p.id] = _CustomerState(None, customer, None)
        self._touch("customer", p.id)
        # The first invoice was issued in the month before the start, so the first due dates fall in the run.
        self._schedule(self.start + p.anchor - timedelta(days=30), "net_terms_bill", p, 0)

    def _on_net_terms_bill(self, at: datetime, p: NetTermsCustomer, period: int) -> None:
        """Issue this month's invoice and draw what the customer will do with it. Billing never stops: an
        accounts-receivable book is a going concern, so the aging at the end holds current invoices too."""
        self._schedule(add_months(at, 1), "net_terms_bill", p, period + 1)
        a = self.assumptions
        invoice_id = f"in_net{p.id[7:]}_{period:03d}"
        due = at + timedelta(days=a.net_terms_days_until_due)
        line = InvoiceLine(f"{p.tier.title()} plan, {at:%B %Y}", p.monthly_amount, 1, period_start=at,
                           period_end=add_months(at, 1))
        self._issue(_invoice(invoice_id, self._customers[p.id].customer, p.currency, p.monthly_amount,
                             f"NET-{invoice_id[6:].upper()}", at, due, [line]))

    def _issue(self, invoice: Invoice) -> None:
        """The invoice is finalized and sent; what its customer will do with it is drawn now."""
        a = self.assumptions
        invoice_id, at, due = invoice.id, invoice.created, invoice.due_date
        self._invoices[invoice_id] = invoice
        self._state[invoice_id] = _InvoiceState()
        self.net_terms_stats.invoices += 1
        self._touch("invoice", invoice_id)
        if not self.customers_respond:
            return
        rng = self._rng("net-terms", invoice_id)
        draw = rng.random()
        if draw < a.net_terms_never_pays:
            return
        if draw < a.net_terms_never_pays + a.net_terms_late_share:
            late = a.net_terms_days_late_median * math.exp(rng.gauss(0, a.net_terms_days_late_sigma))
            self._schedule(due + timedelta(days=max(late, 0.5)), "net_terms_pay", invoice_id, "late")
        else:
            low, high = a.net_terms_on_time_days
            days = rng.uniform(low, min(high, a.net_terms_days_until_due))
            self._schedule(min(at + timedelta(days=days), due), "net_terms_pay", invoice_id, "on time")

    # -- replaying a ledger's own net-terms invoices (`simulate --from-ledger`) ---------------------------------

    def replay_net_terms(self, item: HistoricalNetTermsInvoice) -> None:
        """Bring back a net-terms invoice from a ledger: its customer as the ledger knew it, issued when it was
        issued with its due date. What the customer does with it is the model's, with the same luck for the same
        invoice id and seed, whatever config runs against it."""
        if item.customer.id not in self._customers:
            self._customers[item.customer.id] = _CustomerState(None, item.customer, None)
            self._touch("customer", item.customer.id)
        self._schedule(item.created, "net_terms_replayed", item)

    def _on_net_terms_replayed(self, at: datetime, item: HistoricalNetTermsInvoice) -> None:
        self._issue(_invoice(item.invoice_id, self._customers[item.customer.id].customer, item.currency,
                             item.amount_due, item.number, at, item.due_date,
                             [dataclasses.replace(line) for line in item.lines]))

    def _on_net_terms_pay(self, at: datetime, invoice_id: str, source: str) -> None:
        invoice = self._invoices[invoice_id]
        if invoice.status != "open":
            return
        invoice.status, invoice.amount_paid, invoice.amount_remaining = "paid", invoice.amount_due, 0
        invoice.paid_at = at
        self.net_terms_stats.collected_by[source] += 1
        self._touch("invoice", invoice_id)

    def _prompted(self, invoice: Invoice, at: datetime, chance: float, source: str) -> None:
        st = self._state[invoice.id]
        st.messages += 1
        if invoice.status != "open" or not self.customers_respond:
            return
        rng = self._rng("net-terms", source, invoice.id, st.messages)
        if rng.random() < chance:
            days = rng.uniform(*self.assumptions.net_terms_payment_run_days)
            self._schedule(at + timedelta(days=days), "net_terms_pay", invoice.id, source)

    # -- hooks the driver calls after each tick (the card model's, for any other invoice) ---------------------

    def message_delivered(self, invoice_id: str, channel: str, at: datetime, **kwargs) -> None:
        invoice = self._invoices.get(invoice_id)
        if invoice is None or invoice.collection_method != SEND_INVOICE:
            return super().message_delivered(invoice_id, channel, at, **kwargs)
        a = self.assumptions
        before = invoice.due_date is not None and at < invoice.due_date
        chance = (a.net_terms_reminder_before if before else a.net_terms_reminder_after) \
            * a.repeat_factor ** self._state[invoice_id].messages
        self._prompted(invoice, at, chance, "reminder")

    def escalated(self, invoice_id: str, at: datetime) -> None:
        invoice = self._invoices.get(invoice_id)
        if invoice is None or invoice.collection_method != SEND_INVOICE:
            return super().escalated(invoice_id, at)
        tier = self._customers[invoice.customer_id].customer.metadata.get("tier")
        # A person calling accounts payable: the card model's chance for a business (assumptions.escalation_response).
        self._prompted(invoice, at, self.assumptions.escalation_response["enterprise" if tier == "enterprise"
                                                                          else "b2b"], "person")


def _invoice(invoice_id: str, customer: Customer, currency: str, amount: int, number: str | None, at: datetime,
             due: datetime, lines: list[InvoiceLine]) -> Invoice:
    """An open invoice sent for the customer to pay by `due`, as Stripe shows one (no payment method: the customer
    pays on the hosted page or by transfer), addressed to the billing contact."""
    return Invoice(
        id=invoice_id, customer_id=customer.id, currency=currency, amount_due=amount, amount_paid=0,
        amount_remaining=amount, status="open", created=at, number=number, billing_reason="manual",
        collection_method=SEND_INVOICE, hosted_invoice_url=HOSTED + invoice_id, due_date=due,
        invoice_pdf=f"{PDF}{invoice_id}/pdf", customer_email=customer.metadata.get("billing_email") or customer.email,
        customer_name=customer.name, lines=lines, auto_advance=True)
