"""One small HTTP POST helper for the JSON and form channels (Slack, webhook, Twilio), over urllib.

It makes exactly one attempt (the engine retries on a later tick), follows no redirects (a redirected POST
would silently turn into a GET and lose its body), and never puts the URL in an error: Slack's webhook URL is
itself the secret. Callers pass a `label` that names the destination safely instead.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from dunctl import __version__
from dunctl.errors import ChannelError

USER_AGENT = f"dunctl/{__version__}"
EXCERPT = 200


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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # surfaces the 3xx as an HTTPError, which post() returns as a non-2xx Response


_opener = urllib.request.build_opener(_NoRedirect)


def basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def post(url: str, body: bytes, *, content_type: str, headers: dict[str, str] | None = None,
         timeout: float, label: str) -> Response:
    """POST `body` once. Returns the response whatever its status; raises ChannelError when there is none.

    `label` names the destination in errors ("Slack webhook (SLACK_WEBHOOK_URL)"); the URL never appears.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ChannelError(f"{label}: the URL must start with https:// or http:// and name a host",
                           "check the URL in the config or in the environment variable it names")
    headers = dict(headers or {})
    if parts.username is not None:  # https://user:pass@host/ -> basic auth (urllib does not do it itself)
        headers.setdefault("Authorization", basic_auth(urllib.parse.unquote(parts.username),
                                                       urllib.parse.unquote(parts.password or "")))
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", content_type)
    request.add_header("User-Agent", USER_AGENT)
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with _opener.open(request, timeout=timeout) as response:
            return Response(response.status, response.read(), dict(response.headers.items()))
    except urllib.error.HTTPError as exc:
        try:
            data = exc.read()
        except (OSError, ValueError):
            data = b""
        return Response(exc.code, data, dict(exc.headers.items()) if exc.headers else {})
    except urllib.error.URLError as exc:
        raise ChannelError(f"{label}: could not connect: {_reason(exc.reason, timeout)}") from None
    except (TimeoutError, socket.timeout):
        raise ChannelError(f"{label}: no response within {timeout:g}s") from None
    except OSError as exc:
        raise ChannelError(f"{label}: network error: {_reason(exc, timeout)}") from None
    except http.client.HTTPException as exc:
        raise ChannelError(f"{label}: broken HTTP response: {type(exc).__name__}") from None


def post_json(url: str, payload, *, headers: dict[str, str] | None = None, timeout: float, label: str) -> Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return post(url, body, content_type="application/json", headers=headers, timeout=timeout, label=label)


def post_form(url: str, fields: dict[str, str], *, headers: dict[str, str] | None = None, timeout: float,
              label: str) -> Response:
    body = urllib.parse.urlencode(fields).encode("ascii")
    return post(url, body, content_type="application/x-www-form-urlencoded", headers=headers, timeout=timeout,
                label=label)


def status_error(label: str, response: Response) -> ChannelError:
    """The error for a non-2xx answer: the status and a short excerpt of the body."""
    excerpt = response.excerpt()
    return ChannelError(f"{label}: HTTP {response.status}" + (f": {excerpt}" if excerpt else ""))


def _reason(reason, timeout: float) -> str:
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no response within {timeout:g}s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)
