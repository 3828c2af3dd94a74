"""What the customers of a simulated account do: pay, replace a payment method, dispute, answer a message or a
person, at rates that depend on the channel, the day of the case and what the message said.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta

from dunctl.model import Invoice, Signal
from dunctl.simulation.world import NEEDS_NEW_METHOD, World, _CustomerState


class Customers(World):
    """Part of SimulatedAccount (dunctl/simulation/account.py)."""

    def _on_dispute(self, at: datetime, invoice_id: str) -> None:
        invoice, st = self._invoices[invoice_id], self._state[invoice_id]
        if invoice.status != "open" or st.disputed:
            return
        st.disputed = True
        self.stats.disputes += 1
        self._touch("signal", Signal(kind="dispute", at=at, invoice_id=invoice_id, customer_id=invoice.customer_id,
                                     detail="charge.dispute.created (reason: general)",
                                     source_id=f"sim_dp_{invoice_id}"))

    def _on_card_updater(self, at: datetime, invoice_id: str) -> None:
        invoice = self._invoices[invoice_id]
        cust = self._customers[invoice.customer_id]
        if invoice.status != "open" or (cust.method_changed_at and cust.method_changed_at > invoice.first_failed_at):
            return
        self._replace_method(cust, at, "payment_method.automatically_updated (card updater)")
        if self.smart_retries and invoice.auto_advance:
            self._schedule(at + timedelta(hours=1), "smart_retry", invoice_id, -1)

    def _replace_method(self, cust: _CustomerState, at: datetime, detail: str) -> None:
        old = cust.method
        pm_id = f"{old.id[:-1]}{chr(ord('a') + cust.methods)}" if cust.methods < 26 else f"{old.id}x"
        cust.methods += 1
        cust.method = self._new_method(cust.customer.id, pm_id, old.type, old.brand, at, cust.methods)
        cust.method_changed_at, cust.blocked_by = at, None
        cust.customer = dataclasses.replace(cust.customer, default_payment_method_id=pm_id)   # pre-dunning
        self._touch("customer", cust.customer.id)
        self.stats.methods_replaced += 1
        self._touch("payment_method", pm_id)
        for invoice in self._invoices.of_customer(cust.customer.id):
            if invoice.status == "open" and invoice.first_failed_at:
                invoice.payment_method_id, invoice.payment_method_type = pm_id, old.type
                self._touch("invoice", invoice.id)
        self._touch("signal", Signal(kind="payment_method_updated", at=at, customer_id=cust.customer.id,
                                     payment_method_id=pm_id, detail=detail, source_id=f"sim_pm_{pm_id}"))

    def _on_respond(self, at: datetime, invoice_id: str, source: str, n: int) -> None:
        """The customer acts on the invoice: pays it on the hosted page, or replaces the payment method."""
        invoice, st = self._invoices[invoice_id], self._state[invoice_id]
        st.responding = False
        if invoice.status != "open" or st.disputed:
            return
        self.stats.responses[source] += 1
        cust = self._customers[invoice.customer_id]
        if source != "scripted" and cust.blocked_by is not None or st.failure_type in NEEDS_NEW_METHOD:
            if cust.blocked_by is not None or not (cust.method_changed_at and cust.method_changed_at > invoice.first_failed_at):
                self._replace_method(cust, at, "payment_method.updated (customer)")
            if st.link_kind == "billing_portal":
                # The portal replaces the method; the invoice itself waits for the next retry.
                if self.smart_retries and invoice.auto_advance:
                    self._schedule(at + timedelta(hours=1), "smart_retry", invoice_id, -1)
                return
        self._pay(invoice, at, source)

    def _maybe_respond(self, invoice_id: str, at: datetime, chance: float, source: str, delay: timedelta | None = None):
        invoice, st = self._invoices.get(invoice_id), self._state.get(invoice_id)
        if invoice is None or invoice.status != "open" or st.disputed or not self.customers_respond:
            return
        st.messages += 1
        rng = self._rng("respond", invoice_id, source, st.messages)
        if rng.random() >= chance or st.responding:
            return
        if delay is None:
            hours = self.assumptions.response_delay_median_hours * math.exp(rng.gauss(0, 1.0))
            delay = timedelta(hours=min(hours, 24 * 7))
        delay *= self.assumptions.response_delay_scale
        st.responding = True
        self._schedule(at + delay, "respond", invoice_id, source, st.messages)

    def _day_factor(self, invoice: Invoice, at: datetime) -> float:
        days = (at - (invoice.first_failed_at or at)).total_seconds() / 86400
        factor = 1.0
        for since, value in self.assumptions.day_factor:
            if days >= since:
                factor = value
        return factor

    # -- hooks the driver calls after each tick ---------------------------------------------------------------

    def message_delivered(self, invoice_id: str, channel: str, at: datetime, *, recipient: str | None = None,
                          personalised: bool = False) -> None:
        """dunctl sent the customer an email or SMS about this invoice at `at`."""
        invoice = self._invoices.get(invoice_id)
        if invoice is None:
            return
        a = self.assumptions
        st = self._state[invoice_id]
        chance = (a.sms_response if channel == "sms" else a.email_response) * self._day_factor(invoice, at)
        chance *= a.repeat_factor ** st.messages
        if not personalised and channel != "sms":
            chance /= a.personalised_lift
        cust = self._customers[invoice.customer_id]
        billing = cust.customer.metadata.get("billing_email")
        # A message may go to several addresses ("ap@x.test, cfo@x.test"): it reaches the billing contact when
        # the billing contact is among them.
        reached = {address.strip().lower() for address in (recipient or "").split(",")}
        if channel == "email" and billing and recipient and billing.lower() not in reached:
            chance *= a.wrong_recipient_reach
        if st.link_kind == "billing_portal":
            chance *= 1 - a.extra_step_loss
        self._maybe_respond(invoice_id, at, min(chance, 0.95), channel)

    def escalated(self, invoice_id: str, at: datetime) -> None:
        """A person was asked to follow the invoice up (escalation step)."""
        invoice = self._invoices.get(invoice_id)
        if invoice is None:
            return
        a = self.assumptions
        profile = self._customers[invoice.customer_id].profile
        key = "b2c" if profile is None else ("enterprise" if profile.tier == "enterprise" else profile.kind)
        days = self._rng("escalation", invoice_id).uniform(*a.escalation_delay_days)
        self._maybe_respond(invoice_id, at, a.escalation_response[key], "person", timedelta(days=days))
