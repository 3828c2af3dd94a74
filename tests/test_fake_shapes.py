"""The fake Stripe server serves Stripe's shapes for API 2026-10-28.endive: every object it answers with carries
the fields /work/shared/stripe/fixtures3.json defines for it (Stripe's canonical JSON), and no others at the top
level, so the fake cannot drift from Stripe again. Read over HTTP with the stripe SDK's raw requests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import stripe

from tests.fakestripe import TEST_KEY, fake_stripe, subscription_id_of  # noqa: F401  (fixture)

# Stripe's fixtures as the project keeps them (tests/fakestripe_fixtures.json copies the resources the fake
# serves); the shared original is preferred when present, so a refreshed fixtures3.json is checked at once.
SHARED = Path(os.environ.get("DUNCTL_STRIPE_FIXTURES", "/work/shared/stripe/fixtures3.json"))
LOCAL = Path(__file__).with_name("fakestripe_fixtures.json")
FIXTURES = json.loads((SHARED if SHARED.exists() else LOCAL).read_text())["resources"]

# Sub-objects whose keys depend on a type (payment_method_details.card vs .us_bank_account), free-form maps
# (metadata), and the event's object (compared as its own resource).
POLYMORPHIC = {"payment_method_details", "metadata", "data", "source", "last_payment_error", "transfer_data",
               "proration_details", "invoice_item_details", "subscription_item_details", "pricing",
               "payment_method_options", "flow", "from_invoice", "last_finalization_error", "payment",
               "customer_acceptance", "next_action", "automatic_tax", "plan", "price", "card", "us_bank_account",
               "sepa_debit", "mandate", "recurring", "transform_quantity", "transform_usage", "discount",
               "billing_thresholds", "cancellation_details", "pause_collection", "evidence_details",
               "outcome", "shipping", "customer_shipping", "fraud_details"}


# Fields fixtures3.json still lists that this API version no longer has: invoice.subscription went in
# 2025-03-31.basil (stripe-python 16's Invoice type has no such field; the issue asks the fake not to serve it).
STALE_IN_FIXTURES = {"invoice.subscription"}


def missing_keys(fixture, served, path: str) -> list[str]:
    """Keys the fixture has that the served object lacks (recursively, where both sides are objects), and at the
    top level, keys the served object has that the fixture does not."""
    problems: list[str] = []
    if not isinstance(fixture, dict) or not isinstance(served, dict):
        return problems
    problems += [f"{path}.{key} missing" for key in fixture if key not in served
                 and f"{path}.{key}" not in STALE_IN_FIXTURES]
    if "." not in path:
        problems += [f"{path}.{key} not in Stripe's fixture" for key in served if key not in fixture]
    for key, value in fixture.items():
        if key in POLYMORPHIC or key not in served:
            continue
        if isinstance(value, dict):
            problems += missing_keys(value, served[key], f"{path}.{key}")
        elif isinstance(value, list) and value and isinstance(value[0], dict) and isinstance(served[key], list):
            for item in served[key]:
                problems += missing_keys(value[0], item, f"{path}.{key}[]")
    return problems


@pytest.fixture
def served(fake_stripe):
    """One of every object dunctl reads, as the fake answers over HTTP."""
    card = fake_stripe.fail_invoice(amount=4900, metered=True)
    bank = fake_stripe.fail_invoice(payment_method_type="us_bank_account", failure_code="R01", email="b@x.test")
    sepa = fake_stripe.fail_invoice(payment_method_type="sepa_debit", failure_code="AM04", email="c@x.test")
    customer = fake_stripe.add_customer("d@x.test")
    fake_stripe.add_payment_method(customer)
    one_off = fake_stripe.create_invoice(customer, amount=700)
    fake_stripe.customer_pays(card)
    dispute = fake_stripe.dispute(card)
    client = stripe.StripeClient(TEST_KEY, base_addresses={"api": fake_stripe.url}, max_network_retries=0)

    def get(path: str, **params) -> dict:
        return json.loads(client.raw_request("get", path, **params).body)

    sub = subscription_id_of(fake_stripe.invoice(card))
    bank_pm = fake_stripe.payment_intent_of(bank)["payment_method"]
    return {
        "invoice": [get(f"/v1/invoices/{card}"), get(f"/v1/invoices/{one_off}"), get(f"/v1/invoices/{bank}")],
        "line_item": get(f"/v1/invoices/{card}/lines")["data"],
        "charge": [get(f"/v1/charges/{c['id']}") for i in (card, bank, sepa) for c in fake_stripe.charges_of(i)],
        "payment_intent": [get(f"/v1/payment_intents/{fake_stripe.payment_intent_of(i)['id']}")
                           for i in (card, bank)],
        "invoice_payment": get("/v1/invoice_payments", invoice=card)["data"],
        "customer": [get(f"/v1/customers/{customer}")],
        "payment_method": [get(f"/v1/payment_methods/{fake_stripe.payment_intent_of(card)['payment_method']}")],
        "subscription": [get(f"/v1/subscriptions/{sub}")],
        "subscription_item": get("/v1/subscription_items", subscription=sub)["data"],
        "event": get("/v1/events", limit=100)["data"],
        "dispute": [get(f"/v1/disputes/{dispute}")],
        "mandate": [get(f"/v1/mandates/{fake_stripe._mandate_of[bank_pm]}")],
        "account": [get("/v1/account")],
    }, {"card": card, "one_off": one_off, "bank": bank, "sepa": sepa}


def test_every_object_carries_the_fields_of_stripes_fixtures(served):
    objects, _ = served
    problems = []
    for resource, answers in objects.items():
        assert answers, f"the fake served no {resource}"
        for answer in answers:
            problems += missing_keys(FIXTURES[resource], answer, resource)
    assert sorted(set(problems)) == []


def test_events_carry_objects_of_stripes_shapes(served):
    objects, _ = served
    for event in objects["event"]:
        data = event["data"]["object"]
        kind = data["object"]
        if kind in FIXTURES:
            fixture = FIXTURES[kind]
            if kind == "payment_method" and data["type"] != "card":
                # Stripe's fixture is a card; a bank account's details are under its own type, not `card`.
                assert data.get(data["type"]), event["type"]
                fixture = {**{k: v for k, v in fixture.items() if k != "card"}, data["type"]: {}}
            assert missing_keys(fixture, data, kind) == [], event["type"]


def test_endive_invoices_have_a_parent_and_no_top_level_subscription(served):
    objects, ids = served
    with_sub, one_off, _ = objects["invoice"]
    assert "subscription" not in with_sub and "payment_intent" not in with_sub and "charge" not in with_sub
    assert with_sub["parent"]["subscription_details"]["subscription"].startswith("sub_")
    assert one_off["parent"] is None


def test_bank_debit_charges_carry_their_own_details_and_normalised_codes(served):
    objects, _ = served
    by_type = {c["payment_method_details"]["type"]: c for c in objects["charge"]}
    ach, sepa = by_type["us_bank_account"], by_type["sepa_debit"]
    assert set(ach["payment_method_details"]["us_bank_account"]) == {
        "account_holder_type", "account_type", "bank_name", "expected_debit_date", "fingerprint", "last4",
        "mandate", "payment_reference", "routing_number"}
    assert set(sepa["payment_method_details"]["sepa_debit"]) == {
        "bank_code", "branch_code", "country", "expected_debit_date", "fingerprint", "last4", "mandate"}
    assert (ach["failure_code"], ach["outcome"]["network_decline_code"]) == ("insufficient_funds", "R01")
    assert (sepa["failure_code"], sepa["outcome"]["network_decline_code"]) == ("insufficient_funds", "AM04")


def test_delete_ignores_idempotency_keys(fake_stripe):
    invoice_id = fake_stripe.fail_invoice()
    sub = subscription_id_of(fake_stripe.invoice(invoice_id))
    client = stripe.StripeClient(TEST_KEY, base_addresses={"api": fake_stripe.url}, max_network_retries=0)
    client.v1.subscriptions.cancel(sub, options={"idempotency_key": "same"})
    with pytest.raises(stripe.InvalidRequestError):        # not a replay of the first answer
        client.v1.subscriptions.cancel(sub, options={"idempotency_key": "same"})


def test_a_preview_invoice_has_stripes_upcoming_in_id(fake_stripe):
    invoice_id = fake_stripe.fail_invoice()
    sub = subscription_id_of(fake_stripe.invoice(invoice_id))
    client = stripe.StripeClient(TEST_KEY, base_addresses={"api": fake_stripe.url}, max_network_retries=0)
    preview = client.v1.invoices.create_preview(params={"subscription": sub})
    assert preview.id.startswith("upcoming_in_")
    assert all(line.invoice == preview.id for line in preview.lines.data)
    with pytest.raises(stripe.InvalidRequestError):         # a preview is not an invoice: nothing stores it
        client.v1.invoices.retrieve(preview.id)


def test_a_billing_portal_session_expires_unless_it_can_be_recovered(fake_stripe):
    customer = fake_stripe.add_customer()
    client = stripe.StripeClient(TEST_KEY, base_addresses={"api": fake_stripe.url}, max_network_retries=0)
    short = client.v1.billing_portal.sessions.create(params={"customer": customer})
    recoverable = client.v1.billing_portal.sessions.create(params={
        "customer": customer, "after_expiration": {"type": "customer_login",
                                                   "customer_login": {"expires_at": fake_stripe.now + 86400}}})
    assert short.after_expiration is None
    assert recoverable.after_expiration.customer_login.expires_at == fake_stripe.now + 86400
    assert fake_stripe.open_portal_link(short.url, fake_stripe.now + 60) == "portal"
    assert fake_stripe.open_portal_link(short.url, fake_stripe.now + 3600) == "expired"      # the email's reader
    assert fake_stripe.open_portal_link(recoverable.url, fake_stripe.now + 3600) == "login"
    assert fake_stripe.open_portal_link(recoverable.url, fake_stripe.now + 2 * 86400) == "expired"
