"""Pre-dunning in a simulated account (dunctl/notices): cards that expire, subscription periods and their usage,
upcoming-invoice previews, and customers acting on a notice (a renewal reminded, a usage alert opened, a card
updated before it fails).
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta

from dunctl.model import Invoice, InvoiceLine, PaymentMethod, UsagePreview
from dunctl.notices.planner import card_expires_at
from dunctl.simulation.world import InvalidRequest, World, _InvoiceState, add_months, draw_usage


class PreDunning(World):
    """Part of SimulatedAccount (dunctl/simulation/account.py)."""

    def _expiring_card(self, method: PaymentMethod) -> None:
        """A share of cards expire at the end of the simulation's first or second month."""
        rng = self._rng("expiring", method.id)
        if method.type != "card" or rng.random() >= self.assumptions.card_expiring_share:
            return
        month = add_months(self.start.replace(day=1), rng.randint(0, 1))
        method.exp_month, method.exp_year = month.month, month.year

    @staticmethod
    def _expired(method: PaymentMethod, at: datetime) -> bool:
        if method.type != "card" or not method.exp_month:
            return False
        return card_expires_at(method.exp_month, method.exp_year) <= at

    def _period_bounds(self, subscription_id: str, period: int) -> tuple[datetime, datetime]:
        """Period `period` starts at renewal `period` (0: the first renewal in the simulation). Worked out once
        per period: every usage preview asks again (a subscription's profile never changes)."""
        bounds = self._drawn.get(("bounds", subscription_id, period))
        if bounds is None:
            p = self._subscriptions[subscription_id].profile
            months = 12 if p.interval == "year" else 1
            first = self.start + p.anchor
            bounds = self._drawn[("bounds", subscription_id, period)] = (add_months(first, (period - 1) * months),
                                                                          add_months(first, period * months))
        return bounds

    def _billing_terms(self, subscription_id: str, first: datetime, period: int) -> None:
        """The subscription's current period (the one before renewal `period`) and what renews then."""
        sub = self._subscriptions[subscription_id]
        p = sub.profile
        start, end = self._period_bounds(subscription_id, period)
        amount = p.base_amount * 2 // 5 if p.usage_based else p.base_amount
        sub.subscription = dataclasses.replace(sub.subscription, current_period_start=start, current_period_end=end,
                                               interval=p.interval, amount=amount, currency=p.currency)
        sub.period = period
        self._touch("subscription", subscription_id)

    def _usage(self, subscription_id: str, period: int) -> tuple[int, int, bool]:
        """(fee, usage, spike) of renewal `period`: the same draws `_on_bill` makes, so a preview agrees with the
        invoice that follows. Drawn once per renewal: every usage preview of the period asks again, and seeding a
        generator was most of a preview's cost in the demo."""
        drawn = self._drawn.get(("usage", subscription_id, period))
        if drawn is None:
            profile = self._subscriptions[subscription_id].profile
            drawn = self._drawn[("usage", subscription_id, period)] = draw_usage(
                self._rng("bill", subscription_id, period), profile, self.assumptions)
        return drawn

    def _paid_history(self, subscription_id: str) -> None:
        """The three invoices a metered subscription paid before the simulation (what its usage usually costs),
        without spikes."""
        sub = self._subscriptions[subscription_id]
        p = sub.profile
        if not p.usage_based:
            return
        cust = self._customers[p.id]
        for back in (3, 2, 1):
            start, _ = self._period_bounds(subscription_id, -back + 1)
            rng = self._rng("history", subscription_id, back)
            fee = p.base_amount * 2 // 5
            usage = int((p.base_amount - fee) * math.exp(rng.gauss(0, self.assumptions.usage_sigma)))
            invoice = Invoice(id=f"in_{subscription_id[4:]}_h{back}", customer_id=p.id, currency=p.currency,
                              amount_due=fee + usage, amount_paid=fee + usage, amount_remaining=0, status="paid",
                              created=start, subscription_id=subscription_id, billing_reason="subscription_cycle",
                              customer_email=cust.customer.email, payment_method_id=cust.method.id,
                              payment_method_type=cust.method.type, paid_at=start + timedelta(hours=1),
                              attempt_count=1)
            self._invoices[invoice.id] = invoice
            self._state[invoice.id] = _InvoiceState()
            self._touch("invoice", invoice.id)

    def _failure_rate(self, subscription_id: str, period: int, spike: bool) -> float:
        a = self.assumptions
        sub = self._subscriptions[subscription_id]
        extra = a.usage_spike_failure_multiplier - 1 if spike else 0
        if spike and period in sub.alerted:
            extra *= 1 - a.usage_alert_cut_given_open
        rate = a.invoice_failure_rate * (1 + extra)
        if period in sub.reminded:
            rate *= 1 - a.renewal_reminder_cut_given_open
        return rate

    def preview_invoice(self, subscription_id: str) -> UsagePreview:
        """The upcoming invoice so far: the fee plus the next renewal's usage, accrued over the current period."""
        self.requests += 1
        sub = self._subscription(subscription_id)
        if sub.subscription.status == "canceled":
            raise InvalidRequest(f"no upcoming invoice for {subscription_id}: it is cancelled")
        start, end = self._period_bounds(subscription_id, sub.period)
        fee, usage, _ = self._usage(subscription_id, sub.period)
        elapsed = min(1.0, max(0.0, (self.now - start) / (end - start)))
        so_far = int(usage * elapsed)
        lines = [InvoiceLine("Platform fee", fee, 1, period_start=start, period_end=end),
                 InvoiceLine("Metered usage", so_far, None, metered=True, period_start=start, period_end=end)]
        return UsagePreview(subscription_id, sub.profile.currency, fee + so_far, start, end, lines)

    def notice_delivered(self, kind: str, object_id: str, at: datetime) -> None:
        """dunctl sent a pre-dunning notice about a card or a subscription: the customer may open it and act
        (update the card, make sure the renewal or the usage charge will go through)."""
        owner = self._methods.get(object_id) or self._subscriptions.get(object_id)
        if owner is None:
            return
        customer_id = owner.customer_id if isinstance(owner, PaymentMethod) else owner.subscription.customer_id
        cust = self._customers.get(customer_id)
        if cust is None or not self.customers_respond:
            return
        a = self.assumptions
        rng = self._rng("notice", kind, object_id, at.isoformat())
        if rng.random() >= a.notice_open_rate:
            return
        self.stats.responses[f"opened {kind}"] += 1
        if kind == "card_expiring":
            if rng.random() < a.expiry_update_given_open:
                self._schedule(at + timedelta(days=rng.uniform(*a.notice_action_days)), "expiry_update",
                               customer_id, object_id)
            return
        sub = self._subscriptions.get(object_id)
        if sub is None:
            return
        if kind == "upcoming_renewal":
            sub.reminded.add(sub.period)
        else:
            sub.alerted.add(sub.period)

    def _on_expiry_update(self, at: datetime, customer_id: str, method_id: str) -> None:
        cust = self._customers[customer_id]
        if cust.method.id == method_id:
            self.stats.responses["card updated after an expiry notice"] += 1
            self._replace_method(cust, at, "payment_method.updated (after an expiry notice)")
