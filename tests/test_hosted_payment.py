"""Who recovered an invoice (issue #21 item 10): a payment on the hosted page after Stripe's schedule skipped an
attempt is the customer's, not Stripe's retry."""

from tests.fakestripe import fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0
from tests.test_stripe_tick import DAY, HOUR, world  # noqa: F401  (fixture)


def test_a_hosted_page_payment_after_a_skipped_attempt_is_the_customers(world, fake_stripe):
    w = world("stripe")
    skipped_then_paid = fake_stripe.fail_invoice(decline_code="generic_decline", advice_code="do_not_try_again",
                                                 at=T0)
    same_sync = fake_stripe.fail_invoice(decline_code="generic_decline", advice_code="do_not_try_again", at=T0,
                                         email="b@example.com")
    w.tick(T0 + HOUR)
    fake_stripe.uncounted_attempt(skipped_then_paid, at=T0 + 3 * DAY)
    w.tick(T0 + 3 * DAY + HOUR)
    fake_stripe.customer_pays(skipped_then_paid, at=T0 + 4 * DAY)
    fake_stripe.uncounted_attempt(same_sync, at=T0 + 4 * DAY)
    fake_stripe.customer_pays(same_sync, at=T0 + 4 * DAY + HOUR)
    w.tick(T0 + 4 * DAY + 2 * HOUR)
    for invoice in (skipped_then_paid, same_sync):
        case = w.case(invoice)
        assert (case["state"], case["recovered_by"], case["recovered_attempt"]) == ("recovered", "customer", None)


def test_stripes_own_retry_that_pays_is_still_credited_to_it(world, fake_stripe):
    w = world("stripe")
    invoice = fake_stripe.fail_invoice(at=T0)
    w.tick(T0 + HOUR)
    fake_stripe.retry(invoice, True, at=T0 + 3 * DAY)
    w.tick(T0 + 3 * DAY + HOUR)
    assert (w.case(invoice)["recovered_by"], w.case(invoice)["recovered_attempt"]) == ("provider_retry", 2)
