"""The bytes of an email, built directly (RFC 5322 and MIME, the handful of cases dunctl needs) rather than
through the stdlib `email` package, which cost 60-70% of the CPU per message; both transports send what this
builds. The Message-ID is derived from the action's key, so a message re-sent for the same action carries the same
Message-ID.

Text that came from a customer (names, subjects rendered from their data, header values) is made one line before
it goes in a header: CR/LF can never start a new header, and the message still goes out.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from datetime import datetime
from email.utils import format_datetime, parseaddr

from dunctl.channels import EmailMessage
from dunctl.clock import utc
from dunctl.errors import ChannelError
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


def message_id(key: str, sender: str) -> str:
    """The Message-ID for the action `key`: the same key always gives the same id."""
    domain = _split_address(sender)[1].rpartition("@")[2] or "dunctl.invalid"
    return f"<dunctl.{key_digest(key)[:32]}@{domain}>"


def reference(key: str) -> str:
    """The opaque reference an email for the action `key` carries (`X-Dunctl-Ref`): the Message-ID's digest, so
    support can find the action in the ledger from either, and a customer learns nothing from it."""
    return key_digest(key)[:16]


@functools.lru_cache(maxsize=16)
def key_digest(key: str) -> str:
    """SHA-256 of the action's key, in hex: its reference, Message-ID, MIME boundary and outbox file name are
    all cut from it, so one message hashes its key once rather than four times."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


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
        boundary = "===============" + key_digest(key)[:20] + "=="
        # find, not `in`: `bytes in bytes` first tries its operand as an int, formatting a TypeError to drop it
        while text_body.find(boundary.encode("ascii")) >= 0 or html_body.find(boundary.encode("ascii")) >= 0:
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
    if "\r" in text:   # one scan for the usual text, which has none
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    if text.isascii() and max(map(len, text.split("\n"))) <= _LINE_LIMIT and "\x00" not in text:
        return ([f'Content-Type: text/{subtype}; charset="utf-8"', "Content-Transfer-Encoding: 7bit"],
                text.replace("\n", "\r\n").encode("ascii"))
    body = _quoted_printable(text)
    return ([f'Content-Type: text/{subtype}; charset="utf-8"', "Content-Transfer-Encoding: quoted-printable"],
            body)


def _quoted_printable(text: str) -> bytes:
    """`binascii.b2a_qp(text.encode("utf-8"), istext=True)` with CRLF line ends, for LF-ended text, line by line:
    the encoder reads nothing past a line end (its soft breaks and encoded trailing spaces are per line), so the
    lines encoded apart and joined are the same bytes. Most lines of an HTML email are the layout's, the same in
    every message: each is encoded once per process (b2a_qp checks every byte several times: 90 us of a 3.7 KB
    email on this machine against 8), and kept with its CRLF, so the message's text is neither encoded nor has
    its line ends replaced as a whole. Split at LF only: `str.splitlines` also splits at U+2028 and others."""
    return b"".join(map(_quoted_printable_line, text.split("\n")[:-1]))


@functools.lru_cache(maxsize=2048)
def _quoted_printable_line(text: str) -> bytes:
    line = text.encode("utf-8") + b"\n"
    return binascii.b2a_qp(line, istext=True).replace(b"\n", b"\r\n")
