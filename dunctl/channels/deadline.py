"""A total deadline for one channel call, enforced on every socket read and write.

A socket timeout bounds each read on its own, so a server that drips one byte every few seconds can hold a call
forever. These sockets set the timeout to what is left of the call's deadline before each read and write; when
nothing is left they raise TimeoutError at once.

    deadline = Deadline(10)                      # seconds, from now
    sock = connect(host, port, deadline)         # a DeadlineSocket; TLS: deadline_context(ctx).wrap_socket(sock)
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
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


class _Bounded:
    """What both sockets share: the deadline, and a timeout set to what is left of it before each call."""

    deadline: Deadline | None = None

    def _arm(self) -> None:
        if self.deadline is not None:
            self.settimeout(self.deadline.remaining())


def _bounded(method):
    """`method` of a socket class, called after the timeout is set to what is left of the deadline."""
    def bounded(self, *args):
        self._arm()
        return method(self, *args)
    bounded.__name__ = method.__name__
    return bounded


class DeadlineSocket(_Bounded, socket.socket):
    """A TCP socket whose reads and writes stop at `deadline` (in all, not each)."""

    recv = _bounded(socket.socket.recv)
    recv_into = _bounded(socket.socket.recv_into)
    send = _bounded(socket.socket.send)
    sendall = _bounded(socket.socket.sendall)   # since Python 3.5 a sendall's timeout bounds the whole call


class DeadlineSSLSocket(_Bounded, ssl.SSLSocket):
    """The TLS counterpart; `SSLSocket.sendall` and `recv_into` go through `send` and `read`."""

    read = _bounded(ssl.SSLSocket.read)
    send = _bounded(ssl.SSLSocket.send)
    do_handshake = _bounded(ssl.SSLSocket.do_handshake)


def connect(host: str, port: int, deadline: Deadline) -> DeadlineSocket:
    """A TCP connection to host:port within the deadline: name lookup, then each address in turn."""
    error: OSError | None = None
    for family, kind, proto, _, address in resolve(host, port, deadline):
        sock = DeadlineSocket(family, kind, proto)
        try:
            sock.settimeout(deadline.remaining())
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            if isinstance(exc, TimeoutError):
                raise
            continue
        sock.deadline = deadline
        return sock
    raise error or OSError(f"no address for {host}")


def resolve(host: str, port: int, deadline: Deadline) -> list[tuple]:
    """getaddrinfo within the deadline. The system resolver cannot be interrupted, so a name is looked up on a
    helper thread that is abandoned (it ends when the resolver gives up) if the deadline passes first."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # a literal address: no lookup, no thread
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    answer: list = []
    done = threading.Event()

    def lookup() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            answer.append(exc)
        finally:
            done.set()

    threading.Thread(target=lookup, name=f"resolve {host}", daemon=True).start()
    if not done.wait(deadline.remaining()):
        raise TimeoutError(f"no DNS answer for {host} within {deadline.seconds:g}s")
    if isinstance(answer[0], OSError):
        raise answer[0]
    return answer[0]


def wrap(context: ssl.SSLContext, sock: socket.socket, host: str, deadline: Deadline) -> ssl.SSLSocket:
    """TLS over `sock`, the handshake within the deadline, reads and writes bounded by it afterwards."""
    context.sslsocket_class = DeadlineSSLSocket
    sock.settimeout(deadline.remaining())
    tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    tls.deadline = deadline
    tls.do_handshake()
    return tls
