"""A pause Stripe makes for a payment failure (issue #21 defect 5): the case says why it waits, in `status` and
`case show`, and dunctl never lifts a pause it did not make."""

import json

from tests.fakestripe import fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, cli
from tests.test_stripe_tick import DAY, HOUR, world  # noqa: F401  (fixture)

SUBSCRIPTION_UPDATE = "POST /v1/subscriptions/:id"


def test_a_pause_stripe_made_for_a_payment_failure_says_why_and_is_never_lifted(world, fake_stripe, tmp_path):
    w = world("stripe")
    invoice = fake_stripe.fail_invoice(at=T0)
    w.tick(T0 + HOUR)
    fake_stripe.stripe_pauses_for_failure(fake_stripe.subscription_of(invoice)["id"], at=T0 + DAY)
    w.tick(T0 + DAY + HOUR)
    assert w.case(invoice)["state"] == "paused"
    config, now = tmp_path / "dunctl.yaml", "--now=" + (T0 + DAY + 2 * HOUR).isoformat()
    shown = cli(config, "status", now, env={"COLUMNS": "250"})
    assert "Stripe paused the subscription" in " ".join(shown.output.split())
    [row] = json.loads(cli(config, "status", "--json", now).output)["cases"]
    assert "the last payment retry failed" in row["held_because"]
    detail = " ".join(cli(config, "case", "show", invoice, now).output.split())
    assert "waits: Stripe paused the subscription because the last payment retry failed" in detail
    fake_stripe.customer_pays(invoice, at=T0 + 2 * DAY)
    w.tick(T0 + 2 * DAY + HOUR)
    assert w.case(invoice)["state"] == "recovered"
    assert fake_stripe.count(SUBSCRIPTION_UPDATE) == 0           # Stripe's pause stays Stripe's
