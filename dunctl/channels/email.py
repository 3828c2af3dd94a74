"""Email: an SMTP transport for real sending, and a file transport (one .eml per message) for demos and dry runs.

Both send the same bytes, built by dunctl/channels/mime.py (whose names callers also import from here).

A transport holds one SMTP connection and one TLS context for the whole tick: the tick must call `close()` when it
ends (or use the transport as a context manager); `send()` opens the connection on first use and reconnects once
if a reused connection turns out to be closed before anything of the message was sent.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from collections.abc import Mapping
from datetime import datetime

from dunctl.channels import Delivery, EmailMessage
from dunctl.channels.deadline import Deadline, connect, wrap
from dunctl.channels.http import tls_context
from dunctl.channels.mime import Built, build_message, key_digest, message_id, reference  # noqa: F401 - imported from here
from dunctl.channels.outbox import FileTransport, safe_filename  # noqa: F401 - imported from here
from dunctl.config import EmailChannel
from dunctl.errors import ChannelError, DeliveryUncertain

_UNCERTAIN_HINT = "check the mail server's log for the Message-ID, then resolve the action with `dunctl case resolve`"
_DOT = re.compile(rb"^\.", re.MULTILINE)


class _Smtp(smtplib.SMTP):
    """smtplib's client on a socket whose reads and writes end at the transport's deadline."""

    def __init__(self, deadline: Deadline, context: ssl.SSLContext | None):
        self._deadline = deadline
        self._implicit = context
        super().__init__(timeout=deadline.seconds)

    def _get_socket(self, host, port, timeout):
        sock = connect(host, port, self._deadline)
        return wrap(self._implicit, sock, host, self._deadline) if self._implicit else sock


class SmtpTransport:
    """Sends through an SMTP server over one connection, kept open between messages until `close()`.

    Each send has `timeout` seconds in all (connecting if needed, the whole transaction). No retries beyond one
    reconnect when a reused connection had been closed by the server; the executor retries later. A failure
    before the server took the message body raises ChannelError (nothing was sent); a timeout or a dropped
    connection after it raises DeliveryUncertain (it may have been queued).
    """

    def __init__(self, config: EmailChannel, environ: Mapping[str, str], *,
                 ssl_context: ssl.SSLContext | None = None):
        self.config = config
        self.environ = environ
        self._ssl_context = ssl_context  # None: the system's trusted CAs (loaded once), hostname checked
        self._smtp: _Smtp | None = None
        self._deadline = Deadline(config.timeout)
        self._credentials_checked: tuple[str | None, str | None] | None = None

    @property
    def where(self) -> str:
        return f"SMTP server {self.config.host}:{self.config.port}"

    @property
    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = tls_context()
        return self._ssl_context

    def send(self, message: EmailMessage, *, sender: str, reply_to: str | None, key: str,
             now: datetime) -> Delivery:
        built = build_message(message, sender=sender, reply_to=reply_to, key=key, now=now)
        username, password = self._credentials()
        try:
            self._deliver(built, username, password)
        except ChannelError as exc:
            raise type(exc)(_scrub(exc.message, password), exc.hint) from None
        return Delivery(f"emailed {built.recipient} via {self.config.host}:{self.config.port}", built.message_id)

    def close(self) -> None:
        """Say QUIT (within a short deadline) and close the connection. Safe to call twice."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        self._deadline.renew(min(self.config.timeout, 2.0))
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass
        smtp.close()
        self._deadline.renew(self.config.timeout)

    def __enter__(self) -> SmtpTransport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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

    def _open(self, username: str | None, password: str | None) -> _Smtp:
        config = self.config
        deadline = self._deadline
        smtp = _Smtp(deadline, self.ssl_context if config.security == "tls" else None)
        try:
            smtp.connect(config.host, config.port)
            smtp.ehlo_or_helo_if_needed()
            if config.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise ChannelError(f"{self.where} does not offer STARTTLS; refusing to send in plain text",
                                       "set channels.email.security to tls or none to match the server")
                code, reply = smtp.docmd("STARTTLS")
                if code != 220:
                    raise smtplib.SMTPResponseException(code, reply)
                smtp.sock = wrap(self.ssl_context, smtp.sock, config.host, deadline)
                smtp.file = None
                smtp.helo_resp = smtp.ehlo_resp = None
                smtp.esmtp_features, smtp.does_esmtp = {}, False
                smtp.ehlo()
            if username is not None:
                smtp.login(username, password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _deliver(self, built: Built, username: str | None, password: str | None) -> None:
        self._deadline.renew(self.config.timeout)
        for attempt in (1, 2):
            reused = self._smtp is not None
            body_started = False
            try:
                if self._smtp is None:
                    self._smtp = self._open(username, password)
                smtp = self._smtp
                code, reply = smtp.mail(built.sender)
                if code != 250:
                    self._reset()
                    raise smtplib.SMTPSenderRefused(code, reply, built.sender)
                for address in built.recipients:
                    code, reply = smtp.rcpt(address)
                    if code not in (250, 251):
                        self._reset()
                        raise smtplib.SMTPRecipientsRefused({address: (code, reply)})
                code, reply = smtp.docmd("DATA")
                if code != 354:
                    self._reset()
                    raise smtplib.SMTPDataError(code, reply)
                body_started = True
                smtp.send(_DOT.sub(b"..", built.data) + b".\r\n")
                code, reply = smtp.getreply()
                if code != 250:
                    raise smtplib.SMTPDataError(code, reply)  # the server said no: nothing was queued
                return
            except ChannelError:
                self._drop()
                raise
            except smtplib.SMTPException as exc:
                if not isinstance(exc, smtplib.SMTPServerDisconnected):  # the server answered: nothing was queued
                    if not isinstance(exc, (smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused,
                                            smtplib.SMTPDataError)):
                        self._drop()  # a failed login or handshake leaves the session unusable
                    raise self._error(exc, built, username) from None
                failure = exc
            except OSError as exc:  # timeouts, resets, TLS failures (smtplib's exceptions are OSErrors too)
                failure = exc
            self._drop()
            timed_out = isinstance(failure, TimeoutError) or isinstance(failure.__context__, TimeoutError)
            if body_started:
                what = (f"did not confirm the message within {self.config.timeout:g}s" if timed_out
                        else "dropped the connection before confirming the message")
                raise DeliveryUncertain(f"{self.where} took the message body but {what} (Message-ID "
                                        f"{built.message_id})", _UNCERTAIN_HINT)
            if not (reused and attempt == 1 and not timed_out):
                raise self._error(failure, built, username)
            # The server had closed the reused connection: nothing of this message left. Reconnect once.

    def _reset(self) -> None:
        """Abandon the current transaction so the connection can carry the next message."""
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    def _error(self, exc: BaseException, built: Built, username: str | None) -> ChannelError:
        config = self.config
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return ChannelError(f"{self.where} refused the login for {username!r}: {_smtp_reply(exc)}",
                                f"check {config.username_env} and {config.password_env}")
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return ChannelError(f"{self.where} does not support what was asked: {exc}",
                                "check channels.email.security and whether the server takes a login")
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            reply = next(iter(exc.recipients.values()), None)
            detail = f"{reply[0]} {_decode(reply[1])}" if reply else "refused"
            return ChannelError(f"{self.where} refused the recipient {built.recipient}: {detail}")
        if isinstance(exc, smtplib.SMTPSenderRefused):
            return ChannelError(f"{self.where} refused the sender {built.sender}: {_smtp_reply(exc)}",
                                "check sender.from in the config")
        if isinstance(exc, smtplib.SMTPResponseException):
            return ChannelError(f"{self.where} rejected the message: {_smtp_reply(exc)}")
        if isinstance(exc, (TimeoutError, socket.timeout)) or isinstance(exc.__context__, TimeoutError):
            return ChannelError(f"{self.where} did not answer within {config.timeout:g}s")
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return ChannelError(f"{self.where} closed the connection: {exc or 'no reason given'}")
        if isinstance(exc, ssl.SSLError):
            return ChannelError(f"TLS with {self.where} failed: {exc.reason or exc}",
                                "check channels.email.security (tls for port 465, starttls for 587)")
        if isinstance(exc, ConnectionRefusedError):
            return ChannelError(f"{self.where} refused the connection",
                                "check channels.email.host and port, and that the server is running")
        if isinstance(exc, smtplib.SMTPException):
            return ChannelError(f"{self.where}: {exc}")
        return ChannelError(f"could not reach {self.where}: {getattr(exc, 'strerror', None) or exc}")


def _decode(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _smtp_reply(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_decode(exc.smtp_error)}"


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text
