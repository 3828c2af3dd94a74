"""A dispute on any of a customer's charges (issue #21 defect 3): Stripe disputes only captured charges, so the
disputed invoice is paid; the customer's open cases are held (no charge, no customer message, nothing
irreversible), a person is told the amount, reason and evidence due date, `status` and `case show` say why the
cases wait, and the hold lifts when the dispute closes."""

import json

from tests.fakestripe import fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, cli
from tests.test_lifecycle_tick import paid_invoice_of
from tests.test_stripe_tick import DAY, HOUR, PAY, world  # noqa: F401  (fixture)


def test_a_dispute_on_a_paid_invoice_holds_every_open_case_of_the_customer_until_it_closes(world, fake_stripe,
                                                                                           tmp_path):
    w = world("dunctl")
    first = fake_stripe.fail_invoice(at=T0)
    customer = fake_stripe.invoice(first)["customer"]
    second = fake_stripe.fail_invoice(customer, subscription=fake_stripe.subscription_of(first)["id"], at=T0)
    w.tick(T0 + HOUR)
    dispute = fake_stripe.dispute(paid_invoice_of(fake_stripe, first), at=T0 + DAY, reason="product_not_received")
    w.tick(T0 + DAY + HOUR)
    told = [a for i in (first, second) for a in w.ledger.actions(w.case(i)["id"])
            if a["step_id"].startswith("dispute-notice")]
    assert len(told) == 1 and told[0]["status"] == "done"
    assert "Payment disputed: $20.00 (product_not_received), evidence due 2026-11-12 14:00 UTC" in told[0]["subject"]
    third = fake_stripe.fail_invoice(customer, subscription=fake_stripe.subscription_of(first)["id"],
                                     at=T0 + 2 * DAY)             # a new failure while the dispute is open
    before = {i: dict(w.actions(i)) for i in (first, second)}
    for day in range(2, 9):
        w.tick(T0 + day * DAY + HOUR)
    assert fake_stripe.count(PAY) == 0                              # no charge
    assert {i: w.actions(i) for i in (first, second)} == before     # no message, no step
    assert [s for s, status in w.actions(third).items() if status == "done" and s != "stop-provider-retries"] == []
    config, now = tmp_path / "dunctl.yaml", "--now=" + (T0 + 8 * DAY + 2 * HOUR).isoformat()
    rows = json.loads(cli(config, "status", "--json", now).output)["cases"]
    held = {r["invoice_id"]: r["held_because"] for r in rows}
    assert held[first].startswith("the customer disputes a payment: $20.00 (product_not_received)")
    assert "disputes a payment" in " ".join(cli(config, "case", "show", second, now).output.split())
    fake_stripe.close_dispute(dispute, "won", at=T0 + 9 * DAY)
    w.tick(T0 + 9 * DAY + HOUR)
    assert {w.case(i)["state"] for i in (first, second, third)} == {"open"}
    assert fake_stripe.count(PAY) >= 1                               # back to the sequence: retries run again


def test_a_lost_dispute_does_what_the_config_says(world, fake_stripe, tmp_path):
    import yaml

    from dunctl.config import load_config

    w = world("stripe")
    path = tmp_path / "dunctl.yaml"
    data = yaml.safe_load(path.read_text())
    data.setdefault("dunning", {})["dispute_lost"] = "write_off"
    path.write_text(yaml.safe_dump(data))
    w.config = load_config(path)
    invoice = fake_stripe.fail_invoice(at=T0)
    w.tick(T0 + HOUR)
    dispute = fake_stripe.dispute(paid_invoice_of(fake_stripe, invoice), at=T0 + DAY)
    w.tick(T0 + DAY + HOUR)
    fake_stripe.close_dispute(dispute, "lost", at=T0 + 5 * DAY)
    w.tick(T0 + 5 * DAY + HOUR)
    case = w.case(invoice)
    assert (case["state"], case["close_reason"]) == ("written_off", "the customer's dispute was lost")
