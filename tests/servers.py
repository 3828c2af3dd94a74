"""Real servers on 127.0.0.1 for the channel tests: an SMTP server (aiosmtpd) and an HTTP receiver.

    from tests.servers import smtp_server, http_receiver      # fixtures
    from tests.servers import SmtpServer, tls_files, closed_port

`smtp_server` is a plain SMTP server that accepts everything and keeps what it received. For auth, STARTTLS,
implicit TLS or refused recipients, start an `SmtpServer(...)` yourself (it is a context manager).
`http_receiver` records every request and answers 200 unless told otherwise (`respond(500, ...)`, `hang()`).
"""

from __future__ import annotations

import atexit
import email
import email.policy
import functools
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.helpers import unavailable

HOST = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on right now (the OS picked it; we let it go)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A port where a connection is refused."""
    return free_port()


# --- SMTP -----------------------------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool                 # the session was encrypted (STARTTLS or implicit TLS)
    login: str | None         # the user that authenticated, if any
    peer: tuple = ()          # the client's (host, port): one per connection

    @property
    def message(self) -> EmailMessage:
        # SMTP carries CRLF line ends; parse with LF so bodies compare with the text that was sent
        return email.message_from_bytes(self.data.replace(b"\r\n", b"\n"), policy=email.policy.default)


class _Handler:
    def __init__(self, server: SmtpServer):
        self.server = server

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.server.reject:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        tls = server.transport is not None and server.transport.get_extra_info("ssl_object") is not None
        self.server.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                             envelope.original_content or envelope.content, tls,
                                             session.auth_data if session.authenticated else None,
                                             tuple(session.peer or ())))
        return "250 2.0.0 queued"


class SmtpServer:
    """An aiosmtpd server on 127.0.0.1.

    credentials: (user, password) to require AUTH (offered without TLS, like a local relay);
    starttls: a server-side SSLContext to offer STARTTLS; implicit_tls: a context to speak TLS from the first byte;
    reject: recipient addresses answered with 550.
    """

    def __init__(self, *, credentials: tuple[str, str] | None = None, starttls: ssl.SSLContext | None = None,
                 implicit_tls: ssl.SSLContext | None = None, reject: set[str] | frozenset = frozenset(),
                 port: int | None = None):
        self.received: list[Received] = []
        self.reject = set(reject)
        self.credentials = credentials
        self.port = port or free_port()
        kwargs: dict = {}
        if credentials:
            kwargs.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=False)
        if starttls:
            kwargs.update(tls_context=starttls)
        self.controller = Controller(_Handler(self), hostname=HOST, port=self.port, ssl_context=implicit_tls,
                                     ready_timeout=5, **kwargs)

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and self.credentials is not None and (
            auth_data.login.decode(), auth_data.password.decode()) == self.credentials
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login.decode() if ok else None)

    @property
    def host(self) -> str:
        return HOST

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()


@pytest.fixture
def smtp_server():
    with SmtpServer() as server:
        yield server


def tls_files(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 and localhost, made with the openssl CLI (once per test
    process: an RSA key costs a tenth of a second of CPU or more) and copied into `directory`."""
    made = _tls_pair()
    cert, key = directory / "cert.pem", directory / "key.pem"
    shutil.copyfile(made[0], cert)
    shutil.copy(made[1], key)
    return cert, key


@functools.lru_cache(maxsize=1)
def _tls_pair() -> tuple[Path, Path]:
    if not shutil.which("openssl"):
        unavailable("openssl is not installed; .ci/run installs it")
    directory = Path(tempfile.mkdtemp(prefix="dunctl-tls-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def client_context(cert: Path) -> ssl.SSLContext:
    """A client context that trusts only the test certificate (hostname still checked)."""
    return ssl.create_default_context(cafile=str(cert))


# --- HTTP -----------------------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: Message
    body: bytes


@dataclass
class _Answer:
    status: int = 200
    body: bytes = b"ok"
    content_type: str = "text/plain"
    hang: bool = False
    headers: dict[str, str] = field(default_factory=dict)


class HttpReceiver:
    """Records every request; answers with the current answer (200 "ok" by default)."""

    def __init__(self):
        self.requests: list[Request] = []
        self.answer = _Answer()
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.requests.append(Request(self.command, self.path, self.headers, body))
                answer = receiver.answer
                if answer.hang:
                    receiver.released.wait(10)
                    return
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def respond(self, status: int, body: bytes | str = b"", content_type: str = "text/plain",
                headers: dict[str, str] | None = None) -> None:
        self.answer = _Answer(status, body.encode() if isinstance(body, str) else body, content_type,
                              headers=headers or {})

    def hang(self) -> None:
        """Read requests but never answer (until the receiver stops): the client times out."""
        self.answer = _Answer(hang=True)

    @property
    def last(self) -> Request:
        assert self.requests, "the receiver got no request"
        return self.requests[-1]

    def __enter__(self) -> HttpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_receiver():
    with HttpReceiver() as receiver:
        yield receiver
