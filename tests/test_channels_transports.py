"""The tick's set of transports: one SMTP connection for the tick, closed at its end, a breaker per channel, and
webhook signatures stamped at the moment of sending."""

import time
from datetime import datetime, timezone

import pytest

from dunctl.channels import EmailMessage
from dunctl.channels.transports import open_channels
from dunctl.channels.webhook import SIGNATURE_HEADER
from dunctl.config import load_config
from dunctl.errors import ChannelError
from tests.badservers import BadSmtp
from tests.helpers import starter
from tests.servers import HOST, http_receiver, smtp_server  # noqa: F401

NOW = datetime(2026, 11, 3, 14, 30, 5, tzinfo=timezone.utc)


def config_for(tmp_path, **channels):
    return load_config(starter(tmp_path, **{f"channels.{name}": value for name, value in channels.items()}))


def mail(i: int) -> EmailMessage:
    return EmailMessage(f"c{i}@customer.test", f"notice {i}", "Your payment failed.\n")


def test_one_connection_for_the_tick_and_quit_at_its_end(tmp_path, smtp_server):
    config = config_for(tmp_path, email={"transport": "smtp", "host": HOST, "port": smtp_server.port})
    with open_channels(config, {}, NOW) as channels:
        for i in range(4):
            channels.email(mail(i), f"in_{i}:notice", NOW)
        transport = channels._built["email"]
    assert [r.message["Subject"] for r in smtp_server.received] == [f"notice {i}" for i in range(4)]
    assert len({r.peer for r in smtp_server.received}) == 1
    assert transport._smtp is None                              # closed when the tick ended


def test_a_channel_that_keeps_failing_is_skipped_for_the_rest_of_the_tick(tmp_path):
    with BadSmtp("hang_before_data_reply") as server:
        config = config_for(tmp_path, email={"transport": "smtp", "host": HOST, "port": server.port,
                                             "timeout": 0.3})
        started = time.monotonic()
        errors = []
        with open_channels(config, {}, NOW) as channels:
            for i in range(10):
                with pytest.raises(ChannelError) as caught:
                    channels.email(mail(i), f"in_{i}:notice", NOW)
                errors.append(caught.value.message)
        elapsed = time.monotonic() - started
    assert all("did not answer within 0.3s" in e for e in errors[:3])
    assert all("failed 3 times in a row in this tick" in e for e in errors[3:])
    assert elapsed < 2.5                                        # 3 timeouts, not 10


def test_webhook_signatures_carry_the_time_of_sending(tmp_path, http_receiver):
    config = config_for(tmp_path, webhook={"url": http_receiver.url("/h")})
    channels = open_channels(config, {"DUNCTL_WEBHOOK_SECRET": "whsec_x"}, NOW)
    time.sleep(1.1)                                             # a tick that has been running for a while
    channels.webhook("dunning.step", {}, "k", NOW)
    channels.close()
    stamp = int(http_receiver.last.headers[SIGNATURE_HEADER].split(",")[0][2:])
    assert int(NOW.timestamp()) + 1 <= stamp <= int(NOW.timestamp()) + 5
