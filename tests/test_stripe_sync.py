"""Stripe sync into a real ledger: backfill, incremental events, resume after a crash, old event shapes, bank
returns, disputes. Everything goes through the stripe SDK over HTTP to the fake Stripe server."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from dunctl.failures import classify
from dunctl.ledger import Ledger
from dunctl.stripe.events import EVENT_TYPES
from dunctl.stripe.gateway import StripeGateway
from tests.helpers import new_ledger
from tests.fakestripe import TEST_KEY, fake_stripe  # noqa: F401  (fixture)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture
def gateway(fake_stripe):
    return StripeGateway(TEST_KEY, api_base=fake_stripe.url, sleep=lambda seconds: None)


@pytest.fixture
def ledger(tmp_path):
    ledger = new_ledger(tmp_path / "dunctl.db")
    yield ledger
    ledger.close()


def run_sync(ledger: Ledger, gateway: StripeGateway, now: datetime, full: bool = False, stop_after: int | None = None):
    """What engine.run_sync does: apply each batch (and its cursor) as it arrives. `stop_after` batches, the
    process 'dies'."""
    batches = []
    for batch in gateway.sync(ledger.get_state("cursor"), now, full):
        ledger.sync.apply_batch(batch, now)
        batches.append(batch)
        if stop_after is not None and len(batches) == stop_after:
            break
    return batches


def invoice_row(ledger: Ledger, invoice_id: str) -> dict:
    row = ledger.db.execute("SELECT * FROM invoices WHERE id = ?", [invoice_id]).fetchone()
    assert row is not None, f"{invoice_id} is not in the ledger"
    names = [d[0] for d in ledger.db.execute("SELECT * FROM invoices LIMIT 0").description]
    return dict(zip(names, row))


def invoice_ids(ledger: Ledger) -> list[str]:
    return [r[0] for r in ledger.db.execute("SELECT id FROM invoices ORDER BY id")]


# -- backfill ------------------------------------------------------------------------------------------------------


def test_backfill_lands_failed_invoices_with_customers_methods_subscriptions_and_lines(fake_stripe, gateway, ledger):
    cus = fake_stripe.add_customer("ap@acme.test", name="Acme Corp", phone="+15555550100",
                                   metadata={"billing_email": "invoices@acme.test", "tier": "enterprise",
                                             "account_manager_email": "am@us.test", "timezone": "Europe/Paris"},
                                   preferred_locales=["fr-FR", "en"], at=T0 - 40 * DAY)
    pm = fake_stripe.add_payment_method(cus, brand="mastercard", last4="4444", exp_month=3, exp_year=2027)
    sub = fake_stripe.add_subscription(cus, amount=9900, metered=True, metadata={"plan": "scale"})
    failed = fake_stripe.fail_invoice(cus, subscription=sub, amount=9900, decline_code="insufficient_funds",
                                      lines=[{"description": "Scale plan", "amount": 9900, "quantity": 1},
                                             {"description": "Usage: 12,000 API calls", "amount": 2400,
                                              "quantity": 12000, "metered": True}], at=T0 - 3 * DAY)
    never_failed = fake_stripe.create_invoice(cus, subscription=sub, amount=500, at=T0 - 2 * DAY)
    fake_stripe.customer_pays(never_failed, at=T0 - 2 * DAY)
    fake_stripe.retry(failed, False, at=T0 - 1 * DAY, decline_code="insufficient_funds")   # past_due again
    recovered = fake_stripe.fail_invoice(decline_code="do_not_honor", at=T0 - 5 * DAY, email="b@example.com")
    fake_stripe.retry(recovered, True, at=T0 - 4 * DAY)
    paid_by_hand = fake_stripe.fail_invoice(at=T0 - 6 * DAY, email="d@example.com")
    fake_stripe.customer_pays(paid_by_hand, at=T0 - 5 * DAY)           # a manual payment: attempt_count stays 1
    too_old = fake_stripe.fail_invoice(at=T0 - 90 * DAY + HOUR, email="c@example.com")
    fake_stripe.set_now(T0)

    batches = run_sync(ledger, gateway, T0)

    # never_failed and too_old are not followed; both recovered ones are (a case may be waiting on them)
    assert invoice_ids(ledger) == sorted([failed, recovered, paid_by_hand])
    assert too_old not in invoice_ids(ledger)
    row = invoice_row(ledger, failed)
    assert (row["status"], row["amount_due"], row["currency"], row["customer_id"], row["subscription_id"]) == \
        ("open", 9900 + 2400, "usd", cus, sub)
    # Stripe's times (first attempt, latest attempt), not the sync's
    assert (row["first_failed_at"], row["failed_at"]) == ("2026-10-30T09:00:00Z", "2026-11-01T09:00:00Z")
    assert row["attempt_count"] == 2
    assert row["failure_type"] == "card_soft" and row["payment_method_id"] == pm
    assert json.loads(row["decline"])["decline_code"] == "insufficient_funds"
    lines = json.loads(row["lines"])
    assert [(line["description"], line["amount"], line["quantity"], line["metered"]) for line in lines] == [
        ("Scale plan", 9900, 1, False), ("Usage: 12,000 API calls", 2400, 12000, True)]
    assert invoice_row(ledger, recovered)["status"] == invoice_row(ledger, paid_by_hand)["status"] == "paid"

    customer = ledger.db.execute("SELECT name, email, phone, metadata, preferred_locale, timezone FROM customers "
                                 "WHERE id = ?", [cus]).fetchone()
    assert customer[:3] == ("Acme Corp", "ap@acme.test", "+15555550100")
    assert json.loads(customer[3])["billing_email"] == "invoices@acme.test"
    assert json.loads(customer[3])["account_manager_email"] == "am@us.test"
    assert customer[4:] == ("fr-FR", "Europe/Paris")
    method = ledger.db.execute("SELECT type, brand, last4, exp_month, exp_year FROM payment_methods WHERE id = ?",
                               [pm]).fetchone()
    assert method == ("card", "mastercard", "4444", 3, 2027)
    subscription = ledger.db.execute("SELECT status, usage_based, metadata FROM subscriptions WHERE id = ?",
                                     [sub]).fetchone()
    assert subscription[:2] == ("past_due", 1) and json.loads(subscription[2]) == {"plan": "scale"}

    # a progress-able stream: every request is accounted to a batch, and the last cursor follows events
    assert sum(b.requests for b in batches) == gateway.requests == fake_stripe.count()
    assert ledger.get_state("cursor")["phase"] == "events"


def test_backfill_costs_a_few_requests_per_hundred_failed_invoices(fake_stripe, gateway, ledger):
    for n in range(250):
        fake_stripe.fail_invoice(at=T0 - DAY + n * timedelta(seconds=30), email=f"c{n}@example.com")
    fake_stripe.set_now(T0)
    batches = run_sync(ledger, gateway, T0)
    assert len(invoice_ids(ledger)) == 250
    # 3 pages of open payments + 3 pages of invoices + 1 events page, and no per-invoice call (where the events
    # phase starts comes from Stripe's Date header, not from a request for the newest event)
    assert fake_stripe.count() == 7
    assert fake_stripe.count("GET /v1/invoice_payments") == 3
    assert fake_stripe.count("GET /v1/invoices") == 3
    assert all(b.requests >= 1 for b in batches)


def test_resume_after_a_crash_mid_backfill(fake_stripe, gateway, ledger):
    ids = [fake_stripe.fail_invoice(at=T0 - 2 * DAY + n * timedelta(minutes=1), email=f"c{n}@example.com")
           for n in range(350)]
    fake_stripe.set_now(T0)
    # one batch per open-payments page (4), then invoice pages (the first carries the events marker): die after
    # two of those
    run_sync(ledger, gateway, T0, stop_after=4 + 2)
    assert len(invoice_ids(ledger)) == 200
    assert ledger.get_state("cursor")["phase"] == "backfill"
    fake_stripe.customer_pays(ids[-1], at=T0 + HOUR)       # page 1's newest invoice is paid while we are down

    gateway2 = StripeGateway(TEST_KEY, api_base=fake_stripe.url, sleep=lambda s: None)
    run_sync(ledger, gateway2, T0 + 2 * HOUR)
    assert invoice_ids(ledger) == sorted(ids)                       # nothing lost, no duplicates (primary key)
    assert fake_stripe.count("GET /v1/invoices") == 4               # pages 1-2, then 3-4: none listed twice
    assert invoice_row(ledger, ids[-1])["status"] == "paid"         # the events since the marker were replayed
    assert ledger.get_state("cursor")["phase"] == "events"


# -- incremental -------------------------------------------------------------------------------------------------


def test_incremental_sync_follows_events(fake_stripe, gateway, ledger):
    first = fake_stripe.fail_invoice(at=T0, email="a@example.com")
    run_sync(ledger, gateway, T0 + HOUR)
    cus = invoice_row(ledger, first)["customer_id"]
    fake_stripe.reset_counts()

    second = fake_stripe.fail_invoice(decline_code="expired_card", at=T0 + 2 * HOUR, email="b@example.com")
    fake_stripe.customer_pays(first, at=T0 + 3 * HOUR)
    third = fake_stripe.fail_invoice(at=T0 + 4 * HOUR, email="c@example.com")
    fake_stripe.void(third, at=T0 + 5 * HOUR)
    new_pm = fake_stripe.replace_default_payment_method(cus, last4="1881", at=T0 + 6 * HOUR)
    second_pm = fake_stripe.invoice(second)
    fake_stripe.card_automatically_updated(fake_stripe.store["customer"][second_pm["customer"]]
                                           ["invoice_settings"]["default_payment_method"], at=T0 + 7 * HOUR)
    fake_stripe.card_expiring(cus, at=T0 + 8 * HOUR)
    fake_stripe.invoice_upcoming(fake_stripe.subscription_of(first)["id"], at=T0 + 9 * HOUR)

    batches = run_sync(ledger, gateway, T0 + 10 * HOUR)
    assert invoice_row(ledger, first)["status"] == "paid"
    assert invoice_row(ledger, first)["paid_at"] == "2026-11-02T12:00:00Z"
    row = invoice_row(ledger, second)
    assert (row["status"], row["failure_type"], row["failed_at"]) == ("open", "card_update", "2026-11-02T11:00:00Z")
    assert invoice_row(ledger, third)["status"] == "void"
    signals = {(s.kind, s.customer_id) for s in ledger.sync.pending_signals()}
    assert ("payment_method_updated", cus) in signals
    assert ("payment_method_updated", second_pm["customer"]) in signals
    assert ("card_expiring", cus) in signals and ("invoice_upcoming", cus) in signals
    assert any(new_pm in s.detail for s in ledger.sync.pending_signals())
    assert sum(b.events for b in batches) == len([e for e in fake_stripe.events if e["type"] in EVENT_TYPES
                                                  and e["created"] > int((T0 + HOUR).timestamp())])


def test_steady_state_sync_is_one_request(fake_stripe, gateway, ledger):
    fake_stripe.fail_invoice(at=T0)
    run_sync(ledger, gateway, T0 + HOUR)
    cursor = ledger.get_state("cursor")
    for hours in (2, 3):
        before = fake_stripe.count()
        batches = run_sync(ledger, gateway, T0 + hours * HOUR)
        assert fake_stripe.count() - before == 1
        assert [(b.requests, b.events, len(b.invoices)) for b in batches] == [(1, 0, 0)]
    assert ledger.get_state("cursor")["event"] == cursor["event"]
    # events dunctl does not follow (charge.failed, payment_intent.*) are filtered by Stripe, not paged through
    fake_stripe.emit("charge.failed", {"id": "ch_x", "object": "charge"})
    before = fake_stripe.count()
    batches = run_sync(ledger, gateway, T0 + 4 * HOUR)
    assert fake_stripe.count() - before == 1
    assert [b.events for b in batches] == [0]


def test_invoice_paid_alone_records_every_payment_in_band_or_out_of_band(fake_stripe, gateway, ledger):
    by_card = fake_stripe.fail_invoice(at=T0, email="a@example.com")
    by_wire = fake_stripe.fail_invoice(at=T0, email="b@example.com")
    run_sync(ledger, gateway, T0 + HOUR)
    fake_stripe.customer_pays(by_card, at=T0 + 2 * HOUR)
    fake_stripe.customer_pays(by_wire, at=T0 + 3 * HOUR, out_of_band=True)
    # As Stripe: invoice.payment_succeeded only for the payment attempt; invoice.paid for both.
    kinds = [(e["type"], e["data"]["object"]["id"]) for e in fake_stripe.events if e["type"].startswith("invoice.pa")]
    assert ("invoice.payment_succeeded", by_wire) not in kinds and ("invoice.paid", by_wire) in kinds
    assert ("invoice.payment_succeeded", by_card) in kinds and ("invoice.paid", by_card) in kinds
    run_sync(ledger, gateway, T0 + 4 * HOUR)
    assert (invoice_row(ledger, by_card)["paid_at"], invoice_row(ledger, by_wire)["paid_at"]) == \
        ("2026-11-02T11:00:00Z", "2026-11-02T12:00:00Z")


def test_a_card_attached_is_stored_with_its_expiry_before_it_becomes_the_default(fake_stripe, gateway, ledger):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    run_sync(ledger, gateway, T0 + HOUR)
    cus = invoice_row(ledger, invoice_id)["customer_id"]
    spare = fake_stripe.add_payment_method(cus, last4="0005", exp_month=3, exp_year=2027, default=False,
                                           at=T0 + 2 * HOUR)
    fake_stripe.reset_counts()
    run_sync(ledger, gateway, T0 + 3 * HOUR)
    assert fake_stripe.count() == 1                        # still one events request
    method = ledger.sync.payment_method(spare)
    assert (method["customer_id"], method["last4"], method["exp_month"], method["exp_year"]) == \
        (cus, "0005", 3, 2027)
    assert not [s for s in ledger.sync.pending_signals() if s.payment_method_id == spare]   # not used until default


def test_resume_after_a_crash_mid_events(fake_stripe, gateway, ledger):
    run_sync(ledger, gateway, T0)                                # empty account: cursor by time
    ids = [fake_stripe.fail_invoice(at=T0 + n * timedelta(minutes=1), email=f"c{n}@example.com")
           for n in range(55)]                                   # 110 followed events: 2 pages
    first = run_sync(ledger, gateway, T0 + 2 * HOUR)
    assert sorted(invoice_ids(ledger)) == sorted(ids)
    more = [fake_stripe.fail_invoice(at=T0 + 3 * HOUR + n * timedelta(minutes=1), email=f"d{n}@example.com")
            for n in range(55)]                                   # 2 pages again: the crash leaves ~50 of 55
    for invoice_id in ids[:10]:                                  # paid, then disputed: as on Stripe
        fake_stripe.customer_pays(invoice_id, at=T0 + 4 * HOUR)
        fake_stripe.dispute(invoice_id, at=T0 + 5 * HOUR)
    run_sync(ledger, gateway, T0 + 6 * HOUR, stop_after=1)       # dies after the first page
    assert 0 < len(invoice_ids(ledger)) - len(ids) < len(more)
    run_sync(ledger, gateway, T0 + 7 * HOUR)
    run_sync(ledger, gateway, T0 + 7 * HOUR)                     # and once more, for good measure
    assert sorted(invoice_ids(ledger)) == sorted(ids + more)
    disputes = [s.invoice_id for s in ledger.sync.pending_signals() if s.kind == "dispute"]
    assert sorted(disputes) == sorted(ids[:10])                  # each once: deduplicated by event id
    assert len(first) >= 2


def test_events_out_of_order_keep_the_newest_snapshot(fake_stripe, gateway, ledger):
    run_sync(ledger, gateway, T0)
    invoice_id = fake_stripe.fail_invoice(at=T0 + HOUR)
    stale = json.loads(json.dumps(fake_stripe.invoice(invoice_id)))
    fake_stripe.customer_pays(invoice_id, at=T0 + 3 * HOUR)
    # a late delivery of the failure, listed after the payment but created before it
    fake_stripe.emit("invoice.payment_failed", stale, at=int((T0 + 2 * HOUR).timestamp()))
    run_sync(ledger, gateway, T0 + 4 * HOUR)
    row = invoice_row(ledger, invoice_id)
    assert row["status"] == "paid"
    assert row["first_failed_at"] == "2026-11-02T10:00:00Z"       # the earliest failure, never moved later
    # and the same stale event alone in a later sync cannot reopen it
    fake_stripe.emit("invoice.payment_failed", stale, at=int((T0 + 2 * HOUR).timestamp()))
    run_sync(ledger, gateway, T0 + 5 * HOUR)
    assert invoice_row(ledger, invoice_id)["status"] == "paid"


def test_a_cursor_older_than_stripes_event_window_triggers_a_backfill(fake_stripe, gateway, ledger):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    run_sync(ledger, gateway, T0 + HOUR)
    fake_stripe.customer_pays(invoice_id, at=T0 + 2 * DAY)
    fake_stripe.set_now(T0 + 40 * DAY)                           # Stripe has forgotten every event by now
    fake_stripe.reset_counts()
    run_sync(ledger, gateway, T0 + 40 * DAY)
    assert fake_stripe.count("GET /v1/invoices") == 1            # a backfill, not a walk of missing events
    assert invoice_row(ledger, invoice_id)["status"] == "paid"


def test_a_cursor_whose_event_stripe_forgot_still_resumes_by_time(fake_stripe, gateway, ledger):
    fake_stripe.fail_invoice(at=T0)
    run_sync(ledger, gateway, T0 + HOUR)
    cursor = ledger.get_state("cursor")
    ledger.set_state("cursor", {**cursor, "event": "evt_gone"})
    later = fake_stripe.fail_invoice(at=T0 + 2 * HOUR, email="b@example.com")
    run_sync(ledger, gateway, T0 + 3 * HOUR)
    assert ledger.get_state("cursor")["event"] != "evt_gone"
    assert invoice_row(ledger, later)["status"] == "open"


def test_full_sync_backfills_again(fake_stripe, gateway, ledger):
    fake_stripe.fail_invoice(at=T0)
    run_sync(ledger, gateway, T0 + HOUR)
    fake_stripe.reset_counts()
    run_sync(ledger, gateway, T0 + 2 * HOUR, full=True)
    assert fake_stripe.count("GET /v1/invoices") == 1


# -- shapes and codes --------------------------------------------------------------------------------------------


def test_old_api_shape_events_are_understood(fake_stripe, gateway, ledger):
    run_sync(ledger, gateway, T0)
    fake_stripe.old_shape_events = True
    invoice_id = fake_stripe.fail_invoice(decline_code="lost_card", at=T0 + HOUR)
    event = next(e for e in fake_stripe.events if e["type"] == "invoice.payment_failed")
    assert "payment_intent" in event["data"]["object"] and "parent" not in event["data"]["object"]
    fake_stripe.reset_counts()
    run_sync(ledger, gateway, T0 + 2 * HOUR)
    row = invoice_row(ledger, invoice_id)
    assert (row["failure_type"], row["failed_at"]) == ("card_hard", "2026-11-02T10:00:00Z")
    assert row["subscription_id"] == fake_stripe.subscription_of(invoice_id)["id"]
    assert fake_stripe.count("GET /v1/payment_intents/:id") == 1      # the event's payment intent, fetched
    assert fake_stripe.count("GET /v1/invoice_payments") == 0


@pytest.mark.parametrize("method, code, failure_type", [
    ("us_bank_account", "R01", "bank_soft"),
    ("us_bank_account", "insufficient_funds", "bank_soft"),
    ("us_bank_account", "R09", "bank_soft"),
    ("us_bank_account", "R02", "bank_hard"),
    ("us_bank_account", "account_closed", "bank_hard"),
    ("us_bank_account", "debit_not_authorized", "bank_hard"),
    ("us_bank_account", "R29", "bank_hard"),
    ("sepa_debit", "AC04", "bank_hard"),
    ("sepa_debit", "MD07", "bank_hard"),
    ("sepa_debit", "AM04", "bank_soft"),
])
def test_bank_debit_returns_map_to_bank_failure_types(fake_stripe, gateway, ledger, method, code, failure_type):
    run_sync(ledger, gateway, T0)
    invoice_id = fake_stripe.fail_invoice(payment_method_type=method, failure_code=code, decline_code=None,
                                          at=T0 + HOUR)
    run_sync(ledger, gateway, T0 + 2 * HOUR)
    row = invoice_row(ledger, invoice_id)
    decline = json.loads(row["decline"])
    assert decline["payment_method_type"] == method
    # Stripe's charge carries the normalised code; a raw return code is kept as the network's code, beside it
    assert code in (decline["failure_code"], decline["network_decline_code"])
    assert not decline["failure_code"].startswith(("R0", "R1", "R2", "AC", "AM", "MD"))
    assert row["failure_type"] == failure_type


@pytest.mark.parametrize("codes, failure_type", [
    ({"decline_code": "generic_decline", "advice_code": "do_not_try_again"}, "card_hard"),
    ({"decline_code": "do_not_honor", "network_advice_code": "21"}, "card_hard"),
    ({"decline_code": "generic_decline", "outcome_reason": "previously_declined_do_not_retry"}, "card_hard"),
    ({"decline_code": "insufficient_funds", "advice_code": "confirm_card_data"}, "card_update"),
    ({"decline_code": "authentication_required"}, "action_required"),
])
def test_advice_codes_and_outcome_reasons_reach_the_classifier(fake_stripe, gateway, ledger, codes, failure_type):
    invoice_id = fake_stripe.fail_invoice(at=T0, **codes)
    run_sync(ledger, gateway, T0 + HOUR)
    assert invoice_row(ledger, invoice_id)["failure_type"] == failure_type


def test_requires_action_comes_from_the_payment_intent_status(fake_stripe, gateway, ledger):
    invoice_id = fake_stripe.fail_invoice(decline_code=None, requires_action=True, at=T0)
    run_sync(ledger, gateway, T0 + HOUR)
    decline = json.loads(invoice_row(ledger, invoice_id)["decline"])
    assert decline["payment_intent_status"] == "requires_action"
    assert invoice_row(ledger, invoice_id)["failure_type"] == "action_required"


@pytest.mark.parametrize("with_payment_intent", [True, False])
def test_a_dispute_becomes_a_signal_on_its_invoice(fake_stripe, gateway, ledger, with_payment_intent):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    run_sync(ledger, gateway, T0 + HOUR)
    fake_stripe.customer_pays(invoice_id, at=T0 + DAY)
    fake_stripe.dispute(invoice_id, at=T0 + 2 * DAY, with_payment_intent=with_payment_intent)
    run_sync(ledger, gateway, T0 + 3 * DAY)
    disputes = [s for s in ledger.sync.pending_signals() if s.kind == "dispute"]
    assert [(s.invoice_id, s.at.strftime("%Y-%m-%dT%H:%M:%SZ")) for s in disputes] == \
        [(invoice_id, "2026-11-04T09:00:00Z")]
    assert "fraudulent" in disputes[0].detail


def test_invoice_updated_without_a_failure_keeps_the_decline(fake_stripe, gateway, ledger):
    invoice_id = fake_stripe.fail_invoice(decline_code="stolen_card", at=T0)
    run_sync(ledger, gateway, T0 + HOUR)
    fake_stripe.touch_invoice(invoice_id, at=T0 + 2 * HOUR, po_number="PO-7")
    run_sync(ledger, gateway, T0 + 3 * HOUR)
    row = invoice_row(ledger, invoice_id)
    assert row["failure_type"] == "card_hard" and row["failed_at"] == "2026-11-02T09:00:00Z"
    assert json.loads(row["metadata"]) == {"po_number": "PO-7"}


def test_classify_sees_the_same_decline_the_ledger_stores(fake_stripe, gateway):
    invoice_id = fake_stripe.fail_invoice(decline_code="card_velocity_exceeded", at=T0)
    invoices = [i for b in gateway.sync(None, T0 + HOUR) for i in b.invoices]
    assert [classify(i.decline) for i in invoices if i.id == invoice_id] == ["card_soft"]
