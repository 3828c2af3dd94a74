"""Irreversible steps only when earned, end to end: `dunctl tick` against the fake Stripe server over HTTP and a
real SMTP server. Going live after monitoring (issue 20, defect 1) and a month without cron (defect 2) each send
the latest true message first; the pause and the cancellation come at least 3 days after a delivered
announcement, never in the tick that sends it."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from tests.fakestripe import TEST_KEY, fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, cli, open_engine_ledger, starter, sent_as
from tests.servers import SmtpServer

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
CANCEL, PAUSE = "DELETE /v1/subscriptions/:id", "POST /v1/subscriptions/:id"
ANNOUNCED_BY = {"suspend": "final-notice", "cancel": "cancel-notice"}   # in the shipped sequences


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


class Account:
    """A starter config on the fake Stripe account and the SMTP server; two card customers and one ACH customer
    whose first payment failed at T0."""

    def __init__(self, tmp_path, fake, smtp, mode: str):
        self.fake, self.smtp = fake, smtp
        self.config = starter(tmp_path, mode=mode, **{
            "stripe.api_base": fake.url, "stripe.recheck_before_action": True,
            "channels.email": {"transport": "smtp", "host": smtp.host, "port": smtp.port}})
        fake.set_now(T0)
        self.invoices = [fake.fail_invoice(email=f"card{i}@example.com", at=T0) for i in range(2)]
        self.invoices.append(fake.fail_invoice(email="ach@example.com", payment_method_type="us_bank_account",
                                               at=T0))

    def tick(self, when):
        self.fake.set_now(when)
        result = cli(self.config, "tick", "--now", when.isoformat(), env={"STRIPE_API_KEY": TEST_KEY})
        assert result.exit_code == 0, result.output
        return result

    def go_live(self):
        data = yaml.safe_load(self.config.read_text())
        data["mode"] = "live"
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))

    def mails(self) -> list[tuple[str, str]]:
        """(customer, step) of every email the customers got (the collections team's are left out)."""
        return sorted((r.rcpt_tos[0], sent_as(self.config, r.message)[1]) for r in self.smtp.received
                      if not r.rcpt_tos[0].startswith("collections@"))

    def irreversible_were_announced(self, days: float = 3) -> int:
        """Every pause and cancellation came at least `days` after its announcement was delivered. Returns how
        many ran."""
        ledger = open_engine_ledger(self.config)
        ran = 0
        try:
            for invoice in self.invoices:
                actions = {a["step_id"]: a for a in ledger.actions(ledger.cases.for_invoice(invoice)["id"])}
                for step, announcement in ANNOUNCED_BY.items():
                    if actions.get(step, {}).get("status") != "done":
                        continue
                    ran += 1
                    told = actions[announcement]
                    assert told["status"] == "done", (invoice, step, told)
                    gap = _at(actions[step]["finished_at"]) - _at(told["finished_at"])
                    assert gap >= timedelta(days=days), (invoice, step, gap)
        finally:
            ledger.close()
        return ran


def _at(text):
    from dunctl.clock import from_iso

    return from_iso(text)


def test_going_live_after_monitoring_tells_customers_before_anything_irreversible(tmp_path, fake_stripe, smtp):
    account = Account(tmp_path, fake_stripe, smtp, "monitor")
    for day in (1, 11, 31):
        account.tick(T0 + day * DAY)
    assert account.mails() == [] and fake_stripe.count(CANCEL) + fake_stripe.count(PAUSE) == 0

    account.go_live()
    account.tick(T0 + 31 * DAY + HOUR)
    # a `would` told nobody: the first live tick sends each customer the latest message that is still true
    # (not "we paused your subscription": no pause happened), and cancels and pauses nothing
    assert (fake_stripe.count(CANCEL), fake_stripe.count(PAUSE)) == (0, 0)
    assert account.mails() == [("ach@example.com", "final-notice")] + \
        [(f"card{i}@example.com", "final-notice") for i in range(2)]

    for day in range(32, 42):
        account.tick(T0 + day * DAY + HOUR)
    assert fake_stripe.count(PAUSE) == 3 and fake_stripe.count(CANCEL) == 2
    assert account.irreversible_were_announced() == 5


def test_after_a_month_without_cron_the_final_notice_goes_out_before_any_pause_or_cancellation(
        tmp_path, fake_stripe, smtp):
    account = Account(tmp_path, fake_stripe, smtp, "live")
    account.tick(T0 + HOUR)                                   # the one real day-0 email
    assert [step for _, step in account.mails()] == ["notice"] * 3
    smtp.received.clear()

    account.tick(T0 + 30 * DAY + HOUR)                        # cron was down for 30 days
    assert (fake_stripe.count(CANCEL), fake_stripe.count(PAUSE)) == (0, 0)
    assert [step for _, step in account.mails()] == ["final-notice"] * 3
    for received in [r for r in smtp.received if not r.rcpt_tos[0].startswith("collections@")]:
        # and it names the pause, 3 days from now (not day 21, long past, nor the cancellation instead)
        body = received.message.get_body(("plain",)).get_content()
        assert "will be paused at the end of that day" in body and "December 5, 2026" in body, body

    account.tick(T0 + 33 * DAY)                               # not yet 3 days after the final notice
    assert fake_stripe.count(PAUSE) == 0
    account.tick(T0 + 33 * DAY + 2 * HOUR)                    # 3 days, but December 5 has not ended in New York
    assert fake_stripe.count(PAUSE) == 0
    account.tick(T0 + 33 * DAY + 16 * HOUR)                   # 01:00 on December 6 in New York
    assert fake_stripe.count(PAUSE) == 3 and fake_stripe.count(CANCEL) == 0
    for day in range(34, 40):
        account.tick(T0 + day * DAY + 2 * HOUR)
    assert fake_stripe.count(CANCEL) == 2
    assert account.irreversible_were_announced() == 5


def test_after_going_live_no_dunctl_retry_runs_while_stripes_own_are_still_on(tmp_path, fake_stripe, smtp):
    """Monitoring only planned turning Stripe's retries off (`would`): once live, that has not happened, and while
    it fails no dunctl retry may charge the card beside Stripe's own."""
    account = Account(tmp_path, fake_stripe, smtp, "monitor")
    data = yaml.safe_load(account.config.read_text())
    data["stripe"]["retries"] = "dunctl"
    account.config.write_text(yaml.safe_dump(data, sort_keys=False))
    account.tick(T0 + HOUR)
    account.go_live()
    fake_stripe.inject(400, times=100, route="POST /v1/invoices/:id")   # turning Stripe's retries off fails
    fake_stripe.set_now(T0 + 2 * DAY + HOUR)
    result = cli(account.config, "tick", "--now", (T0 + 2 * DAY + HOUR).isoformat(), env={"STRIPE_API_KEY": TEST_KEY})
    assert result.exit_code == 1                                        # the turn-off failed, and says so
    assert fake_stripe.count("POST /v1/invoices/:id/pay") == 0          # and no retry ran beside Stripe's
