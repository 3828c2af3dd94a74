"""Signed webhooks: a JSON event POSTed to the customer's endpoint, signed the way Stripe signs its own.

    Dunctl-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with the shared secret>
    Idempotency-Key: <the action's key>   (also the event's "id": a receiver deduplicates on it)

A receiver checks the signature with `verify_signature` and rejects old timestamps to stop replays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from dunctl.channels import Delivery
from dunctl.channels.http import post, status_error
from dunctl.clock import utc
from dunctl.config import WebhookChannel
from dunctl.errors import ChannelError

SIGNATURE_HEADER = "Dunctl-Signature"
DEFAULT_TOLERANCE = 300  # seconds


def sign(secret: str, timestamp: int, body: bytes | str) -> str:
    """The hex HMAC-SHA256 of "<timestamp>.<body>"."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes | str) -> str:
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify_signature(secret: str, header: str | None, body: bytes | str,
                     tolerance: float | timedelta = DEFAULT_TOLERANCE, now: datetime | None = None) -> bool:
    """True when `header` carries a v1 signature of `body` made with `secret`, timestamped within `tolerance`
    seconds of `now`. `now=None` skips the timestamp check (for replaying stored requests in tests)."""
    if not header or not secret:
        return False
    timestamp = None
    signatures = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    if now is not None:
        limit = tolerance.total_seconds() if isinstance(tolerance, timedelta) else tolerance
        if abs(utc(now).timestamp() - timestamp) > limit:
            return False
    expected = sign(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)


class WebhookTransport:
    """`clock`, when given, is read at the moment of sending for the signature's timestamp (and the event's
    `created`): a receiver rejects old timestamps, and a long tick must not sign with the time it started."""

    def __init__(self, config: WebhookChannel, environ: Mapping[str, str], *,
                 clock: Callable[[], datetime] | None = None):
        self.config = config
        self.environ = environ
        self.clock = clock

    def _url(self) -> str:
        config = self.config
        if config.url:
            return config.url
        if config.url_env:
            url = self.environ.get(config.url_env)
            if not url:
                raise ChannelError(f"the webhook URL is not set: environment variable {config.url_env} is empty "
                                   "or missing", f"export {config.url_env}=https://...")
            return url
        raise ChannelError("the webhook channel has no URL", "set channels.webhook.url or channels.webhook.url_env")

    def _label(self, url: str) -> str:
        host = urllib.parse.urlsplit(url).netloc.rpartition("@")[2]  # never show credentials in a URL
        return f"webhook {host}" if host else "webhook"

    def post(self, event: str, payload: dict, key: str, now: datetime | None = None) -> Delivery:
        """POST the signed event. The timestamp is `self.clock()` when the transport has a clock, else `now`."""
        var = self.config.secret_env
        secret = self.environ.get(var)
        if not secret:
            raise ChannelError(f"the webhook signing secret is not set: environment variable {var} is empty or "
                               "missing", f"export {var}=<a long random string shared with the receiver>")
        url = self._url()
        if self.clock is None and now is None:
            raise ChannelError("the webhook transport needs a clock or the time of sending")
        timestamp = int(utc(self.clock() if self.clock is not None else now).timestamp())
        body = json.dumps({"type": event, "id": key, "created": timestamp, "data": payload},
                          separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")
        headers = {SIGNATURE_HEADER: signature_header(secret, timestamp, body), "Idempotency-Key": key}
        label = self._label(url)
        response = post(url, body, content_type="application/json", headers=headers,
                        timeout=self.config.timeout, label=label, secrets=(url, secret))
        if not response.ok:
            raise status_error(label, response)
        return Delivery(f"{event} delivered to {label} (HTTP {response.status})")

    def close(self) -> None:
        """Nothing to release (one connection per event); here so every transport can be closed the same way."""
