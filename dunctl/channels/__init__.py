"""Channels deliver what a step decided to say: email, SMS, Slack, and signed webhooks.

Every transport takes a rendered message plus the action's idempotency key and returns a Delivery, or raises
ChannelError with a reason a person can act on: DeliveryUncertain (a ChannelError) when the message may have gone
out (a timeout after it was handed over), plain ChannelError when nothing left. Every call has a total deadline
(the channel's `timeout`). Every transport has `close()`, which the tick calls when it ends (the SMTP transport
keeps one connection open for the whole tick). Secrets (SMTP password, Slack URL, Twilio token, webhook secret)
are read from the environment variables the config names, at send time, and never appear in an error message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass
class EmailMessage:
    to: str | list[str]           # one address, or a list of them
    subject: str
    text: str
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    cc: list[str] = field(default_factory=list)


@dataclass
class SmsMessage:
    to: str
    body: str


@dataclass
class Delivery:
    """What a transport reports back: a short detail for the timeline and the provider's id if any."""

    detail: str
    provider_id: str | None = None


def sending_clock(start: datetime) -> Callable[[], datetime]:
    """A clock for transports that stamp the moment of sending (the webhook signature): `start` (the tick's
    `now`, from the CLI's one clock) plus the time elapsed since, read from the monotonic clock, never the wall."""
    began = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - began)
