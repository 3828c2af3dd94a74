"""The end of a case tells the truth, and recovery undoes what dunctl did (issue 20, defects 5, 6 and 11): through
`dunctl tick` against the fake Stripe server over HTTP, with every email received by a real SMTP server."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import yaml

from tests.fakestripe import TEST_KEY, fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, cli, starter, sent_as

SUBSCRIPTION_UPDATE = "POST /v1/subscriptions/:id"
CANCEL = "DELETE /v1/subscriptions/:id"
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
ENV = {"STRIPE_API_KEY": TEST_KEY}


class Account:
    """A starter config on the fake Stripe account, emails to a real SMTP server, collections by email."""

    def __init__(self, tmp_path, fake, smtp, **settings):
        self.fake, self.smtp = fake, smtp
        self.config = starter(tmp_path, **{"stripe.api_base": fake.url,
                                           "channels.email": {"transport": "smtp", "host": smtp.host,
                                                              "port": smtp.port},
                                           "escalation": {"channel": "email", "to": "collections@example.com"},
                                           **settings})

    def tick(self, offset: timedelta):
        now = T0 + offset
        self.fake.set_now(now)
        result = cli(self.config, "tick", "--now", now.isoformat(), env=ENV)
        assert result.exit_code == 0, result.output
        return result

    def mail(self, to: str | None = None) -> list[str]:
        return [r.message["Subject"] for r in self.smtp.received if to is None or r.rcpt_tos == [to]]

    def received(self, subject_part: str) -> list:
        return [r for r in self.smtp.received if subject_part in r.message["Subject"]]

    def case_show(self, invoice: str) -> str:
        return cli(self.config, "case", "show", invoice).stdout


@pytest.fixture
def account(tmp_path, fake_stripe, smtp_server):
    return lambda **settings: Account(tmp_path, fake_stripe, smtp_server, **settings)


def _paused(fake, invoice: str) -> dict | None:
    return fake.subscription_of(invoice)["pause_collection"]


# -- defect 5: recovery lifts the pause dunctl made, and only that one --------------------------------------------


def test_a_payment_lifts_the_pause_dunctl_made_once_with_its_own_key(account, fake_stripe):
    a = account()
    invoice = fake_stripe.fail_invoice(at=T0)
    a.tick(HOUR)                                                   # the day-0 email: the customer is told
    a.tick(12 * DAY + HOUR)                                        # the final notice announces the pause
    a.tick(21 * DAY + 16 * HOUR)                                   # dunctl pauses collection once the day the
    #                                                                final notice named has ended in New York
    assert _paused(fake_stripe, invoice) == {"behavior": "void", "resumes_at": None}
    assert fake_stripe.count(SUBSCRIPTION_UPDATE) == 1
    fake_stripe.customer_pays(invoice, at=T0 + 22 * DAY)
    a.tick(22 * DAY + HOUR)
    assert _paused(fake_stripe, invoice) is None                   # pause_collection cleared in Stripe
    lift = [e for e in fake_stripe.events if e["type"] == "customer.subscription.updated"
            and e["data"].get("previous_attributes", {}).get("pause_collection")]
    assert [e["request"]["idempotency_key"] for e in lift] == [f"dunctl-{invoice}-sys-lift-suspend"]
    for day in (23, 25, 40):
        a.tick(day * DAY)
    assert fake_stripe.count(SUBSCRIPTION_UPDATE) == 2             # the pause, the lift: nothing more
    assert "lift-suspend (resume_subscription) done" in a.case_show(invoice)
    # the thank-you says the subscription was resumed, once
    thanks = a.received("Thank you")
    assert len(thanks) == 1 and "We have resumed your" in thanks[0].message.get_body(("plain",)).get_content()


def test_the_pause_stays_while_another_invoice_that_paused_it_is_unpaid(account, fake_stripe):
    a = account()
    first = fake_stripe.fail_invoice(at=T0)
    subscription = fake_stripe.subscription_of(first)["id"]
    second = fake_stripe.fail_invoice(fake_stripe.invoice(first)["customer"], at=T0, subscription=subscription)
    a.tick(HOUR)
    a.tick(12 * DAY + HOUR)                                        # the final notice announces the pause
    a.tick(21 * DAY + 16 * HOUR)                                   # both cases pause the subscription
    fake_stripe.customer_pays(first, at=T0 + 22 * DAY)
    a.tick(22 * DAY + HOUR)
    assert _paused(fake_stripe, first) is not None                 # the second invoice still justifies it
    fake_stripe.customer_pays(second, at=T0 + 23 * DAY)
    a.tick(23 * DAY + HOUR)
    assert _paused(fake_stripe, first) is None


def test_a_lift_that_fails_is_tried_again_and_the_thank_you_waits_for_it(account, fake_stripe):
    a = account()
    invoice = fake_stripe.fail_invoice(at=T0)
    a.tick(HOUR)
    a.tick(12 * DAY + HOUR)                                        # the final notice announces the pause
    a.tick(21 * DAY + 16 * HOUR)
    fake_stripe.customer_pays(invoice, at=T0 + 22 * DAY)
    fake_stripe.inject(400, times=1, route=SUBSCRIPTION_UPDATE)
    fake_stripe.set_now(T0 + 22 * DAY + HOUR)
    failed = cli(a.config, "tick", "--now", (T0 + 22 * DAY + HOUR).isoformat(), env=ENV)
    assert failed.exit_code == 1 and "lift-suspend" in failed.stderr
    assert _paused(fake_stripe, invoice) is not None and not a.received("Thank you")
    a.tick(22 * DAY + 2 * HOUR)                                    # after dunning.action_retry_after
    assert _paused(fake_stripe, invoice) is None
    assert len(a.received("Thank you")) == 1
    a.tick(23 * DAY)
    assert fake_stripe.count(SUBSCRIPTION_UPDATE) == 3 and len(a.received("Thank you")) == 1


def test_in_monitor_mode_the_lift_is_a_would(account, fake_stripe):
    a = account()
    invoice = fake_stripe.fail_invoice(at=T0)
    a.tick(HOUR)
    a.tick(12 * DAY + HOUR)                                        # the final notice announces the pause
    a.tick(21 * DAY + 16 * HOUR)                                   # live: dunctl pauses collection
    data = yaml.safe_load(a.config.read_text())
    a.config.write_text(yaml.safe_dump({**data, "mode": "monitor"}, sort_keys=False))
    fake_stripe.customer_pays(invoice, at=T0 + 22 * DAY)
    a.tick(22 * DAY + HOUR)
    assert fake_stripe.count(SUBSCRIPTION_UPDATE) == 1             # the pause only: monitor writes nothing
    assert _paused(fake_stripe, invoice) is not None
    assert "lift-suspend (resume_subscription) would: lift the pause dunctl made" in a.case_show(invoice)


def test_a_pause_dunctl_did_not_make_is_never_lifted(account, fake_stripe):
    a = account()
    invoice = fake_stripe.fail_invoice(at=T0)
    a.tick(HOUR)
    fake_stripe.pause_collection(fake_stripe.subscription_of(invoice)["id"], "keep_as_draft", at=T0 + DAY)
    a.tick(DAY + HOUR)                                             # someone paused it: the case is held
    fake_stripe.customer_pays(invoice, at=T0 + 2 * DAY)
    a.tick(2 * DAY + HOUR)
    a.tick(3 * DAY)
    assert fake_stripe.count(SUBSCRIPTION_UPDATE) == 0
    assert _paused(fake_stripe, invoice) == {"behavior": "keep_as_draft", "resumes_at": None}
    assert not a.received("Thank you")      # "your subscription continues" would not be true while it is paused


# -- defect 6: a final notice before and a confirmation after; collections hears what happened ---------------------


def test_a_cancellation_is_announced_before_confirmed_after_and_collections_hears_what_happened(
        account, fake_stripe):
    a = account()
    invoice = fake_stripe.fail_invoice(amount=12900, at=T0)
    customer = "a@example.com"
    for day in (0.05, 3, 4, 8, 12, 15, 21, 22, 26):
        a.tick(day * DAY)
    told = a.mail(customer)
    assert told[-1].startswith("Your Example subscription will be cancelled on")   # the cancel-notice, day 26
    assert fake_stripe.count(CANCEL) == 0
    a.tick(30 * DAY + 16 * HOUR)                   # once the day the cancel-notice named has ended in New York
    assert fake_stripe.count(CANCEL) == 1
    assert a.mail(customer) == told                # never told in the tick that cancels
    a.tick(30 * DAY + 17 * HOUR)
    assert a.mail(customer)[len(told):] == ["Your Example subscription has been cancelled"]
    a.tick(30 * DAY + 18 * HOUR)                   # the case closes once the customer was told
    assert json.loads(cli(a.config, "status", "--all", "--json").stdout)["cases"][0]["state"] == "exhausted"
    collections = a.mail("collections@example.com")
    messages = len(told) + 1
    assert collections[-1] == f"[dunctl] Cancelled after 1 attempt and {messages} messages, $129.00 unpaid: " \
                              f"{fake_stripe.invoice(invoice)['number']}"
    assert "[dunctl] Collection paused after 1 attempt and" in " ".join(collections)
    assert not [s for s in collections if "Recovered" in s]
    for day in (31, 35):
        a.tick(day * DAY)
    assert len(a.mail()) == len(told) + 1 + len(collections)      # nothing more, to anyone


def test_collections_hears_recovered_only_of_a_paid_invoice(account, fake_stripe):
    a = account()
    invoice = fake_stripe.fail_invoice(amount=12900, at=T0)
    for day in (0.05, 12, 15):                                    # escalated on day 15: a person holds it
        a.tick(day * DAY)
    fake_stripe.customer_pays(invoice, at=T0 + 16 * DAY)
    a.tick(16 * DAY + HOUR)
    collections = a.mail("collections@example.com")
    assert collections[-1] == f"[dunctl] Recovered, no action needed: {fake_stripe.invoice(invoice)['number']}"


def test_a_payment_after_the_cancellation_is_not_called_no_action_needed(account, fake_stripe):
    a = account()
    invoice = fake_stripe.fail_invoice(amount=12900, at=T0)
    for day in (0.05, 12, 15, 22, 26, 30.7, 30.75, 30.8):
        a.tick(day * DAY)
    assert fake_stripe.count(CANCEL) == 1
    fake_stripe.customer_pays(invoice, at=T0 + 33 * DAY)
    a.tick(33 * DAY + HOUR)
    subscription = fake_stripe.subscription_of(invoice)["id"]
    assert a.mail("collections@example.com")[-1] == (
        f"[dunctl] Recovered after the subscription was cancelled: {subscription} stays cancelled unless someone "
        f"restarts it: {fake_stripe.invoice(invoice)['number']}")
    assert not a.received("Thank you")             # "your subscription continues as before" would be false


# -- defect 11: "payment received, thank you" -----------------------------------------------------------------------


def test_a_customer_who_pays_mid_sequence_is_thanked_once(account, fake_stripe):
    a = account()
    invoice = fake_stripe.fail_invoice(amount=4900, at=T0)
    a.tick(HOUR)
    fake_stripe.customer_pays(invoice, at=T0 + 2 * DAY)
    for offset in (2 * DAY + HOUR, 3 * DAY, 4 * DAY, 12 * DAY):
        a.tick(offset)
    thanks = a.received("Thank you")
    assert len(thanks) == 1 and thanks[0].rcpt_tos == ["a@example.com"]
    text = thanks[0].message.get_body(("plain",)).get_content()
    assert "is now paid in full" in text and "$49.00" in text and "subscription continues as before" in text
    assert a.mail("a@example.com")[-1] == "Thank you: we have received your payment to Example"


def test_an_invoice_paid_before_any_message_gets_no_thanks(account, fake_stripe):
    a = account()
    invoice = fake_stripe.fail_invoice(at=T0)
    fake_stripe.customer_pays(invoice, at=T0 + timedelta(minutes=10))    # before the 30m notice
    a.tick(HOUR)
    a.tick(DAY)
    assert a.mail() == []


def test_cases_paid_together_get_one_thank_you(account, fake_stripe):
    a = account()
    first = fake_stripe.fail_invoice(amount=2000, at=T0)
    customer = fake_stripe.invoice(first)["customer"]
    second = fake_stripe.fail_invoice(customer, amount=3000, at=T0,
                                      subscription=fake_stripe.subscription_of(first)["id"])
    a.tick(HOUR)
    for invoice in (first, second):
        fake_stripe.customer_pays(invoice, at=T0 + DAY)
    a.tick(DAY + HOUR)
    a.tick(2 * DAY)
    thanks = a.received("Thank you")
    assert len(thanks) == 1
    assert sorted(sent_as(a.config, thanks[0].message)[0].split(", ")) == sorted([first, second])


def test_the_thank_you_waits_for_the_end_of_quiet_hours(account, fake_stripe):
    a = account(**{"sender.quiet_hours": "21:00-08:00"})          # New York; T0 is 09:00 there
    invoice = fake_stripe.fail_invoice(at=T0)
    a.tick(HOUR)
    fake_stripe.customer_pays(invoice, at=T0 + 13 * HOUR)
    a.tick(13 * HOUR)                                             # 22:00 in New York
    assert not a.received("Thank you")
    a.tick(20 * HOUR)                                             # 05:00: still quiet
    assert not a.received("Thank you")
    a.tick(23 * HOUR + timedelta(minutes=5))                      # 08:05
    assert len(a.received("Thank you")) == 1
    a.tick(2 * DAY)
    assert len(a.received("Thank you")) == 1


def test_a_sequence_turns_the_thank_you_off_with_one_key(account, fake_stripe, tmp_path):
    a = account()
    path = tmp_path / "sequences" / "standard.yaml"
    sequence = yaml.safe_load(path.read_text())
    sequence.pop("on_recovery")
    path.write_text(yaml.safe_dump(sequence, sort_keys=False))
    invoice = fake_stripe.fail_invoice(at=T0)
    a.tick(HOUR)
    fake_stripe.customer_pays(invoice, at=T0 + DAY)
    a.tick(DAY + HOUR)
    assert not a.received("Thank you")


def test_dunning_off_means_no_thank_you_either(account, fake_stripe):
    a = account()
    invoice = fake_stripe.fail_invoice(at=T0)
    a.tick(HOUR)
    customer = fake_stripe.invoice(invoice)["customer"]
    fake_stripe.store["customer"][customer]["metadata"]["dunning"] = "off"
    fake_stripe.emit("customer.updated", fake_stripe.store["customer"][customer], previous_attributes={
        "metadata": {}})
    fake_stripe.customer_pays(invoice, at=T0 + DAY)
    a.tick(DAY + HOUR)
    assert not a.received("Thank you")
    assert "recovered (email) skipped: the customer has metadata dunning=off" in a.case_show(invoice)


# -- the shipped sequences: every irreversible step announced before it and confirmed after it ---------------------


def test_every_shipped_irreversible_step_is_announced_before_and_confirmed_after():
    from dunctl.config import CUSTOMER, SUSPENDING, Sequence
    from dunctl.scaffold import shipped_dir

    for path in sorted((shipped_dir() / "sequences").glob("*.yaml")):
        sequence = Sequence.model_validate(yaml.safe_load(path.read_text()))
        assert sequence.on_recovery is not None, path.name           # the thank-you is on in every starter
        steps = sequence.steps
        for i, step in enumerate(steps):
            if step.action not in SUSPENDING:
                continue
            before = [s for s in steps[:i] if s.audience == CUSTOMER and s.announces == step.id]
            after = [s for s in steps[i + 1:] if s.audience == CUSTOMER]
            assert before, f"{path.name}: nothing announces '{step.id}'"
            assert after and not any(s.action in SUSPENDING for s in steps[i + 1:steps.index(after[0])]), \
                f"{path.name}: nothing confirms '{step.id}'"


def test_an_unknown_thank_you_template_is_refused_when_the_config_loads(tmp_path):
    config = starter(tmp_path)
    path = tmp_path / "sequences" / "standard.yaml"
    path.write_text(path.read_text().replace("on_recovery: {email: recovered}", "on_recovery: {email: thanks}"))
    result = cli(config, "check")
    assert result.exit_code == 2
    assert "on_recovery.email" in result.output and "unknown template 'thanks'" in result.output


def test_a_notice_announcing_the_cancellation_is_not_taken_for_the_pauses_confirmation():
    """The day-26 cancel-notice comes after the day-21 pause in the sequence: it announces the cancellation
    (`announces: cancel`), so a pause that did not happen does not silence it."""
    from dunctl.config import Sequence
    from dunctl.planner import RUN, CaseSnapshot, Settings, StepRecord, plan

    sequence = Sequence.model_validate({"name": "t", "steps": [
        {"id": "notice", "at": "30m", "action": "email", "template": "x"},
        {"id": "suspend", "at": "21d", "action": "pause_subscription"},
        {"id": "cancel-notice", "at": "26d", "action": "email", "template": "x", "announces": "cancel"},
        {"id": "cancel", "at": "30d", "action": "cancel_subscription"}]})
    snapshot = CaseSnapshot(first_failed_at=T0, failure_type="card_soft", attempts=1, facts={})
    records = {"notice": StepRecord("done", 1, T0 + timedelta(minutes=30)), "suspend": StepRecord("skipped")}
    result = plan(snapshot, sequence, records, Settings(), T0 + 26 * DAY)
    assert [(d.step.id, d.verdict) for d in result.decisions] == [("cancel-notice", RUN)]
