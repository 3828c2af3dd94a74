"""Stripe fidelity: every documented failure code, the customer's lifecycle outside dunctl, complete usage
invoices, old event shapes, the cursor within one second, and records that cannot be stored. Everything goes
through the stripe SDK over HTTP to the fake Stripe server into a real ledger."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from dunctl.errors import GatewayError
from dunctl.failures import classify, network_retry_wait
from dunctl.ledger import Ledger
from dunctl.stripe_gateway import EVENT_TYPES, StripeGateway
from tests.fakestripe import OLD_API_VERSION, TEST_KEY, fake_stripe, subscription_id_of, unix  # noqa: F401
from tests.helpers import cli, starter

from tests.test_stripe_sync import DAY, HOUR, T0, gateway, ledger  # noqa: F401,E402  (fixtures)


def run_sync(ledger, gateway, now, accept_stale=False):
    batches = list(gateway.sync(ledger.get_state("cursor"), now))
    for batch in batches:
        ledger.sync.apply_batch(batch, now, accept_stale=accept_stale)
    return batches


def row(ledger, invoice_id):
    found = ledger.db.execute("SELECT * FROM invoices WHERE id = ?", [invoice_id]).fetchone()
    assert found is not None, f"{invoice_id} is not in the ledger"
    names = [d[0] for d in ledger.db.execute("SELECT * FROM invoices LIMIT 0").description]
    return dict(zip(names, found))


def signals(ledger, kind=None):
    rows = [record.row for record in ledger.sync.pending_signals()]       # every column, the new ones too
    return [r for r in rows if kind is None or r["kind"] == kind]


# -- failure codes, normalised and raw -----------------------------------------------------------------------------


@pytest.mark.parametrize("method, raw, normalised, failure_type", [
    ("us_bank_account", "R01", "insufficient_funds", "bank_soft"),
    ("us_bank_account", "R10", "debit_not_authorized", "bank_hard"),
    ("sepa_debit", "MS02", "generic_could_not_process", "bank_hard"),      # the customer refused: not soft
    ("sepa_debit", "MS03", "generic_could_not_process", "bank_soft"),
])
def test_bank_returns_classify_from_the_normalised_code_and_show_the_raw_one(
        fake_stripe, gateway, ledger, method, raw, normalised, failure_type):
    invoice_id = fake_stripe.fail_invoice(payment_method_type=method, failure_code=raw, decline_code=None, at=T0)
    charge = fake_stripe.charges_of(invoice_id)[-1]
    assert charge["failure_code"] == normalised and charge["payment_method_details"][method]["mandate"]
    run_sync(ledger, gateway, T0 + HOUR)
    stored = row(ledger, invoice_id)
    decline = json.loads(stored["decline"])
    assert (decline["failure_code"], decline["network_decline_code"]) == (normalised, raw)
    assert stored["failure_type"] == failure_type


@pytest.mark.parametrize("codes, failure_type", [
    ({"decline_code": "duplicate_transaction"}, "card_hard"),
    ({"decline_code": "invalid_amount"}, "card_hard"),
    ({"decline_code": "testmode_decline"}, "card_hard"),
    ({"decline_code": None, "code": "expired_payment_method"}, "card_update"),
    ({"decline_code": None, "code": "authentication_not_handled"}, "action_required"),
    ({"decline_code": None, "code": "card_decline_rate_limit_exceeded"}, "card_soft"),
])
def test_codes_documented_for_this_api_version_reach_their_type(fake_stripe, gateway, ledger, codes, failure_type):
    invoice_id = fake_stripe.fail_invoice(at=T0, **codes)
    run_sync(ledger, gateway, T0 + HOUR)
    assert row(ledger, invoice_id)["failure_type"] == failure_type


def test_a_mastercard_retry_after_code_reaches_the_decline_record(fake_stripe, gateway, ledger):
    invoice_id = fake_stripe.fail_invoice(at=T0, decline_code="insufficient_funds", network_advice_code="27")
    run_sync(ledger, gateway, T0 + HOUR)
    decline = json.loads(row(ledger, invoice_id)["decline"])
    assert decline["network_advice_code"] == "27"
    assert network_retry_wait(decline) == timedelta(days=4)
    outcome = gateway.pay_invoice(invoice_id, "k-retry")          # a dunctl retry declined the same way
    assert network_retry_wait(outcome.decline) == timedelta(days=4) and classify(outcome.decline) == "card_soft"


# -- the customer's lifecycle outside dunctl ----------------------------------------------------------------------


def test_subscription_changes_outside_dunctl_become_signals(fake_stripe, gateway, ledger):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    sub = subscription_id_of(fake_stripe.invoice(invoice_id))
    customer = fake_stripe.invoice(invoice_id)["customer"]
    run_sync(ledger, gateway, T0 + HOUR)

    fake_stripe.schedule_cancellation(sub, at=T0 + 2 * HOUR)
    fake_stripe.schedule_cancellation(sub, at=T0 + 3 * HOUR, undo=True)
    fake_stripe.pause_collection(sub, "keep_as_draft", at=T0 + 4 * HOUR, resumes_at=T0 + 30 * DAY)
    fake_stripe.pause_collection(sub, None, at=T0 + 5 * HOUR)
    fake_stripe.pause_subscription(sub, at=T0 + 6 * HOUR)
    fake_stripe.resume_subscription(sub, at=T0 + 7 * HOUR)
    fake_stripe.cancel_subscription(sub, at=T0 + 8 * HOUR, comment="moved to a competitor")
    run_sync(ledger, gateway, T0 + 9 * HOUR)

    lifecycle = [(s["kind"], s["at"][11:13]) for s in signals(ledger) if s["kind"].startswith("subscription")]
    assert lifecycle == [("subscription_cancel_scheduled", "11"), ("subscription_resumed", "12"),
                         ("subscription_paused", "13"), ("subscription_resumed", "14"),
                         ("subscription_paused", "15"), ("subscription_resumed", "16"),
                         ("subscription_canceled", "17")]
    every = signals(ledger)
    assert all(s["subscription_id"] == sub and s["customer_id"] == customer for s in every
               if s["kind"].startswith("subscription"))
    paused = json.loads(next(s for s in every if s["kind"] == "subscription_paused")["data"])
    assert paused["behavior"] == "keep_as_draft" and paused["resumes_at"].startswith("2026-12-02")
    canceled = next(s for s in every if s["kind"] == "subscription_canceled")
    assert "moved to a competitor" in canceled["detail"]
    assert not json.loads(canceled["data"])["by_dunctl"]
    assert ledger.sync.subscription(sub)["status"] == "canceled"


def test_dunctls_own_pause_is_marked_as_dunctls(fake_stripe, gateway, ledger):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    run_sync(ledger, gateway, T0 + HOUR)
    sub = subscription_id_of(fake_stripe.invoice(invoice_id))
    gateway.pause_subscription(sub, "void", "dunctl-" + invoice_id + "-suspend")
    # (called straight through the gateway, so the ledger has no action for the key: adopt it knowingly)
    run_sync(ledger, gateway, T0 + 2 * HOUR, accept_stale=True)
    paused = signals(ledger, "subscription_paused")
    assert len(paused) == 1 and json.loads(paused[0]["data"])["by_dunctl"]


@pytest.mark.parametrize("status", ["won", "lost"])
def test_a_closed_dispute_says_won_or_lost(fake_stripe, gateway, ledger, status):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    fake_stripe.customer_pays(invoice_id, at=T0 + HOUR)
    dispute = fake_stripe.dispute(invoice_id, at=T0 + DAY)
    run_sync(ledger, gateway, T0 + DAY + HOUR)
    fake_stripe.close_dispute(dispute, status, at=T0 + 20 * DAY)
    run_sync(ledger, gateway, T0 + 20 * DAY + HOUR)
    closed = signals(ledger, "dispute_closed")
    assert [(s["invoice_id"], json.loads(s["data"])["status"]) for s in closed] == [(invoice_id, status)]
    assert closed[0]["detail"].startswith(status)


def test_an_inactive_mandate_names_the_customer_and_payment_method(fake_stripe, gateway, ledger):
    invoice_id = fake_stripe.fail_invoice(payment_method_type="sepa_debit", failure_code="AM04", decline_code=None,
                                          at=T0)
    run_sync(ledger, gateway, T0 + HOUR)
    method = fake_stripe.payment_intent_of(invoice_id)["payment_method"]
    fake_stripe.mandate_inactive(method, at=T0 + 2 * HOUR)
    run_sync(ledger, gateway, T0 + 3 * HOUR)
    [inactive] = signals(ledger, "mandate_inactive")
    assert (inactive["customer_id"], inactive["payment_method_id"]) == (fake_stripe.invoice(invoice_id)["customer"],
                                                                         method)


def test_a_replaced_card_names_the_new_payment_method(fake_stripe, gateway, ledger):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    run_sync(ledger, gateway, T0 + HOUR)
    customer = fake_stripe.invoice(invoice_id)["customer"]
    new = fake_stripe.replace_default_payment_method(customer, last4="1881", at=T0 + 2 * HOUR)
    old = fake_stripe.payment_intent_of(invoice_id)["payment_method"]
    fake_stripe.card_automatically_updated(old, at=T0 + 3 * HOUR)
    run_sync(ledger, gateway, T0 + 4 * HOUR)
    assert [s["payment_method_id"] for s in signals(ledger, "payment_method_updated")] == [new, old]


# -- complete invoices: has_more, ids, re-reads, old shapes ------------------------------------------------------


def usage_invoice(fake_stripe, lines=30):
    customer = fake_stripe.add_customer("ops@bigco.test", at=T0 - DAY)
    fake_stripe.add_payment_method(customer)
    sub = fake_stripe.add_subscription(customer, amount=50000, metered=True, at=T0 - DAY)
    licensed, metered = fake_stripe.store["subscription"][sub]["items"]["data"]
    usage = [{"description": f"Usage: region {n}", "amount": 266000 + n, "quantity": 1000 + n,
              "subscription_item": metered["id"]} for n in range(lines)]
    # the metered lines first, the licensed one last: matching by position would get every flag wrong
    return fake_stripe.fail_invoice(customer, subscription=sub, lines=usage + [
        {"description": "Enterprise plan", "amount": 50000, "quantity": 1, "subscription_item": licensed["id"]}],
        at=T0), sub


def test_a_long_usage_invoice_is_complete_and_its_lines_match_items_by_id(fake_stripe, gateway, ledger):
    invoice_id, sub = usage_invoice(fake_stripe)
    listed = fake_stripe._render(fake_stripe.invoice(invoice_id), None)
    assert listed["lines"]["has_more"] and len(listed["lines"]["data"]) == 10      # as Stripe embeds them
    run_sync(ledger, gateway, T0 + HOUR)
    lines = json.loads(row(ledger, invoice_id)["lines"])
    assert len(lines) == 31
    assert [line["metered"] for line in lines] == [True] * 30 + [False]
    assert sum(line["amount"] for line in lines) == row(ledger, invoice_id)["amount_due"]


def test_a_re_read_before_an_action_keeps_the_subscription_and_the_metered_lines(fake_stripe, gateway, ledger):
    invoice_id, sub = usage_invoice(fake_stripe, lines=3)
    run_sync(ledger, gateway, T0 + HOUR)
    fresh = gateway.get_invoice(invoice_id)
    assert fresh.subscription_id == sub
    assert [line.metered for line in fresh.lines] == [True, True, True, False]
    from dunctl.model import SyncBatch
    ledger.sync.apply_batch(SyncBatch(invoices=[fresh]), T0 + 2 * HOUR)
    assert [line["metered"] for line in json.loads(row(ledger, invoice_id)["lines"])] == [True, True, True, False]
    assert row(ledger, invoice_id)["subscription_id"] == sub


def test_an_event_snapshot_never_wipes_the_usage_breakdown(fake_stripe, gateway, ledger):
    invoice_id, sub = usage_invoice(fake_stripe, lines=3)
    run_sync(ledger, gateway, T0 + HOUR)
    fake_stripe.touch_invoice(invoice_id, at=T0 + 2 * HOUR, po_number="PO-1")     # new shape, subscription unexpanded
    fake_stripe.old_shape_events = True
    fake_stripe.touch_invoice(invoice_id, at=T0 + 3 * HOUR, po_number="PO-2")     # old shape: re-fetched
    run_sync(ledger, gateway, T0 + 4 * HOUR)
    stored = row(ledger, invoice_id)
    assert json.loads(stored["metadata"]) == {"po_number": "PO-2"}
    assert [line["metered"] for line in json.loads(stored["lines"])] == [True, True, True, False]


def test_old_shape_events_re_fetch_the_object(fake_stripe, gateway, ledger):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    run_sync(ledger, gateway, T0 + HOUR)
    fake_stripe.old_shape_events = True
    fake_stripe.touch_invoice(invoice_id, at=T0 + 2 * HOUR, po_number="PO-9")
    assert fake_stripe.events[-1]["api_version"] == OLD_API_VERSION
    fake_stripe.reset_counts()
    run_sync(ledger, gateway, T0 + 3 * HOUR)
    assert fake_stripe.count("GET /v1/invoices/:id") == 1
    assert row(ledger, invoice_id)["subscription_id"] == subscription_id_of(fake_stripe.invoice(invoice_id))


# -- the event cursor within one second ---------------------------------------------------------------------------


def test_an_event_of_the_cursors_second_listed_behind_the_cursor_is_not_missed(fake_stripe, gateway, ledger):
    first = fake_stripe.fail_invoice(at=T0)
    run_sync(ledger, gateway, T0 + HOUR)
    cursor = ledger.get_state("cursor")
    assert cursor["event_created"] == unix(T0)
    # Another invoice fails in the same second; Stripe promises no order within a second and lists its events
    # behind the cursor's event (ending_before=<cursor> would never return them).
    before = len(fake_stripe.events)
    second = fake_stripe.fail_invoice(at=T0, email="b@example.com")
    late = fake_stripe.events[before:]
    del fake_stripe.events[before:]
    fake_stripe.events[0:0] = late
    batches = run_sync(ledger, gateway, T0 + 2 * HOUR)
    assert row(ledger, second)["status"] == "open" and row(ledger, second)["failure_type"] == "card_soft"
    assert sum(b.events for b in batches) == len([e for e in late if e["type"] in EVENT_TYPES])
    again = run_sync(ledger, gateway, T0 + 3 * HOUR)
    assert sum(b.events for b in again) == 0                      # and nothing applied twice
    assert row(ledger, first)["status"] == "open"


# -- attempts, cancels ----------------------------------------------------------------------------------------------


def test_attempt_count_rising_without_a_charge_records_no_attempt(fake_stripe, gateway, ledger):
    invoice_id = fake_stripe.fail_invoice(at=T0, decline_code="generic_decline", advice_code="do_not_try_again")
    run_sync(ledger, gateway, T0 + HOUR)
    fake_stripe.uncounted_attempt(invoice_id, at=T0 + 3 * DAY)
    fake_stripe.uncounted_attempt(invoice_id, at=T0 + 5 * DAY)
    run_sync(ledger, gateway, T0 + 6 * DAY)
    assert fake_stripe.invoice(invoice_id)["attempt_count"] == 3
    assert row(ledger, invoice_id)["attempt_count"] == 1


def test_cancelling_an_already_cancelled_subscription_is_success(fake_stripe, gateway):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    sub = subscription_id_of(fake_stripe.invoice(invoice_id))
    gateway.cancel_subscription(sub, "dunning exhausted", "dunctl-x-cancel")
    gateway.cancel_subscription(sub, "dunning exhausted", "dunctl-x-cancel")     # a crash, then the same step again
    assert fake_stripe.count("DELETE /v1/subscriptions/:id") == 2
    assert fake_stripe.store["subscription"][sub]["status"] == "canceled"


def test_cancelling_a_subscription_that_does_not_exist_is_still_an_error(fake_stripe, gateway):
    with pytest.raises(GatewayError):
        gateway.cancel_subscription("sub_missing", "dunning exhausted", "dunctl-y-cancel")


# -- hostile answers: keys in error text, records that cannot be stored ------------------------------------------


def test_a_key_echoed_in_a_stripe_error_never_reaches_the_error_or_the_ledger(tmp_path, fake_stripe):
    config = starter(tmp_path, **{"stripe.api_base": fake_stripe.url, "stripe.recheck_before_action": True})
    env = {"STRIPE_API_KEY": TEST_KEY}
    fake_stripe.fail_invoice(at=T0)
    fake_stripe.set_now(T0 + HOUR)
    assert cli(config, "sync", "--now", (T0 + HOUR).isoformat(), env=env).exit_code == 0
    fake_stripe.echo_key_in_errors = True
    result = cli(config, "tick", "--now", (T0 + 2 * HOUR).isoformat(), "--json", env=env)
    assert "Invalid request from key" in result.output                   # the error did reach the output...
    assert TEST_KEY not in result.output and TEST_KEY[8:] not in result.output   # ...without the key
    assert TEST_KEY[8:].encode() not in (tmp_path / "dunctl.db").read_bytes()


def test_the_gateway_scrubs_keys_from_every_error(fake_stripe, gateway):
    fake_stripe.echo_key_in_errors = True
    with pytest.raises(GatewayError) as raised:
        gateway.get_invoice("in_anything")
    text = f"{raised.value.message} {raised.value.hint}"
    assert TEST_KEY not in text and "key removed" in text


def test_a_record_that_cannot_be_stored_is_recorded_and_skipped(fake_stripe, gateway, ledger):
    good_before = fake_stripe.fail_invoice(at=T0, email="a@example.com")
    huge = fake_stripe.fail_invoice(at=T0 + 1 * HOUR, email="b@example.com")
    odd = fake_stripe.fail_invoice(at=T0 + 2 * HOUR, email="c@example.com")
    good_after = fake_stripe.fail_invoice(at=T0 + 3 * HOUR, email="d@example.com")
    fake_stripe.invoice(huge).update(amount_due=10**20, amount_remaining=10**20)
    fake_stripe.invoice(odd)["currency"] = "xyz"
    run_sync(ledger, gateway, T0 + 4 * HOUR)                           # a backfill
    assert {r[0] for r in ledger.db.execute("SELECT id FROM invoices")} == {good_before, good_after}
    rejected = signals(ledger, "record_rejected")
    assert sorted(s["invoice_id"] for s in rejected) == sorted([huge, odd])
    assert any("unknown currency 'xyz'" in s["detail"] for s in rejected)
    assert any("impossible amount_due" in s["detail"] for s in rejected)
    # the same records met again by events: still skipped, recorded once, and the sync goes on
    fake_stripe.touch_invoice(huge, at=T0 + 5 * HOUR, note="x")
    later = fake_stripe.fail_invoice(at=T0 + 6 * HOUR, email="e@example.com")
    run_sync(ledger, gateway, T0 + 7 * HOUR)
    assert row(ledger, later)["status"] == "open"
    assert len(signals(ledger, "record_rejected")) == 2


def test_subscription_items_beyond_the_first_ten_are_read(fake_stripe, gateway, ledger):
    customer = fake_stripe.add_customer("ops@manyseats.test", at=T0 - DAY)
    fake_stripe.add_payment_method(customer)
    sub_id = fake_stripe.add_subscription(customer, amount=1000, metered=True, at=T0 - DAY)
    sub = fake_stripe.store["subscription"][sub_id]
    licensed, metered = sub["items"]["data"]
    extra = []
    for n in range(10):                     # ten more licensed seats: the metered item is the 12th
        item = json.loads(json.dumps(licensed))
        item["id"] = f"si_seat{n:02d}"
        item["price"] = {**item["price"], "id": f"price_seat{n:02d}"}
        extra.append(item)
    sub["items"]["data"] = [licensed] + extra + [metered]
    invoice_id = fake_stripe.fail_invoice(customer, subscription=sub_id, lines=[
        {"description": "Seats", "amount": 1000, "subscription_item": licensed["id"]},
        {"description": "Usage", "amount": 4200, "quantity": 4200, "subscription_item": metered["id"]}], at=T0)
    fake_stripe.reset_counts()
    run_sync(ledger, gateway, T0 + HOUR)
    assert fake_stripe.count("GET /v1/subscription_items") >= 1
    assert ledger.sync.subscription(sub_id)["usage_based"] == 1
    assert [line["metered"] for line in json.loads(row(ledger, invoice_id)["lines"])] == [False, True]
