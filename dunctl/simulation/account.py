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

This module holds the book (who the customers are), the Gateway (what dunctl calls), replay and the scripting
hooks; the account's other parts are one module each, combined into `SimulatedAccount` here:

    world.py        the event queue, the records Stripe would not show, the named generators
    billing.py      renewals, failures, payment attempts (Stripe's side)
    customers.py    what customers do in answer to a failure, a message, a person or a suspension
    predunning.py   expiring cards, usage and previews, customers acting on a notice
    net_terms.py    net-30 business customers: invoices with payment terms, paid on time, late, or after a reminder
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta

from dunctl.failures import BANK_METHOD_TYPES, Decline
from dunctl.model import Customer, Invoice, InvoiceLine, PaymentOutcome, Subscription, SyncBatch
from dunctl.simulation.assumptions import DEFAULT, Assumptions
from dunctl.simulation.billing import Billing
from dunctl.simulation.customers import Customers
from dunctl.simulation.net_terms import NetTerms, NetTermsCustomer, NetTermsStats
from dunctl.simulation.population import SimCustomer
from dunctl.simulation.predunning import PreDunning
from dunctl.simulation.world import (ACH_FAILURE_CODES, HOSTED, PORTAL, HistoricalInvoice, InvalidRequest, Stats,
                                     UnknownObject, _CustomerState, _SubscriptionState, card_decline)

BATCH_SIZE = 200


def _copy(obj, **changes):
    """A shallow copy of one of dunctl.model's plain dataclasses (no __post_init__, no slots), with `changes`: what
    the account hands dunctl, so dunctl never holds the account's own objects. dataclasses.replace would run the
    generated __init__ and check every field: a fifth of the simulated sync's CPU, a few thousand copies a run."""
    copy = object.__new__(type(obj))
    copy.__dict__.update(obj.__dict__, **changes)
    return copy


class SimulatedAccount(NetTerms, Customers, PreDunning, Billing):
    """A Stripe account in-process. Build it with `SimulatedAccount(book, seed=..., start=...)` for the demo, or
    `SimulatedAccount([], seed=0, start=..., customers_respond=False)` and the `script_*` hooks for tests."""

    mode = "simulated"
    stripe_date = None    # no provider clock apart from the simulation's own, which is the tick's

    def __init__(self, book: list[SimCustomer], *, seed: int, start: datetime, smart_retries: bool = False,
                 bill_until: datetime | None = None, assumptions: Assumptions = DEFAULT,
                 customers_respond: bool = True, net_terms: list[NetTermsCustomer] = ()):
        super().__init__(seed=seed, start=start, smart_retries=smart_retries, bill_until=bill_until,
                         assumptions=assumptions, customers_respond=customers_respond)
        self.net_terms_stats = NetTermsStats()
        for profile in book:
            self._add_customer(profile)
        for net in net_terms:      # after the card book: added to it, never drawn from it
            self._add_net_terms_customer(net)

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
                batch.customers.append(_copy(c, metadata=dict(c.metadata)))
            elif kind == "payment_method":
                batch.payment_methods.append(_copy(self._methods[key]))
            elif kind == "subscription":
                s = self._subscriptions[key].subscription
                batch.subscriptions.append(_copy(s, metadata=dict(s.metadata)))
            elif kind == "invoice":
                batch.invoices.append(self._snapshot(key))
        return batch

    def _snapshot(self, invoice_id: str) -> Invoice:
        invoice = self._invoices[invoice_id]
        return _copy(invoice, metadata=dict(invoice.metadata), lines=[_copy(line) for line in invoice.lines])

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
        for invoice in self._invoices.of_subscription(subscription_id):
            if invoice.status == "open" and invoice.first_failed_at:
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


__all__ = ["HistoricalInvoice", "SimulatedAccount", "Stats", "UnknownObject", "InvalidRequest", "card_decline"]
