"""Twilio SMS transport against a real local HTTP receiver standing in for api.twilio.com."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs

import pytest

from dunctl.channels import SmsMessage
from dunctl.channels.sms import TwilioTransport
from dunctl.config import SmsChannel
from dunctl.errors import ChannelError, DeliveryUncertain
from tests.servers import HOST, closed_port, http_receiver  # noqa: F401

SID, TOKEN = "AC0123456789abcdef", "tok_very_secret"
ENV = {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN}
MESSAGE = SmsMessage(to="+15555550123", body="Acme: your payment failed. Update: https://pay.test/x?a=1&b=2")


def transport(base_url: str, environ=ENV, timeout: float = 5) -> TwilioTransport:
    return TwilioTransport(SmsChannel.model_validate({"from": "+15555550100", "base_url": base_url,
                                                      "timeout": timeout}), environ)


def test_posts_form_fields_with_basic_auth(http_receiver):
    http_receiver.respond(201, json.dumps({"sid": "SM0123", "status": "queued"}), "application/json")
    delivery = transport(http_receiver.url() + "/").send(MESSAGE, "in_123:sms")

    request = http_receiver.last
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.body.decode(), strict_parsing=True) == {
        "To": ["+15555550123"], "From": ["+15555550100"], "Body": [MESSAGE.body]}
    scheme, _, encoded = request.headers["Authorization"].partition(" ")
    assert scheme == "Basic" and base64.b64decode(encoded).decode() == f"{SID}:{TOKEN}"
    assert delivery.provider_id == "SM0123"
    assert "queued" in delivery.detail


def test_twilio_error_json_gives_code_and_message(http_receiver):
    http_receiver.respond(400, json.dumps({"code": 21211, "message": "The 'To' number +1555 is not a valid phone "
                                           "number.", "more_info": "https://www.twilio.com/docs/errors/21211",
                                           "status": 400}), "application/json")
    with pytest.raises(ChannelError) as caught:
        transport(http_receiver.url()).send(MESSAGE, "k")
    error = caught.value
    assert "error 21211: The 'To' number +1555 is not a valid phone number." in error.message
    assert "HTTP 400" in error.message
    assert error.hint == "https://www.twilio.com/docs/errors/21211"
    assert TOKEN not in error.message


def test_server_error_without_json(http_receiver):
    http_receiver.respond(500, "upstream exploded")
    with pytest.raises(ChannelError, match="Twilio: HTTP 500: upstream exploded"):
        transport(http_receiver.url()).send(MESSAGE, "k")


def test_success_without_sid_is_an_error(http_receiver):
    http_receiver.respond(200, "ok")
    with pytest.raises(ChannelError, match="without a message sid"):
        transport(http_receiver.url()).send(MESSAGE, "k")


def test_missing_credentials_are_named():
    with pytest.raises(ChannelError, match="TWILIO_AUTH_TOKEN is empty or missing"):
        transport("http://127.0.0.1:9", {"TWILIO_ACCOUNT_SID": SID}).send(MESSAGE, "k")
    with pytest.raises(ChannelError, match="TWILIO_ACCOUNT_SID is empty or missing"):
        transport("http://127.0.0.1:9", {}).send(MESSAGE, "k")


def test_connection_refused_and_timeout(http_receiver):
    with pytest.raises(ChannelError, match="Twilio: could not connect: connection refused"):
        transport(f"http://{HOST}:{closed_port()}").send(MESSAGE, "k")
    http_receiver.hang()
    with pytest.raises(DeliveryUncertain, match=r"Twilio: the request was sent but no answer came within 0.2s"):
        transport(http_receiver.url(), timeout=0.2).send(MESSAGE, "k")
