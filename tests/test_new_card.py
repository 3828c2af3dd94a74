"""Which card a retry charges (issue #21 defects 1 and 2): only a changed card is charged again, and a retry for
a new card names it, since Stripe would charge the invoice's, then the subscription's default first."""

from tests.fakestripe import fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0
from tests.test_stripe_tick import DAY, HOUR, PAY, world  # noqa: F401  (fixture)


def failed_card(fake_stripe, invoice_id: str) -> str:
    return fake_stripe.payment_intent_of(invoice_id)["payment_method"]


def test_an_edit_of_the_failed_card_charges_nothing(world, fake_stripe):
    w = world("dunctl")
    stolen = fake_stripe.fail_invoice(decline_code="stolen_card", at=T0)
    never = fake_stripe.fail_invoice(decline_code="do_not_honor", network_advice_code="03", at=T0,
                                     email="b@example.com")
    held = fake_stripe.fail_invoice(decline_code="card_decline_rate_limit_exceeded", at=T0,   # a 24-hour block
                                    email="c@example.com")
    w.tick(T0 + HOUR)
    fake_stripe.edit_payment_method(failed_card(fake_stripe, stolen), metadata={"note": "vip"}, at=T0 + 2 * HOUR)
    fake_stripe.edit_payment_method(failed_card(fake_stripe, never), phone="+15555550100", at=T0 + 2 * HOUR)
    fake_stripe.edit_payment_method(failed_card(fake_stripe, held), metadata={"x": "1"}, at=T0 + 2 * HOUR)
    w.tick(T0 + 3 * HOUR)
    assert fake_stripe.count(PAY) == 0
    assert all(w.case(i)["payment_method_changed_at"] is None for i in (stolen, never, held))


def test_a_new_card_is_charged_by_name_over_the_subscriptions_own_default(world, fake_stripe):
    w = world("stripe")
    customer = fake_stripe.add_customer(at=T0)
    old = fake_stripe.add_payment_method(customer, at=T0)
    subscription = fake_stripe.add_subscription(customer, default_payment_method=old, at=T0)   # as Checkout does
    invoice = fake_stripe.fail_invoice(customer, subscription=subscription, decline_code="expired_card", at=T0)
    w.tick(T0 + HOUR)
    new = fake_stripe.replace_default_payment_method(customer, last4="1881", at=T0 + 5 * HOUR)
    w.tick(T0 + 6 * HOUR)
    assert fake_stripe.count(PAY) == 1
    assert fake_stripe.charges_of(invoice)[-1]["payment_method"] == new
    assert w.case(invoice)["state"] == "recovered"


def test_a_new_default_on_the_subscription_is_retried_with_it(world, fake_stripe):
    w = world("stripe")
    invoice = fake_stripe.fail_invoice(decline_code="expired_card", at=T0)
    customer = fake_stripe.invoice(invoice)["customer"]
    w.tick(T0 + HOUR)
    new = fake_stripe.add_payment_method(customer, last4="1881", default=False, at=T0 + 4 * HOUR)
    fake_stripe.set_default_payment_method(fake_stripe.subscription_of(invoice)["id"], new, at=T0 + 5 * HOUR)
    w.tick(T0 + 6 * HOUR)
    assert fake_stripe.count(PAY) == 1
    assert fake_stripe.charges_of(invoice)[-1]["payment_method"] == new
    assert w.case(invoice)["state"] == "recovered"


def test_the_card_updaters_new_expiry_retries_the_same_card_once(world, fake_stripe):
    w = world("stripe")
    invoice = fake_stripe.fail_invoice(decline_code="expired_card", at=T0)
    w.tick(T0 + HOUR)
    fake_stripe.next_payment_succeeds(invoice, True)
    fake_stripe.card_automatically_updated(failed_card(fake_stripe, invoice), exp_year=2032, at=T0 + 5 * HOUR)
    w.tick(T0 + 6 * HOUR)
    w.tick(T0 + 7 * HOUR)
    assert fake_stripe.count(PAY) == 1
    assert w.case(invoice)["state"] == "recovered"


def test_the_failed_card_made_the_default_again_is_not_retried(world, fake_stripe):
    w = world("stripe")
    invoice = fake_stripe.fail_invoice(decline_code="insufficient_funds", network_advice_code="24", at=T0)
    w.tick(T0 + HOUR)
    fake_stripe.set_default_payment_method(invoice, failed_card(fake_stripe, invoice), at=T0 + 2 * HOUR)
    w.tick(T0 + 3 * HOUR)
    assert fake_stripe.count(PAY) == 0


def test_an_unattempted_invoice_names_the_subscriptions_own_card_before_the_customers(fake_stripe):
    from dunctl.stripe.gateway import StripeGateway
    from tests.fakestripe import TEST_KEY

    customer = fake_stripe.add_customer(at=T0)
    fake_stripe.add_payment_method(customer, at=T0)                    # the customer's default
    own = fake_stripe.add_payment_method(customer, last4="1881", default=False, at=T0)
    subscription = fake_stripe.add_subscription(customer, default_payment_method=own, at=T0)
    invoice = fake_stripe.create_invoice(customer, subscription=subscription, at=T0)
    gateway = StripeGateway(TEST_KEY, api_base=fake_stripe.url, sleep=lambda seconds: None)
    assert gateway.get_invoice(invoice).payment_method_id == own == fake_stripe.charged_method(invoice)
