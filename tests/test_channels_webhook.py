"""Signed webhook transport against a real local HTTP receiver; signatures checked with verify_signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from datetime import datetime, timedelta, timezone

import pytest

from dunctl.channels import sending_clock
from dunctl.channels.webhook import (
    SIGNATURE_HEADER,
    WebhookTransport,
    sign,
    verify_signature,
)
from dunctl.config import WebhookChannel
from dunctl.errors import ChannelError, DeliveryUncertain
from tests.badservers import BadHttp
from tests.servers import HOST, closed_port, http_receiver  # noqa: F401

NOW = datetime(2026, 11, 3, 14, 30, 5, tzinfo=timezone.utc)
T = int(NOW.timestamp())
SECRET = "whsec_test_0123456789"
ENV = {"DUNCTL_WEBHOOK_SECRET": SECRET}
PAYLOAD = {"invoice": "in_123", "amount_due": 4900, "currency": "usd", "customer": {"name": "Jo Døe"}}


def post(receiver, **config):
    transport = WebhookTransport(WebhookChannel(url=receiver.url("/hooks/dunning"), **config), ENV)
    return transport.post("case.escalated", PAYLOAD, "in_123:escalate", NOW)


def test_posts_the_event_envelope(http_receiver):
    delivery = post(http_receiver)
    request = http_receiver.last
    assert request.path == "/hooks/dunning"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == "in_123:escalate"
    assert json.loads(request.body) == {"type": "case.escalated", "id": "in_123:escalate", "created": T,
                                        "data": PAYLOAD}
    assert "case.escalated" in delivery.detail and "200" in delivery.detail


def test_signature_verifies_with_the_secret_and_not_with_another(http_receiver):
    post(http_receiver)
    request = http_receiver.last
    header = request.headers["Dunctl-Signature"]
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert header == f"t={T},v1={expected}"                 # computed here, independently of dunctl's sign()
    assert verify_signature(SECRET, header, request.body, tolerance=300, now=NOW)
    assert verify_signature(SECRET, header, request.body.decode(), tolerance=300, now=NOW)   # str body too
    assert not verify_signature("whsec_other", header, request.body, tolerance=300, now=NOW)
    assert not verify_signature(SECRET, header, request.body.replace(b"4900", b"4901"), tolerance=300, now=NOW)


def test_signature_timestamp_tolerance(http_receiver):
    post(http_receiver)
    request = http_receiver.last
    header = request.headers["Dunctl-Signature"]
    assert verify_signature(SECRET, header, request.body, 300, NOW + timedelta(seconds=300))
    assert not verify_signature(SECRET, header, request.body, 300, NOW + timedelta(seconds=301))   # replay
    assert not verify_signature(SECRET, header, request.body, timedelta(minutes=5), NOW - timedelta(minutes=6))
    assert verify_signature(SECRET, header, request.body, 300, None)                  # no clock check


@pytest.mark.parametrize("header", [None, "", "v1=abc", f"t={T}", "t=soon,v1=00", f"t={T},v0=00"])
def test_malformed_signature_headers_do_not_verify(header):
    assert not verify_signature(SECRET, header, b"{}", 300, NOW)


def test_any_v1_signature_may_match_for_secret_rotation():
    body = b'{"a":1}'
    header = f"t={T},v1={sign('old', T, body)},v1={sign(SECRET, T, body)}"
    assert verify_signature(SECRET, header, body, 300, NOW)


def test_url_from_the_environment(http_receiver):
    transport = WebhookTransport(WebhookChannel(url_env="HOOK_URL"), {**ENV, "HOOK_URL": http_receiver.url("/e")})
    transport.post("case.recovered", {}, "k1", NOW)
    assert http_receiver.last.path == "/e"


def test_missing_url_or_secret_is_named():
    with pytest.raises(ChannelError, match="environment variable HOOK_URL is empty or missing"):
        WebhookTransport(WebhookChannel(url_env="HOOK_URL"), ENV).post("e", {}, "k", NOW)
    with pytest.raises(ChannelError, match="no URL"):
        WebhookTransport(WebhookChannel(), ENV).post("e", {}, "k", NOW)
    with pytest.raises(ChannelError, match="environment variable DUNCTL_WEBHOOK_SECRET is empty or missing"):
        WebhookTransport(WebhookChannel(url="http://127.0.0.1:9/x"), {}).post("e", {}, "k", NOW)


def test_server_error_includes_status_and_excerpt(http_receiver):
    http_receiver.respond(500, '{"error": "database unavailable"}', "application/json")
    with pytest.raises(ChannelError, match=r'webhook 127\.0\.0\.1:\d+: HTTP 500: \{"error": "database unavailable"\}'):
        post(http_receiver)


def test_connection_refused():
    transport = WebhookTransport(WebhookChannel(url=f"http://user:pw@{HOST}:{closed_port()}/x"), ENV)
    with pytest.raises(ChannelError) as caught:
        transport.post("e", {}, "k", NOW)
    assert "connection refused" in caught.value.message
    assert "pw" not in caught.value.message


def test_a_request_sent_but_never_answered_is_uncertain(http_receiver):
    http_receiver.hang()
    with pytest.raises(DeliveryUncertain, match=r"the request was sent but no answer came within 0.2s"):
        post(http_receiver, timeout=0.2)
    assert len(http_receiver.requests) == 1       # the receiver has it: it may have acted


@pytest.mark.parametrize("behaviour, expected", [
    ("drip", "no answer came within 0.5s"),        # one byte every 50 ms: each read is quick, the whole is not
    ("reset", "the answer was lost"),
])
def test_a_dripping_or_resetting_receiver_is_uncertain_within_the_timeout(behaviour, expected):
    with BadHttp(behaviour, drip_every=0.05) as server:
        transport = WebhookTransport(WebhookChannel(url=f"http://{HOST}:{server.port}/h", timeout=0.5), ENV)
        started = time.monotonic()
        with pytest.raises(DeliveryUncertain, match=expected):
            transport.post("e", {}, "k", NOW)
        assert time.monotonic() - started < 3      # the drip would go on for minutes
    assert len(server.received) == 1


def test_a_gateway_timeout_is_uncertain_and_other_errors_are_not(http_receiver):
    http_receiver.respond(504, "upstream timed out")
    with pytest.raises(DeliveryUncertain, match="HTTP 504"):
        post(http_receiver)
    http_receiver.respond(503, "try later")
    with pytest.raises(ChannelError) as caught:
        post(http_receiver)
    assert not isinstance(caught.value, DeliveryUncertain)


def test_connection_refused_is_a_plain_failure():
    transport = WebhookTransport(WebhookChannel(url=f"http://{HOST}:{closed_port()}/x"), ENV)
    with pytest.raises(ChannelError) as caught:
        transport.post("e", {}, "k", NOW)
    assert not isinstance(caught.value, DeliveryUncertain)


def test_the_signature_carries_the_time_of_sending_not_of_the_tick(http_receiver):
    moments = iter([NOW + timedelta(minutes=7), NOW + timedelta(minutes=9)])
    transport = WebhookTransport(WebhookChannel(url=http_receiver.url("/h")), ENV, clock=lambda: next(moments))
    transport.post("e", {}, "k1", NOW)            # the tick's start is passed, as the executor does today
    transport.post("e", {}, "k2", NOW)
    stamps = [int(r.headers[SIGNATURE_HEADER].split(",")[0][2:]) for r in http_receiver.requests]
    assert stamps == [T + 420, T + 540]
    assert [json.loads(r.body)["created"] for r in http_receiver.requests] == stamps
    last = http_receiver.last
    assert verify_signature(SECRET, last.headers[SIGNATURE_HEADER], last.body, now=NOW + timedelta(minutes=9))
    assert not verify_signature(SECRET, last.headers[SIGNATURE_HEADER], last.body, now=NOW)  # 9 min: too old


def test_sending_clock_advances_from_the_tick_start():
    clock = sending_clock(NOW)
    first = clock()
    time.sleep(0.05)
    assert NOW <= first < clock() < NOW + timedelta(seconds=5)


def test_an_echoed_url_or_secret_never_reaches_the_error():
    with BadHttp("echo_url") as server:
        url = f"http://{HOST}:{server.port}/hooks/{SECRET}"
        with pytest.raises(ChannelError) as caught:
            WebhookTransport(WebhookChannel(url=url), ENV).post("e", {}, "k", NOW)
    assert "HTTP 404: no such hook: POST" in caught.value.message
    assert SECRET not in caught.value.message


def test_credentials_in_the_url_become_basic_auth(http_receiver):
    url = http_receiver.url("/x").replace("http://", "http://hook%40user:p%3Ass@")
    WebhookTransport(WebhookChannel(url=url), ENV).post("e", {}, "k", NOW)
    assert http_receiver.last.headers["Authorization"] == "Basic aG9va0B1c2VyOnA6c3M="   # hook@user:p:ss


def test_a_name_lookup_that_hangs_cannot_hold_a_post_past_its_timeout(monkeypatch):
    # No loopback server can make DNS hang, so the system resolver is replaced by one that takes 5 s.
    real = socket.getaddrinfo

    def slow(host, *args, **kwargs):
        if host == "hooks.example.test":
            time.sleep(5)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    transport = WebhookTransport(WebhookChannel(url="http://hooks.example.test/h", timeout=0.3), ENV)
    started = time.monotonic()
    with pytest.raises(ChannelError, match="could not connect within 0.3s") as caught:
        transport.post("e", {}, "k", NOW)
    assert time.monotonic() - started < 2.5    # the resolver takes 5 s
    assert not isinstance(caught.value, DeliveryUncertain)     # nothing left
