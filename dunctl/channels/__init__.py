"""Channels deliver what a step decided to say: email, SMS, Slack, and signed webhooks.

Every transport takes a rendered message plus the action's idempotency key and returns a Delivery, or raises
ChannelError with a reason a person can act on. Secrets (SMTP password, Slack URL, Twilio token, webhook secret)
are read from the environment variables the config names, at send time, and never appear in an error message.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EmailMessage:
    to: str
    subject: str
    text: str
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SmsMessage:
    to: str
    body: str


@dataclass
class Delivery:
    """What a transport reports back: a short detail for the timeline and the provider's id if any."""

    detail: str
    provider_id: str | None = None
