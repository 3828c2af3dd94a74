"""Slack incoming-webhook transport against a real local HTTP receiver."""

from __future__ import annotations

import json
import time

import pytest

from dunctl.channels.slack import SlackTransport
from dunctl.config import SlackChannel
from dunctl.errors import ChannelError, DeliveryUncertain
from tests.badservers import BadHttp
from tests.servers import HOST, closed_port, http_receiver  # noqa: F401

BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*in_123* escalated"}}]


def transport(url: str | None, timeout: float = 5) -> SlackTransport:
    environ = {"SLACK_WEBHOOK_URL": url} if url else {}
    return SlackTransport(SlackChannel(), environ, timeout=timeout)


def test_posts_text_and_blocks_as_json(http_receiver):
    url = http_receiver.url("/services/T000/B000/XXXX")
    delivery = transport(url).post("Invoice in_123 needs a person", BLOCKS, "in_123:escalate")

    request = http_receiver.last
    assert request.method == "POST" and request.path == "/services/T000/B000/XXXX"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {"text": "Invoice in_123 needs a person", "blocks": BLOCKS}
    assert "200" in delivery.detail


def test_no_blocks_sends_text_only(http_receiver):
    transport(http_receiver.url()).post("recovered ✓", None, "k")
    assert json.loads(http_receiver.last.body) == {"text": "recovered ✓"}


def test_missing_url_names_the_variable_not_a_value():
    with pytest.raises(ChannelError, match="environment variable SLACK_WEBHOOK_URL is empty or missing"):
        transport(None).post("x", None, "k")


def test_error_status_includes_code_and_body_without_the_url(http_receiver):
    http_receiver.respond(404, "no_service")
    url = http_receiver.url("/services/SECRET-TOKEN")
    with pytest.raises(ChannelError) as caught:
        transport(url).post("x", None, "k")
    message = caught.value.message
    assert "HTTP 404: no_service" in message and "SLACK_WEBHOOK_URL" in message
    assert "SECRET-TOKEN" not in message and str(http_receiver.port) not in message


def test_server_error_500(http_receiver):
    http_receiver.respond(500, "<html>\n  internal   error\n</html>" + "x" * 1000)
    with pytest.raises(ChannelError) as caught:
        transport(http_receiver.url()).post("x", None, "k")
    message = caught.value.message
    assert "HTTP 500: <html> internal error </html>" in message   # whitespace collapsed
    assert len(message) < 300                                      # an excerpt, not the whole body


def test_connection_refused():
    with pytest.raises(ChannelError, match="could not connect: connection refused"):
        transport(f"http://{HOST}:{closed_port()}/hook").post("x", None, "k")


def test_timeout_after_the_request_is_uncertain(http_receiver):
    http_receiver.hang()
    with pytest.raises(DeliveryUncertain, match=r"the request was sent but no answer came within 0.2s"):
        transport(http_receiver.url(), timeout=0.2).post("x", None, "k")


def test_the_timeout_comes_from_the_config(http_receiver):
    http_receiver.hang()
    slow = SlackTransport(SlackChannel(timeout=0.3), {"SLACK_WEBHOOK_URL": http_receiver.url()})
    started = time.monotonic()
    with pytest.raises(DeliveryUncertain, match="within 0.3s"):
        slow.post("x", None, "k")
    assert time.monotonic() - started < 3      # the default timeout is 10 s


def test_customer_text_never_becomes_a_mention_or_a_link(http_receiver):
    name = "<!channel> Jo <http://evil.test|your bank> & <@U123>\x1b[2J\x07"
    transport(http_receiver.url()).post(f"*Escalated*: invoice in_1 for {name}\nAmount: $49.00", [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"customer {name}"}}], "k")
    sent = json.loads(http_receiver.last.body)
    assert sent["text"] == ("*Escalated*: invoice in_1 for &lt;!channel&gt; Jo &lt;http://evil.test|your bank&gt; "
                            "&amp; &lt;@U123&gt;\nAmount: $49.00")
    assert sent["blocks"][0]["text"]["text"] == ("customer &lt;!channel&gt; Jo &lt;http://evil.test|your bank&gt; "
                                                 "&amp; &lt;@U123&gt;")
    assert sent["blocks"][0]["text"]["type"] == "mrkdwn"


def test_a_webhook_url_echoed_by_the_endpoint_is_scrubbed_from_the_error():
    with BadHttp("echo_url") as server:
        url = f"http://{HOST}:{server.port}/services/T000/B000/SECRETTOKEN123"
        with pytest.raises(ChannelError) as caught:
            transport(url).post("x", None, "k")
    message = caught.value.message
    assert "HTTP 404: no such hook: POST ***" in message
    assert "SECRETTOKEN123" not in message and "/services/" not in message


def test_redirect_is_not_followed(http_receiver):
    http_receiver.respond(302, "moved", headers={"Location": http_receiver.url("/elsewhere")})
    with pytest.raises(ChannelError, match="HTTP 302"):
        transport(http_receiver.url()).post("x", None, "k")
    assert len(http_receiver.requests) == 1
