"""One small HTTP POST helper for the JSON and form channels (Slack, webhook, Twilio), over urllib.

It makes exactly one attempt (the engine retries on a later tick), within one total deadline (a server that
answers one byte at a time cannot hold it), follows no redirects (a redirected POST would silently turn into a
GET and lose its body), and never puts the URL in an error: Slack's webhook URL is itself the secret. Callers
pass a `label` that names the destination safely instead. It tells apart a failure where nothing left
(ChannelError: retry) from one where the request may have been acted on (DeliveryUncertain: never re-sent
silently). HTTP(S) proxies from the environment are not used: channels talk to their endpoints directly.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import urllib.parse
from dataclasses import dataclass

from dunctl import __version__
from dunctl.channels.deadline import Deadline, connect, wrap
from dunctl.errors import ChannelError, DeliveryUncertain

USER_AGENT = f"dunctl/{__version__}"
EXCERPT = 200
MAX_BODY = 1024 * 1024


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def excerpt(self, limit: int = EXCERPT) -> str:
        text = " ".join(self.text().split())
        return text if len(text) <= limit else text[:limit - 1] + "…"


def basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


_tls_context: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """The system's trusted CAs, loaded once per process (loading them costs ~20 ms)."""
    global _tls_context
    if _tls_context is None:
        _tls_context = ssl.create_default_context()
    return _tls_context


class _Connection(http.client.HTTPConnection):
    """One HTTP(S) connection whose every read and write stops at the call's deadline."""

    def __init__(self, host: str, port: int | None, deadline: Deadline, context: ssl.SSLContext | None):
        self.tls_context = context
        super().__init__(host, port or (443 if context else 80), timeout=deadline.seconds)
        self.deadline = deadline

    def connect(self) -> None:
        sock = connect(self.host, self.port, self.deadline)
        self.sock = wrap(self.tls_context, sock, self.host, self.deadline) if self.tls_context else sock


def post(url: str, body: bytes, *, content_type: str, headers: dict[str, str] | None = None,
         timeout: float, label: str, secrets: tuple[str, ...] = ()) -> Response:
    """POST `body` once, all of it (connect, send, answer) within `timeout` seconds. Follows no redirects.

    Returns the response whatever its status. Raises ChannelError when nothing was sent (bad URL, DNS, refused,
    TLS) and DeliveryUncertain when the request was written but no complete answer came back in time: the
    receiver may have acted on it. `label` names the destination in errors ("Slack webhook (SLACK_WEBHOOK_URL)");
    the URL never appears, and neither does any of `secrets` that the other side echoes back.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ChannelError(f"{label}: the URL must start with https:// or http:// and name a host",
                           "check the URL in the config or in the environment variable it names")
    headers = dict(headers or {})
    if parts.username is not None:  # https://user:pass@host/ -> basic auth
        headers.setdefault("Authorization", basic_auth(urllib.parse.unquote(parts.username),
                                                       urllib.parse.unquote(parts.password or "")))
    try:
        port = parts.port
    except ValueError:
        raise ChannelError(f"{label}: the URL's port is not a number from 1 to 65535") from None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    deadline = Deadline(timeout)
    connection = _Connection(parts.hostname, port, deadline, tls_context() if parts.scheme == "https" else None)
    written = False
    try:
        connection.putrequest("POST", target, skip_accept_encoding=True)
        for name, value in {"Content-Type": content_type, "User-Agent": USER_AGENT, **headers}.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.putheader("Connection", "close")
        connection.endheaders(body)
        written = True
        response = connection.getresponse()
        data = response.read(MAX_BODY)  # an answer is a status and a short body; never buffer a flood
        answer = Response(response.status, _scrub(data, url, *secrets), dict(response.headers.items()))
    except TimeoutError:
        if written:
            raise DeliveryUncertain(f"{label}: the request was sent but no answer came within {timeout:g}s",
                                    _UNCERTAIN_HINT) from None
        raise ChannelError(f"{label}: could not connect within {timeout:g}s") from None
    except ssl.SSLError as exc:
        raise ChannelError(f"{label}: TLS failed: {exc.reason or type(exc).__name__}") from None
    except ConnectionRefusedError:
        raise ChannelError(f"{label}: could not connect: connection refused") from None
    except (OSError, http.client.HTTPException) as exc:
        reason = _reason(exc)
        if written:
            raise DeliveryUncertain(f"{label}: the request was sent but the answer was lost ({reason})",
                                    _UNCERTAIN_HINT) from None
        if isinstance(exc, socket.gaierror):
            raise ChannelError(f"{label}: could not connect: unknown host ({reason})") from None
        raise ChannelError(f"{label}: could not connect: {reason}") from None
    finally:
        connection.close()
    if answer.status == 504:  # a gateway gave up waiting for the receiver, which may still have acted
        raise DeliveryUncertain(f"{label}: HTTP 504: a gateway gave up waiting for the receiver", _UNCERTAIN_HINT)
    return answer


_UNCERTAIN_HINT = "check the receiving side, then resolve the action with `dunctl case resolve`"


def _scrub(data: bytes, *secrets: str) -> bytes:
    """`data` with every secret (and the URL's path, which is Slack's secret) replaced by ***."""
    for secret in secrets:
        for form in {secret, urllib.parse.urlsplit(secret).path if "://" in secret else ""}:
            if len(form) >= 8:
                data = data.replace(form.encode("utf-8", errors="replace"), b"***")
    return data


def post_json(url: str, payload, *, headers: dict[str, str] | None = None, timeout: float, label: str,
              secrets: tuple[str, ...] = ()) -> Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return post(url, body, content_type="application/json", headers=headers, timeout=timeout, label=label,
                secrets=secrets)


def post_form(url: str, fields: dict[str, str], *, headers: dict[str, str] | None = None, timeout: float,
              label: str, secrets: tuple[str, ...] = ()) -> Response:
    body = urllib.parse.urlencode(fields).encode("ascii")
    return post(url, body, content_type="application/x-www-form-urlencoded", headers=headers, timeout=timeout,
                label=label, secrets=secrets)


def status_error(label: str, response: Response) -> ChannelError:
    """The error for a non-2xx answer: the status and a short excerpt of the body."""
    excerpt = response.excerpt()
    return ChannelError(f"{label}: HTTP {response.status}" + (f": {excerpt}" if excerpt else ""))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
