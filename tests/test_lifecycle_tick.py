"""The customer's real lifecycle through `tick`, against the fake Stripe server over HTTP: a subscription
cancelled or paused outside dunctl, a new payment method, a dispute's verdict, an inactive mandate, and the card
network's retry advice."""

from datetime import timedelta

from tests.fakestripe import fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0
from tests.test_stripe_tick import DAY, HOUR, PAY, world  # noqa: F401  (fixture)


def test_a_subscription_cancelled_outside_dunctl_ends_the_case_and_nothing_more_is_sent(world, fake_stripe):
    w = world("stripe")
    invoice = fake_stripe.fail_invoice(at=T0)
    w.tick(T0 + HOUR)
    fake_stripe.cancel_subscription(fake_stripe.subscription_of(invoice)["id"], at=T0 + DAY)
    result = w.tick(T0 + DAY + HOUR)
    case = w.case(invoice)
    assert case["state"] == "closed" and "cancelled outside dunctl" in case["close_reason"]
    assert result.endings == {invoice: "closed"}
    for day in range(2, 30, 3):
        assert not [a for a in w.tick(T0 + day * DAY).actions if a.status == "done"]


def test_a_paused_subscription_holds_the_case_and_resuming_hands_it_back(world, fake_stripe):
    w = world("stripe")
    invoice = fake_stripe.fail_invoice(at=T0)
    subscription = fake_stripe.subscription_of(invoice)["id"]
    w.tick(T0 + HOUR)
    fake_stripe.pause_collection(subscription, "void", at=T0 + DAY)
    w.tick(T0 + DAY + HOUR)
    assert w.case(invoice)["state"] == "paused"
    w.tick(T0 + 3 * DAY + HOUR)
    assert "reminder" not in w.actions(invoice)                    # no messages while held
    fake_stripe.pause_collection(subscription, None, at=T0 + 4 * DAY)
    w.tick(T0 + 4 * DAY + HOUR)
    assert w.case(invoice)["state"] == "open"
    assert w.actions(invoice).get("update-link") == "done"         # back to the sequence, latest message only


def test_a_new_payment_method_is_retried_on_the_next_tick_once(world, fake_stripe):
    w = world("stripe")                                           # even when Stripe owns the retries
    invoice = fake_stripe.fail_invoice(decline_code="expired_card", at=T0)
    customer = fake_stripe.invoice(invoice)["customer"]
    w.tick(T0 + HOUR)
    fake_stripe.next_payment_succeeds(invoice, True)
    fake_stripe.replace_default_payment_method(customer, at=T0 + 5 * HOUR)
    w.tick(T0 + 6 * HOUR)
    assert fake_stripe.count(PAY) == 1
    case = w.case(invoice)
    assert (case["state"], case["recovered_by"]) == ("recovered", "retry")
    w.tick(T0 + 7 * HOUR)
    assert fake_stripe.count(PAY) == 1


def paid_invoice_of(fake_stripe, open_invoice: str) -> str:
    """An earlier invoice of the same customer, paid: only a captured charge can be disputed."""
    paid = fake_stripe.create_invoice(fake_stripe.invoice(open_invoice)["customer"], at=T0)
    fake_stripe.attempt(paid, True, at=T0)
    return paid


def test_a_lost_dispute_hands_the_customers_cases_to_a_person_and_a_won_one_resumes_them(world, fake_stripe):
    w = world("stripe")
    lost, won = fake_stripe.fail_invoice(at=T0), fake_stripe.fail_invoice(at=T0, email="b@example.com")
    w.tick(T0 + HOUR)
    disputes = {inv: fake_stripe.dispute(paid_invoice_of(fake_stripe, inv), at=T0 + DAY) for inv in (lost, won)}
    w.tick(T0 + DAY + HOUR)
    assert {w.case(inv)["state"] for inv in (lost, won)} == {"paused"}
    fake_stripe.close_dispute(disputes[lost], "lost", at=T0 + 5 * DAY)
    fake_stripe.close_dispute(disputes[won], "won", at=T0 + 5 * DAY)
    w.tick(T0 + 5 * DAY + HOUR)
    assert (w.case(lost)["state"], w.case(lost)["with_person"]) == ("paused", 1)
    assert "dispute was lost" in w.case(lost)["held_because"]
    assert (w.case(won)["state"], w.case(won)["with_person"], w.case(won)["held_because"]) == ("open", 0, None)


def test_an_inactive_mandate_makes_a_bank_debit_case_hard(world, fake_stripe):
    w = world("stripe")
    invoice = fake_stripe.fail_invoice(decline_code="insufficient_funds", payment_method_type="us_bank_account",
                                       at=T0)
    w.tick(T0 + HOUR)
    assert w.case(invoice)["failure_type"] == "bank_soft"
    pm = fake_stripe.store["customer"][fake_stripe.invoice(invoice)["customer"]]["invoice_settings"][
        "default_payment_method"]
    fake_stripe.mandate_inactive(pm, at=T0 + DAY)
    w.tick(T0 + DAY + HOUR)
    assert w.case(invoice)["failure_type"] == "bank_hard"


def test_mastercard_advice_holds_a_dunctl_retry_until_the_network_allows_it(world, fake_stripe):
    w = world("dunctl")
    invoice = fake_stripe.fail_invoice(decline_code="insufficient_funds", network_advice_code="27", at=T0)
    w.tick(T0 + HOUR)
    w.tick(T0 + 2 * DAY + HOUR)                                    # retry-1 is due on day 2
    assert fake_stripe.count(PAY) == 0                             # advice 27: not before 4 days
    from dunctl.explain import explain

    steps = {s.step: s for s in explain(w.ledger, w.config, invoice, T0 + 2 * DAY + 2 * HOUR).steps}
    assert steps["retry-1"].state == "waits" and "27" in steps["retry-1"].why
    from tests.helpers import cli

    shown = cli(w.config.path, "case", "show", invoice, "--now", (T0 + 2 * DAY + 2 * HOUR).isoformat()).stdout
    assert "waits: retry-1:" in shown and "27" in shown
    w.tick(T0 + 4 * DAY + timedelta(minutes=5))
    assert fake_stripe.count(PAY) == 1


def test_an_inactive_mandate_stays_hard_after_someone_edits_the_invoices_metadata(world, fake_stripe):
    """A later copy of the invoice with no new decline (a Dashboard edit, or dunctl's own note on the invoice) must
    not turn the case back to what the older decline said."""
    w = world("stripe")
    invoice = fake_stripe.fail_invoice(decline_code="insufficient_funds", payment_method_type="us_bank_account",
                                       at=T0)
    w.tick(T0 + HOUR)
    pm = fake_stripe.store["customer"][fake_stripe.invoice(invoice)["customer"]]["invoice_settings"][
        "default_payment_method"]
    fake_stripe.mandate_inactive(pm, at=T0 + DAY)
    w.tick(T0 + DAY + HOUR)
    fake_stripe.touch_invoice(invoice, at=T0 + 2 * DAY, po_number="PO-7")
    w.tick(T0 + 2 * DAY + HOUR)
    assert w.case(invoice)["failure_type"] == "bank_hard"
