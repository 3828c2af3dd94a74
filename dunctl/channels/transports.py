"""The configured transports for one tick, as the executor uses them: built on first use, closed at the end.

    with open_channels(config, environ, now) as channels:     # now: the tick's moment, from the CLI's clock
        channels.email(EmailMessage(...), key, now)
        ...
    # every transport closed here: the SMTP connection says QUIT

Same methods and arguments as engine.ChannelSet, plus:
  - close() (and the context manager), which the tick must call when it ends;
  - the webhook signature stamped with the time of sending (sending_clock), not the tick's start;
  - a circuit breaker per channel: after `breaker_after` consecutive failures a channel is not called again in
    this tick; its remaining sends raise ChannelError at once (nothing left, so the executor retries them on a
    later tick), so one dead SMTP server costs `breaker_after` timeouts, not one per due email.
"""

from __future__ import annotations

from datetime import datetime
from typing import Mapping

from dunctl.channels import Delivery, EmailMessage, SmsMessage, sending_clock
from dunctl.config import Config
from dunctl.errors import ChannelError

BREAKER_AFTER = 3


class ChannelSet:
    def __init__(self, config: Config, environ: Mapping[str, str], now: datetime | None = None, *,
                 breaker_after: int | None = BREAKER_AFTER):
        self.config = config
        self.environ = environ
        self.clock = sending_clock(now) if now is not None else None
        self.breaker_after = breaker_after
        self._built: dict[str, object] = {}
        self._failures: dict[str, int] = {}

    def _get(self, name: str):
        if name not in self._built:
            self._built[name] = self._build(name)
        return self._built[name]

    def _build(self, name: str):
        settings = getattr(self.config.file.channels, name)
        if settings is None:
            raise ChannelError(f"the {name} channel is not configured (channels.{name} in {self.config.path.name})")
        if name == "email":
            from dunctl.channels.email import FileTransport, SmtpTransport

            if settings.transport == "file":
                return FileTransport((self.config.base_dir / settings.dir).resolve())
            return SmtpTransport(settings, self.environ)
        if name == "slack":
            from dunctl.channels.slack import SlackTransport

            return SlackTransport(settings, self.environ)
        if name == "webhook":
            from dunctl.channels.webhook import WebhookTransport

            return WebhookTransport(settings, self.environ, clock=self.clock)
        from dunctl.channels.sms import TwilioTransport

        return TwilioTransport(settings, self.environ)

    def _call(self, name: str, send) -> Delivery:
        failures = self._failures.get(name, 0)
        if self.breaker_after and failures >= self.breaker_after:
            raise ChannelError(f"the {name} channel failed {failures} times in a row in this tick; not tried again "
                               "until the next tick")
        try:
            delivery = send(self._get(name))
        except ChannelError:
            self._failures[name] = failures + 1
            raise
        self._failures[name] = 0
        return delivery

    def email(self, message: EmailMessage, key: str, now: datetime) -> Delivery:
        sender = self.config.file.sender
        return self._call("email", lambda t: t.send(message, sender=sender.from_, reply_to=sender.reply_to, key=key,
                                                    now=now))

    def sms(self, message: SmsMessage, key: str) -> Delivery:
        return self._call("sms", lambda t: t.send(message, key))

    def slack(self, text: str, key: str) -> Delivery:
        return self._call("slack", lambda t: t.post(text, None, key))

    def webhook(self, event: str, payload: dict, key: str, now: datetime) -> Delivery:
        return self._call("webhook", lambda t: t.post(event, payload, key, now))

    def close(self) -> None:
        """Close every transport built in this tick (the SMTP connection says QUIT). Safe to call twice."""
        built, self._built = self._built, {}
        for transport in built.values():
            transport.close()

    def __enter__(self) -> "ChannelSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_channels(config: Config, environ: Mapping[str, str], now: datetime | None = None) -> ChannelSet:
    return ChannelSet(config, environ, now)
