"""What one email costs dunctl's transports, next to the same mail sent by hand, in the same run.

    python bench/bench_email.py [--file-messages 10000] [--smtp-messages 2000]

Prints CPU per message (this process only: the SMTP server, aiosmtpd, runs in a subprocess) for
  - building the message with the stdlib `email` package (what dunctl did before) and with dunctl's builder,
  - the file transport (build + write one .eml each, no fsync),
  - the SMTP transport over one connection to a local aiosmtpd server,
  - the reference: the same bytes sent by hand with smtplib.sendmail over one connection,
and the ratios. Goals (issue 9): file transport <= 0.5 ms per message (10k in <= 5 s); SMTP within 3x of by hand.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys

import time
from datetime import datetime, timezone
from email.message import EmailMessage as MimeMessage
from email.utils import format_datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dunctl.channels import EmailMessage  # noqa: E402
from dunctl.channels.email import FileTransport, SmtpTransport, build_message, message_id  # noqa: E402
from bench.ledger_builder import scratch  # noqa: E402
from dunctl.config import EmailChannel  # noqa: E402

NOW = datetime(2026, 11, 3, 14, 30, 5, tzinfo=timezone.utc)
SENDER = "Acme Billing <billing@acme.test>"
TEXT = ("Hi {name},\n\nwe tried to charge your card for invoice INV-{i} ($49.00) and the payment failed "
        "(insufficient funds).\nPlease update your payment method here:\n"
        "https://invoice.stripe.com/i/acct_123/test_YWNjdF8xMjM0NTY3ODkw{i}\n\n"
        "If you have already paid, please ignore this message.\n\nThanks,\nAcme Billing\n") * 2
HTML = ("<html><body><p>Hi {name},</p><p>we tried to charge your card for invoice <b>INV-{i}</b> ($49.00) "
        "and the payment failed.</p><p><a href=\"https://invoice.stripe.com/i/acct_123/{i}\">Update your "
        "payment method</a></p><p>Thanks,<br>Acme Billing</p></body></html>\n") * 3
NAMES = ["Ada Lovelace", "Jörg Ødegård", "Grace Hopper", "Zoë Ça"]


def messages(n: int) -> list[tuple[EmailMessage, str]]:
    out = []
    for i in range(n):
        name = NAMES[i % len(NAMES)]
        out.append((EmailMessage(f"{name} <c{i}@customer.test>", f"Your payment of $49.00 failed (INV-{i})",
                                 TEXT.format(name=name, i=i), HTML.format(name=name, i=i),
                                 {"X-Dunctl-Case": f"in_{i}", "X-Dunctl-Step": "notice"}), f"in_{i}:notice"))
    return out


def cpu(fn, items) -> float:
    """CPU seconds of this process per item."""
    start = time.process_time()
    for item in items:
        fn(item)
    return (time.process_time() - start) / len(items)


def stdlib_build(item) -> bytes:
    message, key = item
    mime = MimeMessage()
    mime["From"] = SENDER
    mime["To"] = message.to
    mime["Subject"] = message.subject
    mime["Date"] = format_datetime(NOW)
    mime["Message-ID"] = message_id(key, SENDER)
    for name, value in message.headers.items():
        mime[name] = value
    mime.set_content(message.text)
    mime.add_alternative(message.html, subtype="html")
    return mime.as_bytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_smtp_server() -> tuple[subprocess.Popen, int]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                               "-c", "aiosmtpd.handlers.Sink"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, port
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit("aiosmtpd did not start (pip install aiosmtpd)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--file-messages", type=int, default=10_000)
    parser.add_argument("--smtp-messages", type=int, default=2_000)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}")

    items = messages(max(args.file_messages, args.smtp_messages))
    sample = items[:min(2000, len(items))]
    stdlib = cpu(stdlib_build, sample)
    ours = cpu(lambda item: build_message(item[0], sender=SENDER, reply_to=None, key=item[1], now=NOW), sample)
    print(f"build, stdlib email package:  {stdlib * 1e3:7.3f} ms CPU per message")
    print(f"build, dunctl:                {ours * 1e3:7.3f} ms CPU per message   ({stdlib / ours:.1f}x faster)")

    with scratch() as tmp:
        transport = FileTransport(Path(tmp) / "outbox")
        batch = items[:args.file_messages]
        wall = time.perf_counter()
        per = cpu(lambda item: transport.send(item[0], sender=SENDER, reply_to=None, key=item[1], now=NOW), batch)
        wall = time.perf_counter() - wall
        print(f"file transport, {len(batch)} messages: {per * 1e3:7.3f} ms CPU per message, {wall:.2f} s wall "
              f"(goal <= 0.5 ms, <= 5 s for 10k: {'met' if per <= 0.0005 else 'NOT met'})")

    server, port = start_smtp_server()
    try:
        batch = items[:args.smtp_messages]
        import smtplib

        built = [build_message(m, sender=SENDER, reply_to=None, key=k, now=NOW) for m, k in batch]
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            by_hand = cpu(lambda b: smtp.sendmail(b.sender, [b.recipient], b.data), built)
        transport = SmtpTransport(EmailChannel(transport="smtp", host="127.0.0.1", port=port, timeout=10), {})
        try:
            per = cpu(lambda item: transport.send(item[0], sender=SENDER, reply_to=None, key=item[1], now=NOW),
                      batch)
        finally:
            transport.close()
        print(f"SMTP by hand (smtplib.sendmail of the same bytes, one connection), {len(batch)} messages: "
              f"{by_hand * 1e3:7.3f} ms CPU per message")
        print(f"SMTP transport (build + send, one connection), {len(batch)} messages:"
              f"{' ' * 17}{per * 1e3:7.3f} ms CPU per message   ratio {per / by_hand:.2f}x by hand "
              f"(goal <= 3x: {'met' if per <= 3 * by_hand else 'NOT met'})")
    finally:
        server.terminate()
        server.wait(5)


if __name__ == "__main__":
    main()
