"""Pre-dunning notices as customers read them (issue 23): every recipient reached, in the customer's language,
greeted like the dunning emails, one renewal reminder with the whole charge, and `preview` for every template.
Notices go through the fake Stripe server over HTTP, the real SDK and a real SMTP server."""

from __future__ import annotations

import pytest

from dunctl.channels import EmailMessage
from dunctl.channels.email import build_message
from dunctl.errors import ChannelError
from tests.fakestripe import fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0
from tests.test_notices import utc, world  # noqa: F401  (fixture)


def test_a_notice_reaches_every_billing_contact_on_any_python(world):
    w = world()
    w.customer_with_card(metadata={"billing_emails": "ap@black.test, ingrid@black.test"})
    w.tick(T0)
    w.tick(utc(2026, 12, 18, 9))
    [got] = w.smtp.received
    assert sorted(got.rcpt_tos) == ["ada@example.com", "ap@black.test", "ingrid@black.test"]
    assert [n["recipient"] for n in w.ledger.db.query("SELECT recipient FROM notices WHERE status = 'done'")] == \
        ["ap@black.test, ingrid@black.test, ada@example.com"]


def test_a_comma_joined_recipient_string_is_refused_not_parsed():
    # parseaddr reads 'a, b' as the first address on 3.11.7 and as no address on 3.13: never hand it one
    with pytest.raises(ChannelError, match="several addresses in one string"):
        build_message(EmailMessage("ap@black.test, ingrid@black.test", "s", "t"), sender="billing@acme.test",
                      reply_to=None, key="k", now=T0)
