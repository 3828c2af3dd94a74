"""The configured transports, by name, built on first use (a tick that sends nothing needs no SMTP server)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from dunctl.channels import Delivery, EmailMessage, SmsMessage, sending_clock
from dunctl.config import Config
from dunctl.errors import ChannelError


def _email(config: Config, settings, environ: Mapping[str, str]):
    if settings.transport == "file":   # without smtplib and ssl (dunctl/channels/outbox.py)
        from dunctl.channels.outbox import FileTransport   # lazy: see dunctl/lazy.py

        return FileTransport(_outbox(str(config.base_dir), str(settings.dir)))
    from dunctl.channels.email import SmtpTransport   # lazy: see dunctl/lazy.py

    return SmtpTransport(settings, environ)


@functools.lru_cache(maxsize=64)
def _outbox(base_dir: str, directory: str) -> Path:
    """The file transport's directory, resolved once per process rather than on every tick that sends (a demo's
    315: a Python step and a stat per part of the path each time)."""
    return (Path(base_dir) / directory).resolve()


def _slack(config: Config, settings, environ: Mapping[str, str]):
    from dunctl.channels.slack import SlackTransport   # lazy: see dunctl/lazy.py

    return SlackTransport(settings, environ)


def _webhook(config: Config, settings, environ: Mapping[str, str]):
    from dunctl.channels.webhook import WebhookTransport   # lazy: see dunctl/lazy.py

    return WebhookTransport(settings, environ)


def _sms(config: Config, settings, environ: Mapping[str, str]):
    from dunctl.channels.sms import TwilioTransport   # lazy: see dunctl/lazy.py

    return TwilioTransport(settings, environ)


@functools.cache
def _mime():
    """dunctl.channels.mime, with the first email a process sends, then kept: an import statement in `email` ran
    for every message (for a loaded module, a lookup and two AttributeErrors formatted and dropped)."""
    from dunctl.channels import mime   # lazy: see dunctl/lazy.py

    return mime


#: Channel name -> how to build its transport from `channels.<name>` in dunctl.yaml.
TRANSPORTS: dict[str, Callable] = {"email": _email, "slack": _slack, "webhook": _webhook, "sms": _sms}


class ChannelSet:
    def __init__(self, config: Config, environ: Mapping[str, str]):
        self.config = config
        self.environ = environ
        self._built: dict[str, object] = {}

    def configured(self) -> frozenset[str]:
        return frozenset(name for name in TRANSPORTS if getattr(self.config.file.channels, name) is not None)

    def _get(self, name: str):
        if name not in self._built:
            settings = getattr(self.config.file.channels, name)
            if settings is None:
                raise ChannelError(f"the {name} channel is not configured "
                                   f"(channels.{name} in {self.config.path.name})")
            self._built[name] = TRANSPORTS[name](self.config, settings, self.environ)
        return self._built[name]

    def email(self, message: EmailMessage, key: str, now: datetime) -> Delivery:
        """Send `message` for the action `key`. Every email is marked `Auto-Submitted: auto-generated` (RFC 3834:
        no vacation replies back, no loops) and carries one opaque reference, `X-Dunctl-Ref`, instead of any
        internal header: invoice ids, step and notice names tell a customer how dunctl works. The reference is
        derived from the action's key like the Message-ID, so the ledger finds the action from it."""
        sender = self.config.file.sender
        headers = {name: value for name, value in message.headers.items() if not name.lower().startswith("x-dunctl-")}
        headers.update({"Auto-Submitted": "auto-generated", "X-Dunctl-Ref": _mime().reference(key)})
        # every field copied as it is but the headers; dataclasses.replace would look up each field's definition
        # on every call (4 us an email)
        message = EmailMessage(**{**vars(message), "headers": headers})
        return self._get("email").send(message, sender=sender.from_, reply_to=sender.reply_to, key=key, now=now)

    def sms(self, message: SmsMessage, key: str) -> Delivery:
        return self._get("sms").send(message, key)

    def slack(self, text: str, key: str) -> Delivery:
        return self._get("slack").post(text, None, key)

    def webhook(self, event: str, payload: dict, key: str, now: datetime) -> Delivery:
        transport = self._get("webhook")
        if transport.clock is None:
            # the signature's timestamp is the moment of sending: the tick's now plus the time elapsed since
            transport.clock = sending_clock(now)
        return transport.post(event, payload, key, now)

    def close(self) -> None:
        """End of tick: close transports that keep a connection open."""
        for transport in self._built.values():
            closer = getattr(transport, "close", None)
            if closer is not None:
                try:
                    closer()
                except Exception:  # noqa: BLE001 - closing a connection never fails a tick
                    pass
        self._built.clear()


def build_channels(config: Config, environ: Mapping[str, str]) -> ChannelSet:
    return ChannelSet(config, environ)
