"""Servers on 127.0.0.1 that misbehave on purpose, to prove the channels' deadlines and their uncertain outcomes.

    with BadSmtp("hang_after_body") as server: ...     # takes DATA and the body, then never answers
    with BadHttp("drip") as server: ...                # reads the request, answers one byte at a time

Each runs one thread that serves connections one after another, speaking just enough protocol by hand.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

HOST = "127.0.0.1"


class _BadServer:
    def __init__(self, behaviour: str, drip_every: float = 0.1):
        self.behaviour = behaviour
        self.drip_every = drip_every
        self.stop = threading.Event()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(8)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []       # what each connection sent (SMTP: the message bodies)
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.conn = conn
            with conn:
                conn.settimeout(5)
                try:
                    self.handle(conn)
                except OSError:
                    pass

    def _hold(self) -> None:
        self.stop.wait(10)

    def _drip(self, conn: socket.socket, data: bytes) -> None:
        for i in range(len(data) * 1000):
            if self.stop.is_set():
                return
            conn.sendall(data[i % len(data): i % len(data) + 1])
            time.sleep(self.drip_every)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        try:
            self.conn.shutdown(socket.SHUT_RDWR)  # wakes a handler waiting for a client that stays connected
        except (AttributeError, OSError):
            pass
        self.thread.join(5)
        self.listener.close()


class BadSmtp(_BadServer):
    """behaviour: drip_greeting | hang_after_body | drop_after_body | reject_after_body | hang_before_data_reply"""

    def handle(self, conn: socket.socket) -> None:
        if self.behaviour == "drip_greeting":
            return self._drip(conn, b"220-slow.test says hello ")
        file = conn.makefile("rb")
        conn.sendall(b"220 bad.test ESMTP\r\n")
        while True:
            line = file.readline()
            if not line:
                return
            command = line.strip().upper()
            if command.startswith((b"EHLO", b"HELO")):
                conn.sendall(b"250 bad.test\r\n")
            elif command.startswith((b"MAIL", b"RCPT", b"RSET", b"NOOP")):
                conn.sendall(b"250 OK\r\n")
            elif command == b"DATA":
                if self.behaviour == "hang_before_data_reply":
                    return self._hold()
                conn.sendall(b"354 go ahead\r\n")
                body = b""
                while not body.endswith(b"\r\n.\r\n"):
                    chunk = file.readline()
                    if not chunk:
                        return
                    body += chunk
                self.received.append(body)
                if self.behaviour == "hang_after_body":
                    return self._hold()
                if self.behaviour == "drop_after_body":
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                if self.behaviour == "reject_after_body":
                    conn.sendall(b"554 5.7.1 message refused as spam\r\n")
                    continue
                conn.sendall(b"250 queued\r\n")
            elif command == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"502 not implemented\r\n")


class BadHttp(_BadServer):
    """behaviour: hang (reads the request, never answers) | drip (answers one byte at a time) | reset (reads the
    request, then resets the connection) | echo_url (answers 404 quoting the request line, as some proxies do)"""

    def handle(self, conn: socket.socket) -> None:
        file = conn.makefile("rb")
        request_line = file.readline()
        length = 0
        while True:
            line = file.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        self.received.append(request_line + file.read(length))
        if self.behaviour == "hang":
            return self._hold()
        if self.behaviour == "drip":
            return self._drip(conn, b"HTTP/1.1 200 OK\r\nX-Slow: ")
        if self.behaviour == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
            return
        if self.behaviour == "echo_url":
            body = b"no such hook: " + request_line.strip()
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
