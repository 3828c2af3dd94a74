# Over 500 lines: the SMTP and file transports share one MIME builder and address check; the split by transport waits for issue #22.
"""Email: an SMTP transport for real sending, and a file transport (one .eml per message) for demos and dry runs.

Both send the same bytes, built here directly (RFC 5322 and MIME, the handful of cases dunctl needs) rather than
through the stdlib `email` package, which cost 60-70% of the CPU per message. The Message-ID is derived from the
action's key, so a message re-sent for the same action carries the same Message-ID and a mail system (or a person
reading headers) can recognise it.

Text that came from a customer (names, subjects rendered from their data, header values) is made one line before
it goes in a header: CR/LF can never start a new header, and the message still goes out.

A transport holds one SMTP connection and one TLS context for the whole tick: the tick must call `close()` when it
ends (or use the transport as a context manager); `send()` opens the connection on first use and reconnects once
if a reused connection turns out to be closed before anything of the message was sent.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re
import smtplib
import socket
import ssl
from collections.abc import Mapping
from datetime import datetime
from email.utils import format_datetime, parseaddr
from pathlib import Path

from dunctl.channels import Delivery, EmailMessage
from dunctl.channels.deadline import Deadline, connect, wrap
from dunctl.clock import utc
from dunctl.config import EmailChannel
from dunctl.errors import ChannelError, DeliveryUncertain
from dunctl.sanitize import one_line

# Headers the transport sets itself; message.headers may add others but not replace these.
_OWN_HEADERS = {"from", "to", "subject", "date", "message-id", "reply-to", "mime-version", "content-type",
                "content-transfer-encoding"}
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ .-]*$")          # a display name that needs no quoting
_ANGLE = re.compile(r"^\s*(.*?)\s*<([^<>\s]+)>\s*$")
_SEVERAL = re.compile(r"^[^\"]*@[^\"]*[,;][^\"]*@")        # two addresses and a separator, nothing quoted
_BARE = re.compile(r"^[^\s<>@\"(),:;\[\]\\]+@[^\s<>@\"(),:;\[\]\\]+$")
_LINE_LIMIT = 998  # RFC 5322: longer lines must be encoded
_UNCERTAIN_HINT = "check the mail server's log for the Message-ID, then resolve the action with `dunctl case resolve`"


def message_id(key: str, sender: str) -> str:
    """The Message-ID for the action `key`: the same key always gives the same id."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    domain = _split_address(sender)[1].rpartition("@")[2] or "dunctl.invalid"
    return f"<dunctl.{digest}@{domain}>"


def reference(key: str) -> str:
    """The opaque reference an email for the action `key` carries (`X-Dunctl-Ref`): the Message-ID's digest, so
    support can find the action in the ledger from either, and a customer learns nothing from it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


class Built:
    """A message ready for the wire: its bytes (CRLF line ends), envelope addresses and Message-ID."""

    __slots__ = ("data", "message_id", "recipient", "recipients", "sender")

    def __init__(self, data: bytes, sender: str, recipients: list[str], message_id: str):
        self.data, self.sender, self.recipients, self.message_id = data, sender, recipients, message_id
        self.recipient = ", ".join(recipients)


def build_message(message: EmailMessage, *, sender: str, reply_to: str | None, key: str, now: datetime) -> Built:
    """A text/plain message, or multipart/alternative (text, then HTML) when the message has HTML."""
    given = [message.to] if isinstance(message.to, str) else list(message.to)
    to = [_split_address(part) for part in given]
    cc = [_split_address(part) for part in message.cc]
    for (name, addr), written in zip(to + cc, given + list(message.cc)):
        if not addr and _SEVERAL.match(one_line(written)):
            raise ChannelError(f"email recipient {one_line(written)!r} is several addresses in one string",
                               "give the recipients as a list, one address per item")
        if not addr:
            raise ChannelError(f"email recipient {one_line(written)!r} is not an email address")
    if not to:
        raise ChannelError("an email needs at least one recipient")
    from_name, from_addr = _split_address(sender)
    if not from_addr:
        raise ChannelError(f"email sender {one_line(sender)!r} is not an email address",
                           "check sender.from in the config")
    mid = message_id(key, from_addr)
    lines = [_header("From", _format_address(from_name, from_addr)),
             _header("To", ", ".join(_format_address(n, a) for n, a in to))]
    if cc:
        lines.append(_header("Cc", ", ".join(_format_address(n, a) for n, a in cc)))
    if reply_to:
        reply_name, reply_addr = _split_address(reply_to)
        if not reply_addr:
            raise ChannelError(f"reply-to {one_line(reply_to)!r} is not an email address",
                               "check sender.reply_to in the config")
        lines.append(_header("Reply-To", _format_address(reply_name, reply_addr)))
    lines += [_text_header("Subject", message.subject), "Date: " + _date(now), "Message-ID: " + mid]
    for name, value in message.headers.items():
        if name.lower() in _OWN_HEADERS:
            raise ChannelError(f"email header '{name}' is set by dunctl and cannot be overridden",
                               "remove it from the message's headers")
        if not _HEADER_NAME.match(name):
            raise ChannelError(f"email header name {one_line(name)!r} is not a valid header name")
        lines.append(_text_header(name, value))
    lines.append("MIME-Version: 1.0")
    if message.html is None:
        head, body = _part("plain", message.text)
        data = "\r\n".join(lines + head).encode("ascii") + b"\r\n\r\n" + body
    else:
        text_head, text_body = _part("plain", message.text)
        html_head, html_body = _part("html", message.html)
        boundary = "===============" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:20] + "=="
        while boundary.encode("ascii") in text_body or boundary.encode("ascii") in html_body:
            boundary = "=_" + boundary
        lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        dash = b"--" + boundary.encode("ascii")
        data = b"".join((
            "\r\n".join(lines).encode("ascii"), b"\r\n\r\n",
            dash, b"\r\n", "\r\n".join(text_head).encode("ascii"), b"\r\n\r\n", text_body, b"\r\n",
            dash, b"\r\n", "\r\n".join(html_head).encode("ascii"), b"\r\n\r\n", html_body, b"\r\n",
            dash, b"--\r\n"))
    return Built(data, from_addr, [a for _, a in to + cc], mid)


@functools.lru_cache(maxsize=1024)   # the sender's address is split twice for every message
def _split_address(value: str) -> tuple[str, str]:
    """(display name, bare address) from 'Name <addr@host>' or 'addr@host'; the address is '' when there is none.

    Customer text is made one line first, so CR/LF in a name cannot reach a header."""
    value = one_line(value)
    match = _ANGLE.match(value)
    if match:
        name, address = match.group(1), match.group(2)
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    elif _BARE.match(value):
        name, address = "", value
    elif _SEVERAL.match(value):
        # 'a@x, b@y' in one string: parseaddr reads the first address on 3.11.7 and none on 3.13; refuse it
        # on every version (build_message says why) rather than reach whoever one Python picks
        return "", ""
    else:
        name, address = parseaddr(value)  # comments, quoted local parts: the slow, thorough parser
    if not _BARE.match(address or ""):
        return name, ""
    local, _, domain = address.rpartition("@")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return name, ""
    if not local.isascii():
        return name, ""  # needs SMTPUTF8, which dunctl does not speak
    return name, f"{local}@{domain}"


def _format_address(name: str, address: str) -> str:
    if not name:
        return address
    if not name.isascii():
        return f"{_encoded_words(name)} <{address}>"
    if _ATOM.match(name) and not name.startswith(".") and ".." not in name:
        return f"{name} <{address}>"
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{address}>'


def _header(name: str, value: str) -> str:
    """A header line, folded at spaces when longer than 78 characters."""
    line = f"{name}: {value}"
    if len(line) <= 78 or "\r\n" in value:  # short, or already folded (encoded words)
        return line
    out, current = [], ""
    for word in line.split(" "):
        if current and len(current) + 1 + len(word) > 76:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    out.append(current)
    return "\r\n ".join(out)


def _text_header(name: str, value: object) -> str:
    text = one_line(value)
    if text.isascii():
        return _header(name, text)
    return f"{name}: {_encoded_words(text)}"


def _encoded_words(text: str) -> str:
    """RFC 2047 base64 encoded-words, each at most 75 characters, never splitting a character."""
    words, chunk = [], b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > 45:
            words.append(chunk)
            chunk = b""
        chunk += encoded
    words.append(chunk)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words)


_date_cache: tuple[object, str] = (object(), "")


def _date(now: datetime) -> str:
    global _date_cache
    if _date_cache[0] != now:  # a tick stamps every message with the same moment
        _date_cache = (now, format_datetime(utc(now)))
    return _date_cache[1]


def _part(subtype: str, text: str) -> tuple[list[str], bytes]:
    """A text part's headers and CRLF body: 7bit when it is short-lined ASCII, else quoted-printable UTF-8.

    Quoted-printable keeps the message 7-bit, so it goes through any server without 8BITMIME."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    if text.isascii() and max(map(len, text.split("\n"))) <= _LINE_LIMIT and "\x00" not in text:
        return ([f'Content-Type: text/{subtype}; charset="utf-8"', "Content-Transfer-Encoding: 7bit"],
                text.replace("\n", "\r\n").encode("ascii"))
    body = binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    return ([f'Content-Type: text/{subtype}; charset="utf-8"', "Content-Transfer-Encoding: quoted-printable"],
            body)


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
            from dunctl.channels.http import tls_context

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


class FileTransport:
    """Writes each message to DIR/<key>.eml. The same key overwrites its file, so a re-run never duplicates.

    Each file is written whole and renamed into place (a reader never sees half a message); there is no fsync per
    message: the ledger's own commit is what records the action, and a crash re-sends at most into the same file.
    """

    def __init__(self, dir: Path):
        self.dir = Path(dir)
        self._where = str(self.dir)
        self._dir_fd: int | None = None   # names are resolved against the open directory, not walked every time

    def path_for(self, key: str) -> Path:
        return self.dir / f"{safe_filename(key)}.eml"

    def send(self, message: EmailMessage, *, sender: str, reply_to: str | None, key: str,
             now: datetime) -> Delivery:
        built = build_message(message, sender=sender, reply_to=reply_to, key=key, now=now)
        name = f"{safe_filename(key)}.eml"
        tmp = f".tmp-{os.getpid()}-{name}"
        try:
            if self._dir_fd is None:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600, dir_fd=self._dir_fd)
            try:
                os.write(fd, built.data)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        except OSError as exc:
            if self._dir_fd is not None:
                try:
                    os.unlink(tmp, dir_fd=self._dir_fd)
                except OSError:
                    pass
            raise ChannelError(f"could not write {self._where}/{name}: {exc.strerror or exc}",
                               "check channels.email.dir") from None
        return Delivery(f"wrote {self._where}/{name}", built.message_id)

    def close(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


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
