"""Many Stripe events in one second (issue #25, cause 2): the sync handles each once, a first sync costs a few
requests per hundred failed invoices, and an idle sync one request, however many events the newest second had.
Against the fake Stripe over HTTP, counting its request log."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from dunctl.ledger import Ledger
from dunctl.stripe_gateway import StripeGateway
from tests.fakestripe import TEST_KEY, fake_stripe  # noqa: F401  (fixture)
from tests.test_stripe_sync import T0, gateway, ledger, run_sync  # noqa: F401  (fixtures)

MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)


def cards_attached(fake, count: int, at) -> None:
    """`count` payment_method.attached events stamped the same second."""
    for n in range(count):
        fake.add_payment_method(fake.add_customer(f"bulk{n}@example.com", at=at), at=at)


def test_a_first_sync_with_more_than_a_hundred_events_in_one_second_reads_each_once(fake_stripe, gateway, ledger):
    failed = [fake_stripe.fail_invoice(at=T0 - HOUR, email=f"c{n}@example.com") for n in range(120)]
    cards_attached(fake_stripe, 130, T0 - HOUR)                  # with the failures: ~370 events in one second
    fake_stripe.set_now(T0)
    batches = run_sync(ledger, gateway, T0)
    assert sum(len(b.invoices) for b in batches) == 120 and sum(b.events for b in batches) == 0
    assert fake_stripe.count("GET /v1/invoices/:id") == 0         # no failure fetched again from its event
    assert fake_stripe.count() <= 2 * math.ceil(len(failed) / 100) + 3 - 2   # - the account and subscriptions
    assert fake_stripe.count() == 5                              # 2 pages of payments, 2 of invoices, 1 of events
    fake_stripe.reset_counts()
    assert sum(b.events for b in run_sync(ledger, gateway, T0 + HOUR)) == 0
    assert fake_stripe.count() == 1                              # idle: one request


def test_failures_the_backfill_collected_are_not_fetched_again_from_their_events(fake_stripe, gateway, ledger):
    # failures in the minutes before the backfill: their events are read after it (the overlap), at no cost
    for n in range(30):
        fake_stripe.fail_invoice(at=T0 - 2 * MINUTE, email=f"c{n}@example.com")
    fake_stripe.set_now(T0)
    batches = run_sync(ledger, gateway, T0)
    assert sum(b.events for b in batches) > 30
    assert fake_stripe.count("GET /v1/invoices/:id") == 0 and fake_stripe.count("GET /v1/invoice_payments") == 1
    # invoice payments, invoices, and two pages of events: each invoice's invoice.finalized is listed too (sync
    # follows new net-terms invoices from it, dunctl/receivables), 60 events and more in all
    assert fake_stripe.count() == 4


def test_an_idle_sync_is_one_request_after_hundreds_of_events_in_one_second(fake_stripe, gateway, ledger):
    fake_stripe.fail_invoice(at=T0 - HOUR)
    fake_stripe.set_now(T0)
    run_sync(ledger, gateway, T0)
    burst = T0 + HOUR
    cards_attached(fake_stripe, 250, burst)
    fake_stripe.set_now(burst + 2 * MINUTE)
    fake_stripe.reset_counts()
    read = run_sync(ledger, gateway, burst + 2 * MINUTE)
    assert sum(b.events for b in read) == 250 and fake_stripe.count() == 3     # each once: 3 pages
    for hours in (1, 2):
        fake_stripe.set_now(burst + hours * HOUR)
        fake_stripe.reset_counts()
        assert sum(b.events for b in run_sync(ledger, gateway, burst + hours * HOUR)) == 0
        assert fake_stripe.count() == 1
    assert ledger.get_state("cursor")["edge"] == []              # the cursor does not carry the second's ids


def test_a_second_read_while_it_may_still_get_events_is_read_once_more_then_not_again(fake_stripe, gateway, ledger):
    fake_stripe.fail_invoice(at=T0 - HOUR)
    fake_stripe.set_now(T0)
    run_sync(ledger, gateway, T0)
    burst = T0 + HOUR
    cards_attached(fake_stripe, 150, burst)
    fake_stripe.set_now(burst)                                   # read in the very second of the burst
    assert sum(b.events for b in run_sync(ledger, gateway, burst)) == 150
    straggler = fake_stripe.add_customer("late@example.com", at=burst)
    fake_stripe.add_payment_method(straggler, at=burst)          # the same second, after the read
    fake_stripe.set_now(burst + 5 * MINUTE)
    fake_stripe.reset_counts()
    assert sum(b.events for b in run_sync(ledger, gateway, burst + 5 * MINUTE)) == 1     # the straggler, once
    assert fake_stripe.count() == 2
    fake_stripe.reset_counts()
    assert sum(b.events for b in run_sync(ledger, gateway, burst + HOUR)) == 0
    assert fake_stripe.count() == 1
