"""`tick` against the fake Stripe server through the Stripe gateway: both retry modes, suppression of an action on
an invoice paid a moment before it, and hard declines that are never retried."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from dunctl.clock import iso
from dunctl.config import load_config
from dunctl.tick import build_channels, idempotency_key, run_tick
from dunctl.ledger import Ledger
from dunctl.stripe.gateway import StripeGateway
from tests.fakestripe import TEST_KEY, fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, starter

PAY = "POST /v1/invoices/:id/pay"
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


class World:
    """A starter config pointed at the fake Stripe server, its ledger, and a tick function."""

    def __init__(self, tmp_path, fake, retries: str, gateway_class=StripeGateway):
        path = starter(tmp_path, **{"stripe.retries": retries, "stripe.api_base": fake.url,
                                    "stripe.recheck_before_action": True})
        self.fake = fake
        self.config = load_config(path)
        self.ledger = Ledger.open(self.config.ledger_path)
        self.gateway = gateway_class(TEST_KEY, api_base=fake.url, sleep=lambda seconds: None)
        self.channels = build_channels(self.config, {})

    def tick(self, now: datetime):
        self.fake.set_now(max(now, datetime.fromtimestamp(self.fake.now, now.tzinfo)))
        return run_tick(self.ledger, self.config, self.gateway, self.channels, now)

    def case(self, invoice_id: str) -> dict:
        return self.ledger.cases.for_invoice(invoice_id)

    def actions(self, invoice_id: str) -> dict[str, str]:
        return {a["step_id"]: a["status"] for a in self.ledger.actions(self.case(invoice_id)["id"])}

    def close(self):
        self.ledger.close()


@pytest.fixture
def world(tmp_path, fake_stripe):
    worlds = []

    def make(retries: str, gateway_class=StripeGateway) -> World:
        worlds.append(World(tmp_path, fake_stripe, retries, gateway_class))
        return worlds[-1]

    yield make
    for w in worlds:
        w.close()


def test_stripe_mode_leaves_retries_to_stripe_and_records_its_recovery(world, fake_stripe):
    w = world("stripe")
    invoice_id = fake_stripe.fail_invoice(at=T0)
    w.tick(T0 + HOUR)
    assert w.case(invoice_id)["state"] == "open"
    assert fake_stripe.invoice(invoice_id)["auto_advance"] is True          # Stripe keeps retrying
    w.tick(T0 + 2 * DAY + HOUR)
    assert w.actions(invoice_id)["retry-1"] == "done"
    assert fake_stripe.count(PAY) == 0                                     # the retry step made no call
    assert fake_stripe.count("POST /v1/invoices/:id") == 1                 # only the notice's note (adoption.py)
    assert fake_stripe.invoice(invoice_id)["auto_advance"] is True
    fake_stripe.retry(invoice_id, True, at=T0 + 3 * DAY)                   # Smart Retries succeeds
    w.tick(T0 + 3 * DAY + HOUR)
    case = w.case(invoice_id)
    assert (case["state"], case["recovered_by"], case["recovered_at"]) == \
        ("recovered", "provider_retry", "2026-11-05T14:00:00Z")


def test_dunctl_mode_turns_stripe_retries_off_and_retries_with_an_idempotency_key(world, fake_stripe):
    w = world("dunctl")
    invoice_id = fake_stripe.fail_invoice(at=T0)
    w.tick(T0 + HOUR)
    assert fake_stripe.invoice(invoice_id)["auto_advance"] is False         # turned off when the case opened
    assert (TEST_KEY, idempotency_key(invoice_id, "stop-provider-retries", "system")) in fake_stripe._idempotency
    fake_stripe.next_payment_succeeds(invoice_id, True)
    w.tick(T0 + 2 * DAY + HOUR)
    assert fake_stripe.count(PAY) == 1
    assert (TEST_KEY, idempotency_key(invoice_id, "retry-1")) in fake_stripe._idempotency
    case = w.case(invoice_id)
    assert (case["state"], case["recovered_by"]) == ("recovered", "retry")
    assert fake_stripe.invoice(invoice_id)["status"] == "paid"
    w.tick(T0 + 2 * DAY + 2 * HOUR)
    w.tick(T0 + 6 * DAY + HOUR)
    assert fake_stripe.count(PAY) == 1                                     # recovered: nothing more


def test_a_soft_decline_that_turns_hard_stops_further_retries(world, fake_stripe):
    w = world("dunctl")
    invoice_id = fake_stripe.fail_invoice(decline_code="insufficient_funds", at=T0)
    w.tick(T0 + HOUR)
    assert w.case(invoice_id)["failure_type"] == "card_soft"
    fake_stripe.next_payment_succeeds(invoice_id, False, "stolen_card")
    w.tick(T0 + 2 * DAY + HOUR)
    assert fake_stripe.count(PAY) == 1
    assert w.case(invoice_id)["failure_type"] == "card_hard"
    for day in range(3, 15):
        w.tick(T0 + day * DAY + HOUR)
    assert fake_stripe.count(PAY) == 1                                     # retry-2 and retry-3 never called
    assert w.actions(invoice_id)["retry-2"] == "skipped"


def test_a_hard_decline_is_never_retried(world, fake_stripe):
    w = world("dunctl")
    invoice_id = fake_stripe.fail_invoice(decline_code="lost_card", at=T0)
    for day in range(0, 31):
        w.tick(T0 + day * DAY + HOUR)
    assert w.case(invoice_id)["failure_type"] == "card_hard"
    assert fake_stripe.count(PAY) == 0
    assert fake_stripe.invoice(invoice_id)["attempt_count"] == 1


def test_a_payment_between_sync_and_action_suppresses_the_action(world, fake_stripe):
    class PaidDuringTick(StripeGateway):
        pay_after_sync: str | None = None

        def sync(self, cursor, now, full=False):
            yield from super().sync(cursor, now, full)
            if self.pay_after_sync:                                        # the customer pays right now
                fake_stripe.customer_pays(self.pay_after_sync, at=now)
                self.pay_after_sync = None

    w = world("dunctl", PaidDuringTick)
    invoice_id = fake_stripe.fail_invoice(at=T0)
    w.tick(T0 + HOUR)
    w.gateway.pay_after_sync = invoice_id
    result = w.tick(T0 + 2 * DAY + HOUR)
    assert fake_stripe.count(PAY) == 0                                     # no charge attempt on a paid invoice
    case = w.case(invoice_id)
    assert (case["state"], case["recovered_by"]) == ("recovered", "customer")
    assert w.actions(invoice_id)["retry-1"] == "suppressed"                # recorded, never charged
    assert invoice_id in result.closed


def test_an_email_sent_while_turning_retries_off_waits_to_be_tried_again_keeps_that_try_due(world, fake_stripe):
    """A tick that only sends the notice, while turning Stripe's retries off failed earlier and waits to be tried
    again, must leave that try due: the case is next due for it, not for the next step of the sequence."""
    w = world("dunctl")
    invoice_id = fake_stripe.fail_invoice(at=T0)
    fake_stripe.inject(500, times=20, route="POST /v1/invoices/:id")         # turning retries off fails
    w.tick(T0 + 10 * MINUTE)
    assert w.actions(invoice_id) == {"stop-provider-retries": "failed"}
    fake_stripe.calm()
    w.tick(T0 + 31 * MINUTE)                                               # the notice is due, the retry not yet
    assert w.actions(invoice_id) == {"stop-provider-retries": "failed", "notice": "done", "mark-notice": "done"}
    case = w.case(invoice_id)
    again = T0 + 10 * MINUTE + w.config.file.dunning.action_retry_after
    assert (case["next_step"], case["next_due_at"]) == ("stop-provider-retries", iso(again))
    w.tick(again)
    assert w.actions(invoice_id)["stop-provider-retries"] == "done"
    assert fake_stripe.invoice(invoice_id)["auto_advance"] is False


def test_once_retries_are_turned_off_the_case_is_next_due_for_its_next_step(world, fake_stripe):
    """Turning Stripe's retries off, tried again and done in the same tick as the notice: the case is next due for
    the sequence's next step, with nothing left of the failed try (`status` shows what really comes next)."""
    w = world("dunctl")
    invoice_id = fake_stripe.fail_invoice(at=T0)
    fake_stripe.inject(500, times=20, route="POST /v1/invoices/:id")
    w.tick(T0 + 10 * MINUTE)
    fake_stripe.calm()
    w.tick(T0 + 10 * MINUTE + w.config.file.dunning.action_retry_after)   # the try again, and the notice
    assert w.actions(invoice_id) == {"stop-provider-retries": "done", "notice": "done", "mark-notice": "done"}
    assert w.case(invoice_id)["next_step"] == "retry-1"


def _succeeded(fake, invoice_id: str) -> int:
    return len([c for c in fake.charges_of(invoice_id) if c["status"] == "succeeded"])


def test_a_retry_that_gets_a_5xx_is_tried_again_under_a_new_key_and_charges_once(world, fake_stripe):
    """Stripe saves the 500 under the idempotency key and replays it for 24 hours: the try after it, on a later
    tick, uses a new key (counted as a try, visible in the ledger), and the invoice is charged once."""
    w = world("dunctl")
    invoice_id = fake_stripe.fail_invoice(at=T0)
    w.tick(T0 + HOUR)
    fake_stripe.next_payment_succeeds(invoice_id, True)
    fake_stripe.inject(500, times=1, route=PAY)
    w.tick(T0 + 2 * DAY + HOUR)
    assert w.actions(invoice_id)["retry-1"] == "failed" and fake_stripe.count(PAY) == 1
    w.tick(T0 + 2 * DAY + HOUR + w.config.file.dunning.action_retry_after)
    key = idempotency_key(invoice_id, "retry-1")
    action = next(a for a in w.ledger.actions(w.case(invoice_id)["id"]) if a["step_id"] == "retry-1")
    assert (action["status"], action["tries"], action["idempotency_key"]) == ("done", 2, key + ":2")
    assert (TEST_KEY, key + ":2") in fake_stripe._idempotency
    assert (w.case(invoice_id)["state"], _succeeded(fake_stripe, invoice_id), fake_stripe.count(PAY)) == \
        ("recovered", 1, 2)
    assert w.tick(T0 + 3 * DAY).ok                  # the new key, seen in Stripe's events, is the ledger's own


def test_a_retry_whose_5xx_came_after_the_charge_is_recorded_done(world, fake_stripe):
    w = world("dunctl")
    invoice_id = fake_stripe.fail_invoice(at=T0)
    w.tick(T0 + HOUR)
    fake_stripe.next_payment_succeeds(invoice_id, True)
    fake_stripe.inject(500, times=1, route=PAY, took_effect=True)
    w.tick(T0 + 2 * DAY + HOUR)
    assert w.actions(invoice_id)["retry-1"] == "done"
    case = w.case(invoice_id)
    assert (case["state"], case["recovered_by"]) == ("recovered", "retry")
    w.tick(T0 + 2 * DAY + 2 * HOUR)
    assert (fake_stripe.count(PAY), _succeeded(fake_stripe, invoice_id)) == (1, 1)


def test_a_charge_whose_answer_was_lost_with_the_network_is_unknown_and_never_made_again(world, fake_stripe):
    """The retry's charge goes out and the network drops before any answer; reading the invoice back gets no
    answer either. Whether the card was charged is unknown: the step says so (with the command that settles it),
    and no later tick charges again under a new key, though the payment did go through."""
    w = world("dunctl")
    invoice_id = fake_stripe.fail_invoice(at=T0)
    w.tick(T0 + HOUR)
    fake_stripe.next_payment_succeeds(invoice_id, True)
    fake_stripe.lose_answers(PAY, times=None, then_unreachable=True)
    result = w.tick(T0 + 2 * DAY + HOUR)
    assert w.actions(invoice_id)["retry-1"] == "unknown"
    report = next(a for a in result.actions if a.step == "retry-1")
    assert "may have taken effect" in report.detail and f"case resolve {invoice_id} retry-1" in report.detail
    assert result.unknown_waiting == 1
    tries = fake_stripe.count(PAY)
    fake_stripe.calm()
    w.tick(T0 + 2 * DAY + 2 * HOUR)
    w.tick(T0 + 3 * DAY + 2 * HOUR)
    assert fake_stripe.count(PAY) == tries and _succeeded(fake_stripe, invoice_id) == 1
    assert w.case(invoice_id)["state"] == "recovered"         # the sync brought the payment it made


def test_a_stripe_call_cut_off_by_a_crash_is_tried_again_under_its_own_key(world, fake_stripe):
    """The new key is for a try that failed; a try cut off by a crash (its claim left behind) is not counted, so
    it is made again under the key it had, and Stripe answers with the first result if it got there."""
    w = world("dunctl")
    invoice_id = fake_stripe.fail_invoice(at=T0)
    w.tick(T0 + HOUR)
    key = idempotency_key(invoice_id, "retry-1")
    with w.ledger.transaction():                                      # a tick that died mid-call
        w.ledger.journal("actions").claim_action(w.case(invoice_id)["id"], "step", "retry-1", "retry", "stripe",
                                                 None, T0 + 2 * DAY, T0 + 2 * DAY + HOUR, key, None)
    fake_stripe.next_payment_succeeds(invoice_id, True)
    w.tick(T0 + 2 * DAY + 2 * HOUR)
    action = next(a for a in w.ledger.actions(w.case(invoice_id)["id"]) if a["step_id"] == "retry-1")
    assert (action["status"], action["idempotency_key"]) == ("done", key)
    assert [k for (_, k) in fake_stripe._idempotency if k.startswith(key)] == [key]
