"""Email: an SMTP transport for real sending, and a file transport (one .eml per message) for demos and dry runs.

Both build the same message. Its Message-ID is derived from the action's key, so a message re-sent for the
same action carries the same Message-ID and a mail system (or a person reading headers) can recognise it.
"""

from __future__ import annotations

import hashlib
import os
import re
import smtplib
import socket
import ssl
import tempfile
from datetime import datetime
from email.message import EmailMessage as MimeMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Mapping

from dunctl.channels import Delivery, EmailMessage
from dunctl.clock import utc
from dunctl.config import EmailChannel
from dunctl.errors import ChannelError

# Headers the transport sets itself; message.headers may add others but not replace these.
_OWN_HEADERS = {"from", "to", "subject", "date", "message-id", "reply-to", "mime-version", "content-type",
                "content-transfer-encoding"}


def message_id(key: str, sender: str) -> str:
    """The Message-ID for the action `key`: the same key always gives the same id."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    domain = parseaddr(sender)[1].rpartition("@")[2] or "dunctl.invalid"
    return f"<dunctl.{digest}@{domain}>"


def build_message(message: EmailMessage, *, sender: str, reply_to: str | None, key: str,
                  now: datetime) -> MimeMessage:
    """A text/plain message, or multipart/alternative (text, then HTML) when the message has HTML."""
    mime = MimeMessage()
    try:
        mime["From"] = sender
        mime["To"] = message.to
        if reply_to:
            mime["Reply-To"] = reply_to
        mime["Subject"] = message.subject
        mime["Date"] = format_datetime(utc(now))
        mime["Message-ID"] = message_id(key, sender)
        for name, value in message.headers.items():
            if name.lower() in _OWN_HEADERS:
                raise ChannelError(f"email header '{name}' is set by dunctl and cannot be overridden",
                                   "remove it from the message's headers")
            mime[name] = value
    except (ValueError, TypeError, IndexError) as exc:
        raise ChannelError(f"email to {message.to!r} cannot be built: {exc}") from None
    if not _address(message.to):
        raise ChannelError(f"email recipient {message.to!r} is not an email address")
    if not _address(sender):
        raise ChannelError(f"email sender {sender!r} is not an email address", "check sender.from in the config")
    mime.set_content(message.text)
    if message.html is not None:
        mime.add_alternative(message.html, subtype="html")
    return mime


def _address(value: str) -> str:
    """The bare address in 'Name <addr@host>' or 'addr@host', or '' when there is none."""
    address = parseaddr(value)[1]
    return address if "@" in address else ""


class SmtpTransport:
    """Sends through an SMTP server. One connection per message; no retries (the engine retries later)."""

    def __init__(self, config: EmailChannel, environ: Mapping[str, str], *,
                 ssl_context: ssl.SSLContext | None = None):
        self.config = config
        self.environ = environ
        self.ssl_context = ssl_context  # None: the system's trusted CAs, hostname checked

    @property
    def where(self) -> str:
        return f"SMTP server {self.config.host}:{self.config.port}"

    def send(self, message: EmailMessage, *, sender: str, reply_to: str | None, key: str,
             now: datetime) -> Delivery:
        mime = build_message(message, sender=sender, reply_to=reply_to, key=key, now=now)
        username, password = self._credentials()
        try:
            self._deliver(mime, _address(sender), _address(message.to), username, password)
        except ChannelError as exc:
            raise ChannelError(_scrub(exc.message, password), exc.hint) from None
        return Delivery(f"emailed {_address(message.to)} via {self.config.host}:{self.config.port}",
                        mime["Message-ID"])

    def _credentials(self) -> tuple[str | None, str | None]:
        config = self.config
        if not config.username_env and not config.password_env:
            return None, None
        if not (config.username_env and config.password_env):
            raise ChannelError("channels.email needs both username_env and password_env, or neither")
        values = []
        for var in (config.username_env, config.password_env):
            value = self.environ.get(var)
            if not value:
                raise ChannelError(f"the SMTP credentials are not set: environment variable {var} is empty or "
                                   "missing", f"export {var} before running dunctl")
            values.append(value)
        return values[0], values[1]

    def _deliver(self, mime: MimeMessage, from_addr: str, to_addr: str, username: str | None,
                 password: str | None) -> None:
        config = self.config
        context = self.ssl_context or ssl.create_default_context()
        smtp: smtplib.SMTP | None = None
        sent = False
        try:
            if config.security == "tls":
                smtp = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout, context=context)
            else:
                smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
            smtp.ehlo_or_helo_if_needed()
            if config.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise ChannelError(f"{self.where} does not offer STARTTLS; refusing to send in plain text",
                                       "set channels.email.security to tls or none to match the server")
                smtp.starttls(context=context)
                smtp.ehlo()
            if username is not None:
                smtp.login(username, password)
            smtp.send_message(mime, from_addr=from_addr, to_addrs=[to_addr])
            sent = True
        except ChannelError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise ChannelError(f"{self.where} refused the login for {username!r}: {_smtp_reply(exc)}",
                               f"check {config.username_env} and {config.password_env}") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise ChannelError(f"{self.where} does not support what was asked: {exc}",
                               "check channels.email.security and whether the server takes a login") from None
        except smtplib.SMTPRecipientsRefused as exc:
            reply = next(iter(exc.recipients.values()), None)
            detail = f"{reply[0]} {_decode(reply[1])}" if reply else "refused"
            raise ChannelError(f"{self.where} refused the recipient {to_addr}: {detail}") from None
        except smtplib.SMTPSenderRefused as exc:
            raise ChannelError(f"{self.where} refused the sender {from_addr}: {_smtp_reply(exc)}",
                               "check sender.from in the config") from None
        except smtplib.SMTPResponseException as exc:
            raise ChannelError(f"{self.where} rejected the message: {_smtp_reply(exc)}") from None
        except smtplib.SMTPServerDisconnected as exc:
            if isinstance(exc.__context__, (TimeoutError, socket.timeout)):  # smtplib wraps a read timeout
                raise ChannelError(f"{self.where} did not answer within {config.timeout:g}s") from None
            raise ChannelError(f"{self.where} closed the connection: {exc or 'no reason given'}") from None
        except (TimeoutError, socket.timeout):
            raise ChannelError(f"{self.where} did not answer within {config.timeout:g}s") from None
        except ssl.SSLError as exc:
            raise ChannelError(f"TLS with {self.where} failed: {exc.reason or exc}",
                               "check channels.email.security (tls for port 465, starttls for 587)") from None
        except ConnectionRefusedError:
            raise ChannelError(f"{self.where} refused the connection",
                               "check channels.email.host and port, and that the server is running") from None
        except smtplib.SMTPException as exc:
            raise ChannelError(f"{self.where}: {exc}") from None
        except OSError as exc:
            raise ChannelError(f"could not reach {self.where}: {exc.strerror or exc}") from None
        finally:
            if smtp is not None:
                try:
                    if sent:  # a polite QUIT; after a failure the connection may be dead, so just close
                        smtp.quit()
                except (smtplib.SMTPException, OSError):
                    pass
                smtp.close()


class FileTransport:
    """Writes each message to DIR/<key>.eml. The same key overwrites its file, so a re-run never duplicates."""

    def __init__(self, dir: Path):
        self.dir = Path(dir)

    def path_for(self, key: str) -> Path:
        return self.dir / f"{safe_filename(key)}.eml"

    def send(self, message: EmailMessage, *, sender: str, reply_to: str | None, key: str,
             now: datetime) -> Delivery:
        mime = build_message(message, sender=sender, reply_to=reply_to, key=key, now=now)
        path = self.path_for(key)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".eml")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(mime.as_bytes())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise ChannelError(f"could not write {path}: {exc.strerror or exc}",
                               "check channels.email.dir") from None
        return Delivery(f"wrote {path}", mime["Message-ID"])


def safe_filename(key: str) -> str:
    """A file name for `key`: readable, safe on any filesystem, and distinct for distinct keys."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")[:80] or "message"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:10]
    return f"{readable}-{digest}"


def _decode(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _smtp_reply(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_decode(exc.smtp_error)}"


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text
