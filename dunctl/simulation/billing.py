"""Stripe's side of a simulated account: renewals billed, charges failed with the assumptions' decline codes,
payment attempts (Smart Retries and dunctl's), and what each does to the invoice and its subscription.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

from dunctl.failures import BANK_METHOD_TYPES, NEVER_RETRY, Decline, classify
from dunctl.model import Invoice, InvoiceLine
from dunctl.simulation.population import pick
from dunctl.simulation.world import (ACH_FAILURE_CODES, HOSTED, NEEDS_NEW_METHOD, World, _CustomerState,
                                     _InvoiceState, add_business_days, add_months, card_decline, draw_usage)


class Billing(World):
    """Part of SimulatedAccount (dunctl/simulation/account.py)."""

    def _on_bill(self, at: datetime, subscription_id: str, period: int) -> None:
        sub = self._subscriptions[subscription_id]
        p = sub.profile
        if self.bill_until is not None and at >= self.bill_until:
            return
        nxt = add_months(self.start + p.anchor, (period + 1) * (12 if p.interval == "year" else 1))
        self._schedule(nxt, "bill", subscription_id, period + 1)
        if sub.subscription.status in ("canceled", "paused"):
            return
        self._billing_terms(subscription_id, self.start + p.anchor, period + 1)
        a = self.assumptions
        rng = self._rng("bill", subscription_id, period)
        amount, spike = p.base_amount, False
        lines = []
        if p.usage_based:
            fee, usage, spike = draw_usage(rng, p, a)
            lines = [InvoiceLine("Platform fee", fee, 1), InvoiceLine("Metered usage", usage, None, metered=True)]
            amount = fee + usage
        else:
            lines = [InvoiceLine(p.plan or f"{p.tier.title()} plan ({p.interval}ly)", amount, 1)]
        for line in lines:
            line.period_start, line.period_end = at, add_months(at, 12 if p.interval == "year" else 1)
        cust = self._customers[p.id]
        invoice = self._create_invoice(f"in_{subscription_id[4:]}_{period:03d}", cust, amount, p.currency, at,
                                       subscription_id, lines)
        failure_rate = self._failure_rate(subscription_id, period, spike)
        attempt_at = at + timedelta(hours=1)
        together = cust.last_charge is not None and cust.last_charge[0] == at
        still = self._still_failing(cust, at)
        if cust.blocked_by is not None:
            decline = cust.blocked_by
        elif self._expired(cust.method, at):
            decline = card_decline("expired_card", cust.method.type)
        elif together:
            # Charged in the same minute as the customer's other subscription, on the same payment method: the
            # issuer (or the bank) answers both the same way.
            decline = cust.last_charge[1]
        elif still is not None:
            decline = still
        elif rng.random() < failure_rate:
            decline = self._draw_decline(rng, cust)
        else:
            decline = None
        cust.last_charge = (at, decline)
        if decline is None:
            self._settle(invoice, attempt_at)
            return
        if decline.payment_method_type in BANK_METHOD_TYPES:
            low, high = a.ach_return_business_days
            self._schedule(add_business_days(at, rng.randint(low, high)), "fail", invoice.id, decline)
        else:
            self._schedule(attempt_at, "fail", invoice.id, decline)

    def _still_failing(self, cust: _CustomerState, at: datetime) -> Decline | None:
        """The decline of the customer's earlier invoice that is still open and whose cause has not cleared (the
        funds are not back): a renewal charged meanwhile fails the same way, so a monthly invoice fails again while
        the previous one is in dunning."""
        if not self.customers_respond:
            return None
        for invoice_id in reversed(cust.failed):
            invoice, st = self._invoices[invoice_id], self._state[invoice_id]
            if invoice.status == "open" and not st.disputed and invoice.decline is not None \
                    and (st.clears_at is None or st.clears_at > at):
                return invoice.decline
        return None

    def _create_invoice(self, invoice_id: str, cust: _CustomerState, amount: int, currency: str, at: datetime,
                        subscription_id: str | None, lines: list[InvoiceLine]) -> Invoice:
        self.stats.invoices += 1
        invoice = Invoice(
            id=invoice_id, customer_id=cust.customer.id, currency=currency, amount_due=amount, amount_paid=0,
            amount_remaining=amount, status="open", created=at, number=f"SIM-{invoice_id[3:].upper()}",
            subscription_id=subscription_id, billing_reason="subscription_cycle" if subscription_id else "manual",
            hosted_invoice_url=HOSTED + invoice_id, customer_email=cust.customer.email,
            customer_name=cust.customer.name, payment_method_id=cust.method.id,
            payment_method_type=cust.method.type, lines=lines, auto_advance=True)
        self._invoices[invoice_id] = invoice
        self._state[invoice_id] = _InvoiceState()
        return invoice

    def _settle(self, invoice: Invoice, at: datetime) -> None:
        """A charge that succeeded first time. Synced, as Stripe's `invoice.paid` is: nothing in dunning reads it,
        but pre-dunning does (the usual amount of a metered plan is the mean of its last paid invoices; whether a
        renewal was paid on the first attempt, reminded or not)."""
        invoice.status, invoice.amount_paid, invoice.amount_remaining, invoice.paid_at = "paid", invoice.amount_due, 0, at
        invoice.attempt_count = 1
        self._touch("invoice", invoice.id)

    def _draw_decline(self, rng: random.Random, cust: _CustomerState) -> Decline:
        a = self.assumptions
        if cust.method.type == "us_bank_account":
            code = pick(rng, a.ach_returns)
            return Decline(code=ACH_FAILURE_CODES[code], failure_code=code, payment_method_type="us_bank_account",
                           message=f"ACH return {code}")
        mix = dict(a.card_declines)
        if cust.profile and cust.profile.currency in ("eur", "gbp"):
            mix["authentication_required"] *= a.sca_multiplier
        return card_decline(pick(rng, mix))

    # -- failures ---------------------------------------------------------------------------------------------

    def _on_fail(self, at: datetime, invoice_id: str, decline: Decline) -> None:
        invoice, st = self._invoices[invoice_id], self._state[invoice_id]
        if invoice.status != "open":
            return
        first = invoice.first_failed_at is None
        self._record_failure(invoice, at, decline)
        if not first:
            return
        self.stats.failed += 1
        st.failure_type = classify(decline)
        cust = self._customers[invoice.customer_id]
        cust.failed.append(invoice_id)
        if st.failure_type in NEEDS_NEW_METHOD:
            cust.blocked_by = decline
        if not self.customers_respond:
            return
        a = self.assumptions
        rng = self._rng("failure", invoice_id)
        if st.failure_type in a.retry_recoverable and rng.random() < a.retry_recoverable[st.failure_type]:
            days = a.funds_return_median_days * math.exp(rng.gauss(0, a.funds_return_sigma))
            st.clears_at = at + timedelta(days=days)
        usage = bool(cust.profile and cust.profile.usage_based)
        if rng.random() < a.dispute_rate["usage" if usage else "flat"]:
            self._schedule(at + timedelta(days=rng.uniform(*a.dispute_delay_days)), "dispute", invoice_id)
        if decline.decline_code == "expired_card" and rng.random() < a.card_updater_share:
            self._schedule(at + timedelta(days=rng.uniform(*a.card_updater_days)), "card_updater", invoice_id)
        organic_days = rng.expovariate(a.organic_daily_rate)
        if organic_days < 400:
            self._schedule(at + timedelta(days=organic_days), "respond", invoice_id, "organic", 0)
        if self.smart_retries and st.failure_type not in NEVER_RETRY:
            for n, day in enumerate(self.assumptions.smart_retry_days):
                self._schedule(at + timedelta(days=day, hours=rng.uniform(-6, 6)), "smart_retry", invoice_id, n)

    def _record_failure(self, invoice: Invoice, at: datetime, decline: Decline) -> None:
        invoice.attempt_count += 1
        invoice.first_failed_at = invoice.first_failed_at or at
        invoice.failed_at = at
        invoice.decline = decline
        invoice.next_payment_attempt = self._next_smart_retry(invoice)
        self._touch("invoice", invoice.id)
        self._set_subscription_status(invoice, "past_due")

    def _next_smart_retry(self, invoice: Invoice) -> datetime | None:
        if not (self.smart_retries and invoice.auto_advance):
            return None
        times = [at for at, _, kind, args in self._queue if kind == "smart_retry" and args[0] == invoice.id]
        return min(times) if times else None

    def _set_subscription_status(self, invoice: Invoice, status: str) -> None:
        sub = self._subscriptions.get(invoice.subscription_id or "")
        if sub is None or sub.subscription.status in ("canceled", "paused"):
            return
        if status == "active" and any(i.status == "open" and i.first_failed_at and i.subscription_id == sub.subscription.id
                                      for i in self._invoices.of_customer(invoice.customer_id)):
            return
        if sub.subscription.status != status:
            sub.subscription.status = status
            self._touch("subscription", sub.subscription.id)

    # -- payment attempts -------------------------------------------------------------------------------------

    def _attempt(self, invoice: Invoice, at: datetime, source: str) -> Decline | None:
        """One payment attempt on the invoice's payment method. Returns the decline, or None when it was paid."""
        st = self._state[invoice.id]
        cust = self._customers[invoice.customer_id]
        if source == "provider_retry":
            self.stats.provider_retries += 1
        else:
            self.stats.dunctl_retries += 1
        if st.scripted:
            succeeds, code = st.scripted.pop(0)
            decline = None if succeeds else card_decline(code or "generic_decline", invoice.payment_method_type)
        elif not self.customers_respond:
            decline = invoice.decline or card_decline("generic_decline")
        else:
            chance = self._rng("attempt", invoice.id, invoice.attempt_count).random()
            a = self.assumptions
            changed = cust.method_changed_at is not None and cust.method_changed_at > (invoice.first_failed_at or at)
            if changed:
                succeeds = chance < a.retry_success_after_update
            elif st.failure_type in NEVER_RETRY or st.failure_type in NEEDS_NEW_METHOD:
                succeeds = False
            else:
                succeeds = st.clears_at is not None and at >= st.clears_at and chance < a.retry_success_when_clear
            decline = None if succeeds else invoice.decline or card_decline("generic_decline")
        if decline is None:
            self._pay(invoice, at, source)
        else:
            self._record_failure(invoice, at, decline)
        return decline

    def _pay(self, invoice: Invoice, at: datetime, source: str) -> None:
        invoice.status, invoice.amount_paid, invoice.amount_remaining = "paid", invoice.amount_due, 0
        invoice.paid_at, invoice.next_payment_attempt = at, None
        invoice.attempt_count += 1 if source in ("provider_retry", "retry") else 0
        self.stats.recovered_by[source] += 1
        self._touch("invoice", invoice.id)
        self._set_subscription_status(invoice, "active")

    def _on_smart_retry(self, at: datetime, invoice_id: str, n: int) -> None:
        invoice = self._invoices[invoice_id]
        sub = self._subscriptions.get(invoice.subscription_id or "")
        if invoice.status != "open" or not invoice.auto_advance or (sub and sub.subscription.status == "paused"):
            return
        self._attempt(invoice, at, "provider_retry")
