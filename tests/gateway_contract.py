"""The contract every Gateway implementation passes: the Stripe gateway over the fake Stripe server, and the
simulated account behind `dunctl demo`.

To run it against a gateway, subclass `GatewayContract` in a test module and give it a `driver` fixture that
returns a `WorldDriver`:

    class TestMyGateway(GatewayContract):
        @pytest.fixture
        def driver(self):
            return MyDriver()

The driver scripts the world behind the gateway (a failed invoice, a customer paying, the next payment's
outcome); the tests only ever look through `driver.gateway`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Protocol

import pytest

from dunctl.failures import classify
from dunctl.gateway import Gateway
from dunctl.model import Customer, Invoice, Signal, Subscription, SyncBatch

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


class WorldDriver(Protocol):
    gateway: Gateway

    def fail_invoice(self, *, amount: int, currency: str, decline_code: str | None = "insufficient_funds",
                     payment_method_type: str = "card", at: datetime,
                     customer_email: str = "a@example.com") -> str:
        """Create a customer with a subscription whose invoice's first payment attempt failed at `at`."""

    def customer_pays(self, invoice_id: str, at: datetime) -> None:
        """The customer pays the invoice themselves (hosted page) at `at`."""

    def next_payment_succeeds(self, invoice_id: str, succeeds: bool, decline_code: str | None = None) -> None:
        """Script the outcome of the next `gateway.pay_invoice` on this invoice."""

    def usage_subscription(self, *, currency: str, usage: int) -> str:
        """A customer whose usage-based subscription in `currency` has `usage` minor units of usage so far this
        period (a world of its own: call it before anything else). Returns the subscription's id."""


@dataclass
class Synced:
    """Everything one `gateway.sync` yielded, merged (later batches win)."""

    batches: list[SyncBatch]
    cursor: dict | None
    invoices: dict[str, Invoice] = field(default_factory=dict)
    customers: dict[str, Customer] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    signals: list[Signal] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(b.requests for b in self.batches)


def sync_all(gateway: Gateway, cursor: dict | None, now: datetime, full: bool = False) -> Synced:
    batches = list(gateway.sync(cursor, now, full))
    result = Synced(batches, cursor)
    for batch in batches:
        if batch.cursor is not None:
            result.cursor = batch.cursor
        result.invoices.update((i.id, i) for i in batch.invoices)
        result.customers.update((c.id, c) for c in batch.customers)
        result.subscriptions.update((s.id, s) for s in batch.subscriptions)
        result.signals.extend(batch.signals)
    return result


class GatewayContract:
    """Behaviour `tick` relies on, whatever sits behind the gateway."""

    @pytest.fixture
    def driver(self) -> WorldDriver:          # pragma: no cover - subclasses provide it
        raise NotImplementedError("a GatewayContract subclass provides the `driver` fixture")

    def _failed(self, driver: WorldDriver, **kwargs) -> tuple[str, Synced]:
        args = {"amount": 4900, "currency": "usd", "at": T0, **kwargs}
        invoice_id = driver.fail_invoice(**args)
        return invoice_id, sync_all(driver.gateway, None, args["at"] + HOUR)

    # -- sync ------------------------------------------------------------------------------------------------

    def test_failed_invoice_appears_with_the_providers_failure_time_and_decline(self, driver):
        invoice_id, synced = self._failed(driver, amount=4900, currency="eur", decline_code="insufficient_funds",
                                          customer_email="billing@acme.test")
        invoice = synced.invoices[invoice_id]
        assert (invoice.status, invoice.amount_due, invoice.amount_remaining, invoice.currency) == \
            ("open", 4900, 4900, "eur")
        # when the provider saw the attempt fail, not when we synced (an hour later)
        assert invoice.failed_at == T0 and invoice.first_failed_at == T0
        assert invoice.attempt_count >= 1 and invoice.has_failed
        assert invoice.decline is not None and invoice.decline.decline_code == "insufficient_funds"
        assert classify(invoice.decline) == "card_soft"
        assert invoice.payment_method_type == "card"
        assert invoice.subscription_id is not None
        customer = synced.customers[invoice.customer_id]
        assert "billing@acme.test" in (customer.email, customer.billing_email, invoice.customer_email)

    @pytest.mark.parametrize("decline_code, method, failure_type", [
        ("insufficient_funds", "card", "card_soft"),
        ("stolen_card", "card", "card_hard"),
        ("expired_card", "card", "card_update"),
        ("authentication_required", "card", "action_required"),
        ("R01", "us_bank_account", "bank_soft"),
        ("account_closed", "us_bank_account", "bank_hard"),
    ])
    def test_decline_carries_what_classification_needs(self, driver, decline_code, method, failure_type):
        invoice_id, synced = self._failed(driver, decline_code=decline_code, payment_method_type=method)
        invoice = synced.invoices[invoice_id]
        assert invoice.decline.payment_method_type == method
        assert classify(invoice.decline) == failure_type

    def test_a_paid_invoice_comes_back_paid(self, driver):
        invoice_id, first = self._failed(driver)
        driver.customer_pays(invoice_id, at=T0 + 2 * HOUR)
        second = sync_all(driver.gateway, first.cursor, T0 + 3 * HOUR)
        invoice = second.invoices[invoice_id]
        assert invoice.status == "paid" and invoice.amount_remaining == 0
        assert invoice.paid_at == T0 + 2 * HOUR

    def test_sync_is_incremental(self, driver):
        invoice_id, first = self._failed(driver)
        assert invoice_id in first.invoices
        second = sync_all(driver.gateway, first.cursor, T0 + 2 * HOUR)
        assert second.invoices == {}
        assert second.cursor is not None
        later = driver.fail_invoice(amount=100, currency="usd", at=T0 + 3 * HOUR, customer_email="b@example.com")
        third = sync_all(driver.gateway, second.cursor, T0 + 4 * HOUR)
        assert set(third.invoices) == {later}

    def test_sync_can_be_rerun_from_the_same_cursor(self, driver):
        invoice_id, first = self._failed(driver)
        driver.customer_pays(invoice_id, at=T0 + 2 * HOUR)
        once = sync_all(driver.gateway, first.cursor, T0 + 3 * HOUR)
        again = sync_all(driver.gateway, first.cursor, T0 + 3 * HOUR)   # the first run's batches were lost
        assert again.invoices[invoice_id].status == once.invoices[invoice_id].status == "paid"

    # -- actions ---------------------------------------------------------------------------------------------

    def test_pay_invoice_success_returns_the_paid_invoice(self, driver):
        invoice_id, _ = self._failed(driver)
        driver.next_payment_succeeds(invoice_id, True)
        outcome = driver.gateway.pay_invoice(invoice_id, "case-1-retry-1")
        assert outcome.succeeded and outcome.decline is None
        assert outcome.invoice is not None and outcome.invoice.status == "paid"
        assert driver.gateway.get_invoice(invoice_id).status == "paid"

    def test_a_declined_payment_is_an_outcome_with_the_new_decline(self, driver):
        invoice_id, _ = self._failed(driver, decline_code="insufficient_funds")
        driver.next_payment_succeeds(invoice_id, False, "do_not_honor")
        outcome = driver.gateway.pay_invoice(invoice_id, "case-1-retry-1")
        assert not outcome.succeeded
        assert outcome.decline is not None and outcome.decline.decline_code == "do_not_honor"
        assert driver.gateway.get_invoice(invoice_id).status == "open"

    def test_the_same_idempotency_key_pays_once(self, driver):
        invoice_id, _ = self._failed(driver)
        driver.next_payment_succeeds(invoice_id, False, "insufficient_funds")
        driver.next_payment_succeeds(invoice_id, True)
        first = driver.gateway.pay_invoice(invoice_id, "case-7-retry-1")
        second = driver.gateway.pay_invoice(invoice_id, "case-7-retry-1")   # a re-run of the same step
        assert (first.succeeded, second.succeeded) == (False, False)
        assert second.decline == first.decline
        # Had the repeat attempted a payment, it would have used up the scripted success below.
        third = driver.gateway.pay_invoice(invoice_id, "case-7-retry-2")    # a new step, a new key
        assert third.succeeded

    def test_get_invoice_sees_a_payment_made_after_the_sync(self, driver):
        invoice_id, synced = self._failed(driver)
        assert synced.invoices[invoice_id].status == "open"
        driver.customer_pays(invoice_id, at=T0 + 2 * HOUR)
        assert driver.gateway.get_invoice(invoice_id).status == "paid"

    def test_mark_uncollectible(self, driver):
        invoice_id, _ = self._failed(driver)
        invoice = driver.gateway.mark_uncollectible(invoice_id, "case-1-write-off")
        assert invoice.status == "uncollectible"
        assert driver.gateway.get_invoice(invoice_id).status == "uncollectible"

    def test_disable_automatic_retries(self, driver):
        invoice_id, _ = self._failed(driver)
        driver.gateway.disable_automatic_retries(invoice_id, "case-1-auto-advance")
        assert driver.gateway.get_invoice(invoice_id).auto_advance is False

    def test_a_note_on_the_invoice_shows_in_the_next_sync_and_keeps_its_other_metadata(self, driver):
        """What a new or restored ledger reads (dunctl/adoption.py): invoice metadata, as Stripe carries it."""
        invoice_id, first = self._failed(driver)
        before = dict(first.invoices[invoice_id].metadata)
        note = {"dunctl_ledger": "ldg_1", "dunctl_last_message": "notice",
                "dunctl_last_message_at": "2026-11-02T09:30:00Z"}
        driver.gateway.mark_invoice(invoice_id, note, "case-1-sys-mark-notice")
        driver.gateway.mark_invoice(invoice_id, note, "case-1-sys-mark-notice")   # a repeat: the same answer
        noted = sync_all(driver.gateway, first.cursor, T0 + 2 * HOUR)
        assert noted.invoices[invoice_id].metadata == {**before, **note}
        assert driver.gateway.get_invoice(invoice_id).metadata == {**before, **note}

    def test_pause_then_cancel_subscription_shows_in_the_next_sync(self, driver):
        invoice_id, first = self._failed(driver)
        subscription_id = first.invoices[invoice_id].subscription_id
        driver.gateway.pause_subscription(subscription_id, "void", "case-1-suspend")
        paused = sync_all(driver.gateway, first.cursor, T0 + 2 * HOUR)
        assert paused.subscriptions[subscription_id].pause_behavior == "void"
        driver.gateway.cancel_subscription(subscription_id, "dunning exhausted", "case-1-cancel")
        canceled = sync_all(driver.gateway, paused.cursor, T0 + 3 * HOUR)
        assert canceled.subscriptions[subscription_id].status == "canceled"

    def test_resume_lifts_the_pause_in_the_next_sync(self, driver):
        invoice_id, first = self._failed(driver)
        subscription_id = first.invoices[invoice_id].subscription_id
        driver.gateway.pause_subscription(subscription_id, "void", "case-1-suspend")
        paused = sync_all(driver.gateway, first.cursor, T0 + 2 * HOUR)
        driver.gateway.resume_subscription(subscription_id, "case-1-lift-suspend")
        driver.gateway.resume_subscription(subscription_id, "case-1-lift-suspend")   # the same key: once
        resumed = sync_all(driver.gateway, paused.cursor, T0 + 3 * HOUR)
        assert resumed.subscriptions[subscription_id].pause_behavior is None
        assert resumed.subscriptions[subscription_id].status != "paused"

    @pytest.mark.parametrize("kind", ["hosted_invoice", "billing_portal"])
    def test_update_link(self, driver, kind):
        invoice_id, synced = self._failed(driver)
        url = driver.gateway.update_link(synced.invoices[invoice_id], kind, "https://acme.test/account",
                                         f"case-1-link-{kind}")
        assert url.startswith("https://")

    def test_cancelling_twice_is_success(self, driver):
        # A DELETE is not idempotent at Stripe: the same step run again after a crash must not fail the case.
        invoice_id, first = self._failed(driver)
        subscription_id = first.invoices[invoice_id].subscription_id
        driver.gateway.cancel_subscription(subscription_id, "dunning exhausted", "case-1-cancel")
        driver.gateway.cancel_subscription(subscription_id, "dunning exhausted", "case-1-cancel")
        canceled = sync_all(driver.gateway, first.cursor, T0 + 2 * HOUR)
        assert canceled.subscriptions[subscription_id].status == "canceled"

    def test_a_re_read_keeps_the_subscription(self, driver):
        invoice_id, first = self._failed(driver)
        assert driver.gateway.get_invoice(invoice_id).subscription_id == first.invoices[invoice_id].subscription_id

    # -- what else the tick, notices and adoption ask of a gateway ----------------------------------------------

    def test_account_mode_requests_and_clock(self, driver):
        account = driver.gateway.account_id()
        assert account.startswith("acct_") and driver.gateway.account_id() == account
        assert driver.gateway.mode in ("test", "live", "simulated")
        invoice_id, synced = self._failed(driver)
        assert driver.gateway.requests >= synced.requests >= 1
        assert driver.gateway.stripe_date is None or driver.gateway.stripe_date.tzinfo is not None

    def test_pre_dunning_sees_each_billed_subscription_through_sync_or_sync_subscriptions(self, driver):
        invoice_id, synced = self._failed(driver)
        subscription_id = synced.invoices[invoice_id].subscription_id
        pages = list(driver.gateway.sync_subscriptions())
        listed = {s.id: s for batch, _ in pages for s in batch.subscriptions}
        assert all(s.status in ("active", "trialing", "past_due") for s in listed.values())
        assert subscription_id in {**synced.subscriptions, **listed}
        if pages:      # resuming after the last page finds nothing more
            rest = driver.gateway.sync_subscriptions(after=pages[-1][1])
            assert not [s for batch, _ in rest for s in batch.subscriptions]

    def test_preview_invoice_shows_the_usage_so_far(self, driver):
        subscription_id = driver.usage_subscription(currency="eur", usage=1500)
        preview = driver.gateway.preview_invoice(subscription_id)
        assert (preview.subscription_id, preview.currency) == (subscription_id, "eur")
        metered = [line for line in preview.lines or [] if line.metered]
        assert metered and sum(line.amount for line in metered) > 0
        assert preview.amount_due >= sum(line.amount for line in metered)
        assert preview.period_start < preview.period_end
