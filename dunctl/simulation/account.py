"""`SimulatedAccount`: a Stripe account played in-process, implementing the Gateway protocol.

It bills a synthetic book of customers on their renewal dates, fails invoices at the rates and with the decline
codes in `assumptions`, runs Stripe's Smart Retries when dunctl leaves retries to Stripe, and lets customers
respond to what dunctl does: a retry succeeds depending on the failure type and the time since the failure, a
message prompts a payment or a card update depending on channel, day and personalisation, and a hard decline
recovers only after the customer replaces the payment method.

Time is the account's own simulated clock, moved forward by the driver (`advance_to`); `sync(now)` also moves it.
Randomness is `random.Random` seeded from (seed, what is being decided, which invoice, which attempt), never the
global generator or the wall clock: the same seed gives the same world, and two configs run on the same seed meet
the same customers with the same luck, so their differences are the configs' doing.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dunctl.errors import GatewayError
from dunctl.failures import (BANK_HARD, BANK_METHOD_TYPES, CARD_HARD, CARD_UPDATE, NEVER_RETRY,
                             Decline, classify)
from dunctl.model import (Customer, Invoice, InvoiceLine, PaymentMethod, PaymentOutcome, Signal, Subscription,
                          SyncBatch, UsagePreview)
from dunctl.simulation.assumptions import DEFAULT, Assumptions
from dunctl.simulation.population import SimCustomer, pick

# Failure types a customer fixes by giving a new payment method (a retry on the old one cannot succeed).
NEEDS_NEW_METHOD = frozenset({CARD_HARD, CARD_UPDATE, BANK_HARD})
# Decline codes Stripe reports as the error code itself rather than as card_declined + decline_code.
OWN_ERROR_CODES = frozenset({"expired_card", "incorrect_cvc", "incorrect_number", "processing_error",
                             "authentication_required", "invalid_expiry_year"})
# ACH return codes and the failure_code Stripe puts on the charge for them.
ACH_FAILURE_CODES = {"R01": "insufficient_funds", "R09": "insufficient_funds", "R02": "account_closed",
                     "R03": "no_account", "R04": "invalid_account_number", "R10": "debit_not_authorized",
                     "R16": "account_frozen", "R20": "bank_account_restricted"}
BATCH_SIZE = 200
HOSTED = "https://invoice.stripe.test/i/"
PORTAL = "https://billing.stripe.test/p/session/"


class UnknownObject(GatewayError):
    """The simulated account has no such invoice or subscription (Stripe's resource_missing)."""

    def __init__(self, message: str):
        super().__init__(message, code="resource_missing")


class InvalidRequest(GatewayError):
    """A request Stripe would refuse (paying a void invoice, re-using an idempotency key with other arguments)."""

    def __init__(self, message: str):
        super().__init__(message, code="invalid_request")


@dataclass
class HistoricalInvoice:
    """A failed invoice as a ledger recorded it, for `simulate --from-ledger` to replay."""

    invoice_id: str
    customer: Customer
    subscription_id: str | None
    usage_based: bool
    currency: str
    amount_due: int
    lines: list[InvoiceLine]
    billing_reason: str | None
    payment_method_id: str
    payment_method_type: str
    created: datetime
    first_failed_at: datetime
    decline: Decline                 # the first failure's codes


@dataclass
class _CustomerState:
    profile: SimCustomer | None
    customer: Customer
    method: PaymentMethod
    blocked_by: Decline | None = None          # a hard decline on the current method: every charge fails so
    method_changed_at: datetime | None = None  # when the customer (or the card updater) replaced the method
    methods: int = 1
    last_charge: tuple[datetime, Decline | None] | None = None   # the latest renewal charge: when, how it failed
    failed: list[str] = field(default_factory=list)              # invoices that failed, oldest first


@dataclass
class _InvoiceState:
    """What the account knows about an invoice that Stripe would not show: the customer's hidden situation."""

    failure_type: str | None = None
    clears_at: datetime | None = None          # a soft decline's cause goes away (funds back) at this time
    messages: int = 0
    link_kind: str = "hosted_invoice"
    disputed: bool = False
    scripted: list[tuple[bool, str | None]] = field(default_factory=list)   # outcomes of the next attempts
    responding: bool = False                   # a response is already scheduled


@dataclass
class _SubscriptionState:
    subscription: Subscription
    profile: SimCustomer | None
    period: int = 0
    reminded: set = field(default_factory=set)   # renewals whose customer opened a reminder (pre-dunning)
    alerted: set = field(default_factory=set)    # renewals whose customer opened a usage alert


@dataclass
class Stats:
    """What happened inside the account, for `simulate` and the demo summary."""

    invoices: int = 0
    failed: int = 0
    provider_retries: int = 0
    dunctl_retries: int = 0
    recovered_by: Counter = field(default_factory=Counter)
    responses: Counter = field(default_factory=Counter)
    methods_replaced: int = 0
    disputes: int = 0


def add_months(moment: datetime, months: int) -> datetime:
    month0 = moment.month - 1 + months
    year, month = moment.year + month0 // 12, month0 % 12 + 1
    days_in_month = [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31, 30, 31, 31,
                     30, 31, 30, 31][month - 1]
    return moment.replace(year=year, month=month, day=min(moment.day, days_in_month))


def add_business_days(moment: datetime, days: int) -> datetime:
    while days > 0:
        moment += timedelta(days=1)
        if moment.weekday() < 5:
            days -= 1
    return moment


class SimulatedAccount:
    """A Stripe account in-process. Build it with `SimulatedAccount(book, seed=..., start=...)` for the demo, or
    `SimulatedAccount([], seed=0, start=..., customers_respond=False)` and the `script_*` hooks for tests."""

    mode = "simulated"
    stripe_date = None    # no provider clock apart from the simulation's own, which is the tick's

    def __init__(self, book: list[SimCustomer], *, seed: int, start: datetime, smart_retries: bool = False,
                 bill_until: datetime | None = None, assumptions: Assumptions = DEFAULT,
                 customers_respond: bool = True):
        self.seed = seed
        self.start = self.now = start
        self.smart_retries = smart_retries
        self.bill_until = bill_until
        self.assumptions = assumptions
        self.customers_respond = customers_respond
        self.requests = 0
        self.stats = Stats()
        self._queue: list[tuple[datetime, int, str, tuple]] = []
        self._order = 0
        self._log: list[tuple[str, object]] = []         # (kind, id or Signal); entry i has seq i + 1
        self._customers: dict[str, _CustomerState] = {}
        self._methods: dict[str, PaymentMethod] = {}
        self._subscriptions: dict[str, _SubscriptionState] = {}
        self._invoices: dict[str, Invoice] = {}
        self._state: dict[str, _InvoiceState] = {}
        self._idempotent: dict[str, tuple[tuple, object]] = {}
        for profile in book:
            self._add_customer(profile)

    # -- randomness and time ----------------------------------------------------------------------------------

    def _rng(self, *parts) -> random.Random:
        """A generator for one decision, named by what is decided: independent of the order things happen in."""
        return random.Random("/".join(map(str, (self.seed, *parts))))

    def _schedule(self, at: datetime, kind: str, *args) -> None:
        self._order += 1
        heapq.heappush(self._queue, (at, self._order, kind, args))

    def advance_to(self, now: datetime) -> None:
        """Let simulated time run until `now`: renewals, Stripe's retries, customers acting. Never goes back."""
        while self._queue and self._queue[0][0] <= now:
            at, _, kind, args = heapq.heappop(self._queue)
            self.now = max(self.now, at)
            getattr(self, f"_on_{kind}")(at, *args)
        self.now = max(self.now, now)

    def _touch(self, kind: str, key) -> None:
        self._log.append((kind, key))

    # -- the book ---------------------------------------------------------------------------------------------

    def _add_customer(self, p: SimCustomer) -> None:
        metadata = {"kind": p.kind, "tier": p.tier}
        if p.billing_email:
            metadata["billing_email"] = p.billing_email
        if p.tier == "enterprise":
            metadata["account_manager_email"] = "account-managers@dunctl-demo.test"
        customer = Customer(id=p.id, name=p.name, email=p.email, phone=p.phone, metadata=metadata,
                            preferred_locale=p.locale, timezone=p.timezone, default_payment_method_id=p.payment_method_id)
        method = self._new_method(p.id, p.payment_method_id, p.method_type, p.brand, None, index=0)
        self._expiring_card(method)
        self._customers[p.id] = _CustomerState(p, customer, method)
        subscription = Subscription(id=p.subscription_id, customer_id=p.id, status="active",
                                    metadata={"plan": f"{p.tier}-{p.interval}ly", "interval": p.interval},
                                    usage_based=p.usage_based)
        self._subscriptions[p.subscription_id] = _SubscriptionState(subscription, p)
        self._billing_terms(p.subscription_id, self.start + p.anchor, 0)
        self._paid_history(p.subscription_id)
        self._touch("customer", p.id)
        self._touch("payment_method", method.id)
        self._touch("subscription", p.subscription_id)
        self._schedule(self.start + p.anchor, "bill", p.subscription_id, 0)
        for add_on in p.add_ons:
            # Billed on the main plan's date, scheduled after it: the card is charged for the plan, then the add-on.
            profile = dataclasses.replace(p, subscription_id=add_on.subscription_id, base_amount=add_on.base_amount,
                                          usage_based=False, add_ons=(), plan=add_on.description)
            subscription = Subscription(id=add_on.subscription_id, customer_id=p.id, status="active",
                                        metadata={"plan": f"add-on: {add_on.description}", "interval": p.interval})
            self._subscriptions[add_on.subscription_id] = _SubscriptionState(subscription, profile)
            self._billing_terms(add_on.subscription_id, self.start + p.anchor, 0)
            self._touch("subscription", add_on.subscription_id)
            self._schedule(self.start + p.anchor, "bill", add_on.subscription_id, 0)

    def _new_method(self, customer_id: str, pm_id: str, method_type: str, brand: str | None, at, index: int):
        rng = self._rng("method", pm_id)
        card = method_type == "card"
        method = PaymentMethod(id=pm_id, customer_id=customer_id, type=method_type, brand=brand if card else None,
                               last4=f"{rng.randrange(10000):04d}", exp_month=rng.randint(1, 12) if card else None,
                               exp_year=self.start.year + rng.randint(1, 4) if card else None, updated_at=at)
        self._methods[pm_id] = method
        return method

    # -- billing ----------------------------------------------------------------------------------------------

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
            fee = p.base_amount * 2 // 5
            usage = (p.base_amount - fee) * math.exp(rng.gauss(0, a.usage_sigma))
            if rng.random() < a.usage_spike_share:
                spike = True
                usage *= rng.uniform(*a.usage_spike_factor)
            usage = int(round(usage, -2 if p.currency == "jpy" else 0))
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
                                      for i in self._invoices.values() if i.customer_id == invoice.customer_id):
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

    # -- what customers do ------------------------------------------------------------------------------------

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
        for invoice in self._invoices.values():
            if invoice.customer_id == cust.customer.id and invoice.status == "open" and invoice.first_failed_at:
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

    # -- pre-dunning (dunctl/notices) ---------------------------------------------------------------------------

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
        from dunctl.notices.planner import card_expires_at

        return card_expires_at(method.exp_month, method.exp_year) <= at

    def _period_bounds(self, subscription_id: str, period: int) -> tuple[datetime, datetime]:
        """Period `period` starts at renewal `period` (0: the first renewal in the simulation)."""
        p = self._subscriptions[subscription_id].profile
        months = 12 if p.interval == "year" else 1
        first = self.start + p.anchor
        return add_months(first, (period - 1) * months), add_months(first, period * months)

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
        invoice that follows."""
        p, a = self._subscriptions[subscription_id].profile, self.assumptions
        rng = self._rng("bill", subscription_id, period)
        fee = p.base_amount * 2 // 5
        usage = (p.base_amount - fee) * math.exp(rng.gauss(0, a.usage_sigma))
        spike = rng.random() < a.usage_spike_share
        if spike:
            usage *= rng.uniform(*a.usage_spike_factor)
        return fee, int(round(usage, -2 if p.currency == "jpy" else 0)), spike

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

    # -- Gateway ----------------------------------------------------------------------------------------------

    def account_id(self) -> str:
        return "acct_simulated"

    def sync_subscriptions(self, after: str | None = None) -> Iterator[tuple[SyncBatch, str | None]]:
        return iter(())    # `sync` already carries every subscription, as its events would

    def sync(self, cursor: dict | None, now: datetime, full: bool = False) -> Iterator[SyncBatch]:
        """Everything that changed since `cursor` ({"seq": n}), oldest first, in batches of BATCH_SIZE changes."""
        self.requests += 1
        self.advance_to(now)
        since = 0 if full or not cursor else int(cursor.get("seq", 0))
        end = len(self._log)
        for low in range(since, end, BATCH_SIZE):
            high = min(low + BATCH_SIZE, end)
            if low > since:
                self.requests += 1
            yield self._batch(self._log[low:high], high)

    def _batch(self, entries: list[tuple[str, object]], seq: int) -> SyncBatch:
        batch = SyncBatch(cursor={"seq": seq}, requests=1, events=len(entries))
        seen: set[tuple[str, str]] = set()
        for kind, key in entries:
            if kind == "signal":
                batch.signals.append(key)
                continue
            if (kind, key) in seen:
                continue
            seen.add((kind, key))
            if kind == "customer":
                c = self._customers[key].customer
                batch.customers.append(dataclasses.replace(c, metadata=dict(c.metadata)))
            elif kind == "payment_method":
                batch.payment_methods.append(dataclasses.replace(self._methods[key]))
            elif kind == "subscription":
                s = self._subscriptions[key].subscription
                batch.subscriptions.append(dataclasses.replace(s, metadata=dict(s.metadata)))
            elif kind == "invoice":
                batch.invoices.append(self._snapshot(key))
        return batch

    def _snapshot(self, invoice_id: str) -> Invoice:
        invoice = self._invoices[invoice_id]
        return dataclasses.replace(invoice, metadata=dict(invoice.metadata),
                                   lines=[dataclasses.replace(line) for line in invoice.lines])

    def _invoice(self, invoice_id: str) -> Invoice:
        try:
            return self._invoices[invoice_id]
        except KeyError:
            raise UnknownObject(f"No such invoice: '{invoice_id}'")

    def _once(self, key: str, args: tuple, call):
        """Stripe's idempotency: the same key returns the first result; the same key with other arguments fails."""
        if key in self._idempotent:
            first_args, result = self._idempotent[key]
            if first_args != args:
                raise InvalidRequest(f"idempotency key '{key}' was used with other parameters")
            return result
        result = call()
        self._idempotent[key] = (args, result)
        return result

    def get_invoice(self, invoice_id: str) -> Invoice:
        self.requests += 1
        return self._snapshot(self._invoice(invoice_id).id)

    def pay_invoice(self, invoice_id: str, idempotency_key: str, payment_method: str | None = None
                    ) -> PaymentOutcome:
        self.requests += 1

        def pay() -> PaymentOutcome:
            invoice = self._invoice(invoice_id)
            if invoice.status == "paid":
                return PaymentOutcome(succeeded=True, invoice=self._snapshot(invoice_id), detail="already paid")
            if invoice.status == "void":
                raise InvalidRequest(f"invoice {invoice_id} is void and cannot be paid")
            decline = self._attempt(invoice, self.now, "retry")
            request_id = f"req_sim_{self.requests:08d}"
            if decline is None:
                return PaymentOutcome(True, self._snapshot(invoice_id), request_id=request_id, detail="paid")
            return PaymentOutcome(False, self._snapshot(invoice_id), decline, request_id,
                                  f"declined: {decline.shown_code}")

        return self._once(idempotency_key, ("pay", invoice_id), pay)

    def disable_automatic_retries(self, invoice_id: str, idempotency_key: str) -> None:
        self.requests += 1

        def disable() -> None:
            invoice = self._invoice(invoice_id)
            if invoice.auto_advance:
                invoice.auto_advance, invoice.next_payment_attempt = False, None
                self._touch("invoice", invoice_id)

        self._once(idempotency_key, ("disable", invoice_id), disable)

    def mark_invoice(self, invoice_id: str, metadata: dict[str, str], idempotency_key: str) -> None:
        self.requests += 1

        def mark() -> None:
            invoice = self._invoice(invoice_id)
            if any(invoice.metadata.get(k) != v for k, v in metadata.items()):
                invoice.metadata.update(metadata)
                self._touch("invoice", invoice_id)

        self._once(idempotency_key, ("metadata", invoice_id, tuple(sorted(metadata.items()))), mark)

    def mark_uncollectible(self, invoice_id: str, idempotency_key: str) -> Invoice:
        self.requests += 1

        def mark() -> Invoice:
            invoice = self._invoice(invoice_id)
            if invoice.status == "open":
                invoice.status, invoice.marked_uncollectible_at = "uncollectible", self.now
                invoice.next_payment_attempt = None
                self._touch("invoice", invoice_id)
            elif invoice.status != "uncollectible":
                raise InvalidRequest(f"invoice {invoice_id} is {invoice.status}; only an open invoice can be "
                                     f"marked uncollectible")
            return self._snapshot(invoice_id)

        return self._once(idempotency_key, ("uncollectible", invoice_id), mark)

    def _subscription(self, subscription_id: str) -> _SubscriptionState:
        try:
            return self._subscriptions[subscription_id]
        except KeyError:
            raise UnknownObject(f"No such subscription: '{subscription_id}'")

    def pause_subscription(self, subscription_id: str, behavior: str, idempotency_key: str) -> None:
        self.requests += 1

        def pause() -> None:
            sub = self._subscription(subscription_id).subscription
            if sub.status == "canceled":
                raise InvalidRequest(f"subscription {subscription_id} is canceled and cannot be paused")
            if sub.status != "paused":
                sub.status, sub.pause_behavior = "paused", behavior
                self._touch("subscription", subscription_id)
                self._after_service_loss(subscription_id, self.assumptions.suspension_response, "suspension")

        self._once(idempotency_key, ("pause", subscription_id, behavior), pause)

    def resume_subscription(self, subscription_id: str, idempotency_key: str) -> None:
        self.requests += 1

        def resume() -> None:
            sub = self._subscription(subscription_id).subscription
            if sub.status == "canceled":
                raise InvalidRequest(f"subscription {subscription_id} is canceled and cannot be resumed")
            if sub.status == "paused":
                sub.status, sub.pause_behavior = "active", None
                self._touch("subscription", subscription_id)

        self._once(idempotency_key, ("resume", subscription_id), resume)

    def cancel_subscription(self, subscription_id: str, comment: str, idempotency_key: str) -> None:
        self.requests += 1

        def cancel() -> None:
            sub = self._subscription(subscription_id).subscription
            if sub.status != "canceled":
                sub.status, sub.canceled_at = "canceled", self.now
                sub.metadata["cancellation_comment"] = comment
                self._touch("subscription", subscription_id)
                self._after_service_loss(subscription_id, self.assumptions.cancellation_winback, "winback")

        self._once(idempotency_key, ("cancel", subscription_id, comment), cancel)

    def _after_service_loss(self, subscription_id: str, chance: float, source: str) -> None:
        for invoice in list(self._invoices.values()):
            if invoice.subscription_id == subscription_id and invoice.status == "open" and invoice.first_failed_at:
                days = self._rng("service_loss", invoice.id).uniform(1, 7)
                self._maybe_respond(invoice.id, self.now, chance, source, timedelta(days=days))

    def update_link(self, invoice: Invoice, kind: str, return_url: str | None, idempotency_key: str) -> str:
        self.requests += 1
        if kind == "billing_portal" and invoice.id not in self._invoices:    # a pre-dunning notice: no invoice yet
            return f"{PORTAL}{self._rng('portal', invoice.customer_id, idempotency_key).getrandbits(64):016x}"
        self._invoice(invoice.id)
        self._state[invoice.id].link_kind = kind
        if kind == "billing_portal":
            digest = self._rng("portal", invoice.id, idempotency_key).getrandbits(64)
            return f"{PORTAL}{digest:016x}"
        return HOSTED + invoice.id

    # -- replaying a ledger's own history (`simulate --from-ledger`) -------------------------------------------

    def replay(self, item: HistoricalInvoice) -> None:
        """Bring back a failed invoice from a ledger: its customer, payment method and subscription as the
        ledger knew them, created when it was created and failing at its first failure with its first decline.
        What happens next is the model's (customers respond, soft declines clear), with the same luck for the
        same invoice id and seed, whatever config runs against it."""
        if item.customer.id not in self._customers:
            metadata = item.customer.metadata
            kind = metadata.get("kind") or ("b2b" if metadata.get("billing_email") else "b2c")
            profile = SimCustomer(
                id=item.customer.id, kind=kind, tier=metadata.get("tier") or "standard",
                name=item.customer.name or item.customer.id, email=item.customer.email or "",
                billing_email=metadata.get("billing_email"), phone=item.customer.phone, currency=item.currency,
                timezone=item.customer.timezone or "UTC", locale=item.customer.preferred_locale or "en-US",
                method_type=item.payment_method_type, brand=None, interval="month", usage_based=item.usage_based,
                base_amount=item.amount_due, anchor=timedelta(0), subscription_id=item.subscription_id or "",
                payment_method_id=item.payment_method_id)
            method = self._new_method(item.customer.id, item.payment_method_id, item.payment_method_type,
                                      "visa" if item.payment_method_type == "card" else None, None, 0)
            self._customers[item.customer.id] = _CustomerState(profile, item.customer, method)
            self._touch("customer", item.customer.id)
            self._touch("payment_method", method.id)
        if item.subscription_id and item.subscription_id not in self._subscriptions:
            subscription = Subscription(id=item.subscription_id, customer_id=item.customer.id, status="active",
                                        usage_based=item.usage_based)
            self._subscriptions[item.subscription_id] = _SubscriptionState(
                subscription, self._customers[item.customer.id].profile)
            self._touch("subscription", item.subscription_id)
        self._schedule(item.created, "replayed_invoice", item)

    def _on_replayed_invoice(self, at: datetime, item: HistoricalInvoice) -> None:
        cust = self._customers[item.customer.id]
        invoice = self._create_invoice(item.invoice_id, cust, item.amount_due, item.currency, at,
                                       item.subscription_id, [dataclasses.replace(line) for line in item.lines])
        invoice.payment_method_type = item.payment_method_type
        invoice.billing_reason = item.billing_reason or invoice.billing_reason
        self._schedule(max(item.first_failed_at, at), "fail", invoice.id, item.decline)

    # -- scripting hooks (tests and the contract's WorldDriver) -----------------------------------------------

    def script_failure(self, amount: int, currency: str, decline_code: str | None, payment_method_type: str,
                       at: datetime, customer_email: str) -> str:
        """An invoice for a (new or known) customer, with a subscription, that fails at `at` with `decline_code`.
        Returns its id. Scripting says what has happened, so the account's clock moves on to `at`."""
        cust = next((c for c in self._customers.values() if c.customer.email == customer_email), None)
        if cust is None:
            n = len(self._customers)
            customer = Customer(id=f"cus_script{n:04d}", name=customer_email.split("@")[0].title(),
                                email=customer_email)
            method = self._new_method(customer.id, f"pm_script{n:04d}a", payment_method_type,
                                      "visa" if payment_method_type == "card" else None, None, 0)
            cust = _CustomerState(None, customer, method)
            self._customers[customer.id] = cust
            subscription = Subscription(id=f"sub_script{n:04d}", customer_id=customer.id, status="active")
            self._subscriptions[subscription.id] = _SubscriptionState(subscription, None)
            self._touch("customer", customer.id)
            self._touch("payment_method", method.id)
            self._touch("subscription", subscription.id)
        subscription_id = next(s.subscription.id for s in self._subscriptions.values()
                               if s.subscription.customer_id == cust.customer.id)
        invoice_id = f"in_script{len(self._invoices):05d}"
        invoice = self._create_invoice(invoice_id, cust, amount, currency, at - timedelta(hours=1), subscription_id,
                                       [InvoiceLine("Scripted charge", amount, 1)])
        if payment_method_type in BANK_METHOD_TYPES:
            decline = Decline(code=ACH_FAILURE_CODES.get(decline_code, decline_code), failure_code=decline_code,
                              payment_method_type=payment_method_type)
        else:
            decline = card_decline(decline_code or "card_declined", payment_method_type)
        invoice.payment_method_type = payment_method_type
        self._schedule(at, "fail", invoice.id, decline)
        self.advance_to(max(self.now, at))
        return invoice.id

    def script_payment(self, invoice_id: str, at: datetime) -> None:
        """The customer pays the invoice at `at` (on the hosted invoice page)."""
        self._invoice(invoice_id)
        self._schedule(at, "respond", invoice_id, "scripted", 0)
        self.advance_to(max(self.now, at))

    def script_next_payment(self, invoice_id: str, succeeds: bool, decline_code: str | None = None) -> None:
        """Fix the outcome of the next payment attempt on the invoice (calls queue up, first in first out)."""
        self._invoice(invoice_id)
        self._state[invoice_id].scripted.append((succeeds, decline_code))

    def invoice_state(self, invoice_id: str) -> Invoice:
        """The invoice as the account holds it, without counting a request (for drivers and tests)."""
        return self._snapshot(self._invoice(invoice_id).id)


def card_decline(code: str, method_type: str = "card") -> Decline:
    """The Decline Stripe reports for a card decline code ('advice:X' is a generic decline with advice code X)."""
    if code.startswith("advice:"):
        return Decline(code="card_declined", decline_code="generic_decline", advice_code=code[7:],
                       payment_method_type=method_type)
    if code == "card_declined":
        return Decline(code="card_declined", payment_method_type=method_type)
    if code == "authentication_required":
        return Decline(code="authentication_required", decline_code="authentication_required",
                       payment_intent_status="requires_action", payment_method_type=method_type)
    return Decline(code=code if code in OWN_ERROR_CODES else "card_declined", decline_code=code,
                   payment_method_type=method_type)


__all__ = ["HistoricalInvoice", "SimulatedAccount", "Stats", "UnknownObject", "InvalidRequest", "card_decline"]
