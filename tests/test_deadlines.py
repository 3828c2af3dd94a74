"""A deadline in a message is the end of a day in the customer's time zone, and dunctl honours it (issue #23,
defect 4): `dunctl tick` against the fake Stripe server and a real SMTP server, with a customer in Tokyo and one
in Berlin whose payments failed at the same moment. The final notice names the day of the pause in each one's
zone, and the pause waits until that day has ended there."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.fakestripe import TEST_KEY, fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, cli, starter
from tests.servers import SmtpServer

PAUSE = "POST /v1/subscriptions/:id"


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


def test_the_pause_waits_until_the_day_the_final_notice_named_has_ended_in_the_customers_zone(
        tmp_path, fake_stripe, smtp):
    config = starter(tmp_path, mode="live", **{
        "stripe.api_base": fake_stripe.url,
        "channels.email": {"transport": "smtp", "host": smtp.host, "port": smtp.port}})
    fake_stripe.set_now(T0)   # 2 Nov 2026 14:00 UTC; the standard sequence pauses at 21d: 23 Nov 14:00 UTC
    for email, zone, locale in (("tokyo@example.jp", "Asia/Tokyo", "ja"), ("berlin@example.de", "Europe/Berlin", "de")):
        customer = fake_stripe.add_customer(email, name="Kunde", metadata={"timezone": zone},
                                            preferred_locales=[locale], at=T0)
        fake_stripe.add_payment_method(customer, at=T0)
        subscription = fake_stripe.add_subscription(customer, amount=4900, at=T0)
        fake_stripe.fail_invoice(customer, amount=4900, subscription=subscription, at=T0)

    def tick(when: datetime):
        fake_stripe.set_now(when)
        result = cli(config, "tick", "--now", when.isoformat(), env={"STRIPE_API_KEY": TEST_KEY})
        assert result.exit_code == 0, result.output

    tick(T0 + timedelta(days=12, minutes=1))
    subjects = {r.rcpt_tos[0]: r.message["Subject"] for r in smtp.received}
    # 23:00 in Tokyo and 15:00 in Berlin on 23 November: each is told that day, in its own zone and words
    assert "2026年11月23日までに" in subjects["tokyo@example.jp"], subjects
    assert "bis zum 23. November 2026" in subjects["berlin@example.de"], subjects

    tick(datetime(2026, 11, 23, 14, 30, tzinfo=timezone.utc))     # due by the sequence, and told 11 days ago
    assert fake_stripe.count(PAUSE) == 0                           # but the 23rd has ended nowhere yet
    tick(datetime(2026, 11, 23, 15, 30, tzinfo=timezone.utc))     # 00:30 on the 24th in Tokyo
    assert fake_stripe.count(PAUSE) == 1
    tick(datetime(2026, 11, 23, 22, 30, tzinfo=timezone.utc))     # 23:30 on the 23rd in Berlin
    assert fake_stripe.count(PAUSE) == 1
    tick(datetime(2026, 11, 23, 23, 30, tzinfo=timezone.utc))     # 00:30 on the 24th in Berlin
    assert fake_stripe.count(PAUSE) == 2
