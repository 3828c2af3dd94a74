"""A total deadline for one channel call, enforced on every socket read and write.

A socket timeout bounds each read on its own, so a server that drips one byte every few seconds can hold a call
forever. These sockets set the timeout to what is left of the call's deadline before each read and write; when
nothing is left they raise TimeoutError at once.

    deadline = Deadline(10)                      # seconds, from now
    sock = connect(host, port, deadline)         # a DeadlineSocket; TLS: deadline_context(ctx).wrap_socket(sock)
"""

from __future__ import annotations

import socket
import ssl
import time


class Deadline:
    """The moment a call must be over by. `renew(seconds)` starts the next call on the same connection."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def renew(self, seconds: float | None = None) -> None:
        self.seconds = self.seconds if seconds is None else seconds
        self.at = time.monotonic() + self.seconds

    def remaining(self) -> float:
        """Seconds left; raises TimeoutError when none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer within {self.seconds:g}s")
        return left

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at


class DeadlineSocket(socket.socket):
    """A TCP socket whose reads and writes stop at `deadline` (in all, not each)."""

    deadline: Deadline | None = None

    def _arm(self) -> None:
        if self.deadline is not None:
            self.settimeout(self.deadline.remaining())

    def recv(self, *args):
        self._arm()
        return super().recv(*args)

    def recv_into(self, *args):
        self._arm()
        return super().recv_into(*args)

    def send(self, *args):
        self._arm()
        return super().send(*args)

    def sendall(self, *args):
        self._arm()  # since Python 3.5 a sendall's timeout bounds the whole call
        return super().sendall(*args)


class DeadlineSSLSocket(ssl.SSLSocket):
    """The TLS counterpart; `SSLSocket.sendall` and `recv_into` go through `send` and `read`."""

    deadline: Deadline | None = None

    def _arm(self) -> None:
        if self.deadline is not None:
            self.settimeout(self.deadline.remaining())

    def read(self, *args):
        self._arm()
        return super().read(*args)

    def send(self, *args):
        self._arm()
        return super().send(*args)

    def do_handshake(self, *args):
        self._arm()
        return super().do_handshake(*args)


def connect(host: str, port: int, deadline: Deadline) -> DeadlineSocket:
    """A TCP connection to host:port within the deadline (DNS, then connect)."""
    raw = socket.create_connection((host, port), timeout=deadline.remaining())
    sock = DeadlineSocket(fileno=raw.detach())
    sock.deadline = deadline
    sock.settimeout(deadline.remaining())
    return sock


def wrap(context: ssl.SSLContext, sock: socket.socket, host: str, deadline: Deadline) -> ssl.SSLSocket:
    """TLS over `sock`, the handshake within the deadline, reads and writes bounded by it afterwards."""
    context.sslsocket_class = DeadlineSSLSocket
    sock.settimeout(deadline.remaining())
    tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    tls.deadline = deadline
    tls.do_handshake()
    return tls
