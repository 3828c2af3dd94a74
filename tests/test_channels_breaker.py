"""The per-channel breaker against a real SMTP server that never answers: 3 timeouts, then nothing is tried."""

import time
from datetime import datetime, timezone

import pytest

from dunctl.channels import EmailMessage
from dunctl.channels.breaker import Breaker
from dunctl.channels.email import SmtpTransport
from dunctl.config import EmailChannel
from dunctl.errors import ChannelError
from tests.badservers import BadSmtp
from tests.servers import HOST, smtp_server  # noqa: F401

NOW = datetime(2026, 11, 3, 14, 30, 5, tzinfo=timezone.utc)


def mail(i: int) -> EmailMessage:
    return EmailMessage(f"c{i}@customer.test", f"notice {i}", "Your payment failed.\n")


def send_all(transport, breaker, count):
    errors = []
    for i in range(count):
        try:
            breaker.call("email", lambda: transport.send(mail(i), sender="b@acme.test", reply_to=None,
                                                         key=f"in_{i}:notice", now=NOW))
        except ChannelError as exc:
            errors.append(exc.message)
    return errors


def test_a_channel_that_keeps_failing_is_skipped_for_the_rest_of_the_tick():
    with BadSmtp("hang_before_data_reply") as server:
        transport = SmtpTransport(EmailChannel(transport="smtp", host=HOST, port=server.port, timeout=0.3), {})
        started = time.monotonic()
        errors = send_all(transport, Breaker(), 10)
        elapsed = time.monotonic() - started
        transport.close()
    assert len(errors) == 10
    assert all("did not answer within 0.3s" in e for e in errors[:3])
    assert all("failed 3 times in a row in this tick" in e for e in errors[3:])
    assert elapsed < 2.5                                        # 3 timeouts, not 10


def test_a_success_resets_the_count(smtp_server):
    breaker = Breaker(after=2)
    with pytest.raises(ChannelError):
        breaker.call("email", lambda: (_ for _ in ()).throw(ChannelError("down")))
    transport = SmtpTransport(EmailChannel(transport="smtp", host=HOST, port=smtp_server.port, timeout=5), {})
    assert send_all(transport, breaker, 2) == []
    transport.close()
    assert not breaker.is_open("email") and breaker.failures["email"] == 0
    assert len(smtp_server.received) == 2
