"""Email transports against a real aiosmtpd server (and real files for the file transport)."""

from __future__ import annotations

import email
import email.policy
import socket
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import pytest

from dunctl.channels import EmailMessage
from dunctl.channels.email import FileTransport, SmtpTransport
from dunctl.config import EmailChannel
from dunctl.errors import ChannelError, DeliveryUncertain
from tests.badservers import BadSmtp
from tests.servers import (  # noqa: F401
    HOST,
    SmtpServer,
    client_context,
    closed_port,
    server_context,
    smtp_server,
    tls_files,
)

NOW = datetime(2026, 11, 3, 14, 30, 5, tzinfo=timezone.utc)
SENDER = "Acme Billing <billing@acme.test>"
PASSWORD = "s3cret-Pa55word"
# aiosmtpd warns when AUTH is offered without TLS; that is the local relay these tests stand in for
AUTH_WITHOUT_TLS = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def make_message(**overrides) -> EmailMessage:
    fields = dict(to="Jo Doe <jo@customer.test>", subject="Your payment of $49.00 failed",
                  text="Hi Jo,\nyour card was declined.\n", html="<p>Hi Jo, your card was <b>declined</b>.</p>",
                  headers={"X-Example-Case": "in_123"})
    fields.update(overrides)
    return EmailMessage(**fields)


def transport_for(server: SmtpServer, **config) -> SmtpTransport:
    return SmtpTransport(EmailChannel(transport="smtp", host=HOST, port=server.port, timeout=5, **config), {})


def send(transport, message=None, key="in_123:notice", **kw):
    return transport.send(message or make_message(), sender=SENDER, reply_to=kw.pop("reply_to", None), key=key,
                          now=kw.pop("now", NOW))


def test_smtp_delivers_multipart_alternative_with_headers(smtp_server):
    delivery = send(SmtpTransport(EmailChannel(transport="smtp", host=HOST, port=smtp_server.port), {}),
                    reply_to="help@acme.test")

    assert len(smtp_server.received) == 1
    got = smtp_server.received[0]
    assert got.mail_from == "billing@acme.test"
    assert got.rcpt_tos == ["jo@customer.test"]
    assert got.tls is False and got.login is None       # security none: plain SMTP, no STARTTLS, no AUTH
    msg = got.message
    assert msg["Subject"] == "Your payment of $49.00 failed"
    assert msg["From"] == SENDER
    assert msg["To"] == "Jo Doe <jo@customer.test>"
    assert msg["Reply-To"] == "help@acme.test"
    assert msg["X-Example-Case"] == "in_123"
    assert parsedate_to_datetime(msg["Date"]) == NOW
    assert msg["Message-ID"] == delivery.provider_id
    assert msg.get_content_type() == "multipart/alternative"
    parts = [(p.get_content_type(), p.get_content()) for p in msg.iter_parts()]
    assert parts == [("text/plain", "Hi Jo,\nyour card was declined.\n"),
                     ("text/html", "<p>Hi Jo, your card was <b>declined</b>.</p>\n")]
    assert "jo@customer.test" in delivery.detail


def test_text_only_message_is_not_multipart(smtp_server):
    send(transport_for(smtp_server), make_message(html=None, text="Plain only, café ☕\n"))
    msg = smtp_server.received[0].message
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content() == "Plain only, café ☕\n"
    assert "Reply-To" not in msg


def test_message_id_is_derived_from_the_key(smtp_server):
    transport = transport_for(smtp_server)
    first = send(transport, key="in_123:notice")
    again = send(transport, key="in_123:notice", now=datetime(2026, 11, 4, tzinfo=timezone.utc))
    other = send(transport, key="in_123:reminder")
    ids = [r.message["Message-ID"] for r in smtp_server.received]
    assert ids == [first.provider_id, again.provider_id, other.provider_id]
    assert ids[0] == ids[1] != ids[2]
    assert ids[0].startswith("<") and ids[0].endswith("@acme.test>")


def test_naive_now_is_taken_as_utc(smtp_server):
    send(transport_for(smtp_server), now=datetime(2026, 11, 3, 14, 30, 5))
    assert parsedate_to_datetime(smtp_server.received[0].message["Date"]) == NOW


@AUTH_WITHOUT_TLS
def test_smtp_login_with_credentials_from_the_environment():
    with SmtpServer(credentials=("billing", PASSWORD)) as server:
        transport = SmtpTransport(EmailChannel(transport="smtp", host=HOST, port=server.port, timeout=5,
                                               username_env="SMTP_USER", password_env="SMTP_PASS"),
                                  {"SMTP_USER": "billing", "SMTP_PASS": PASSWORD})
        send(transport)
    assert [r.login for r in server.received] == ["billing"]


@AUTH_WITHOUT_TLS
def test_smtp_auth_failure_is_a_channel_error_without_the_password():
    with SmtpServer(credentials=("billing", "the-right-one")) as server:
        transport = SmtpTransport(EmailChannel(transport="smtp", host=HOST, port=server.port, timeout=5,
                                               username_env="SMTP_USER", password_env="SMTP_PASS"),
                                  {"SMTP_USER": "billing", "SMTP_PASS": PASSWORD})
        with pytest.raises(ChannelError) as caught:
            send(transport)
    error = caught.value
    assert "refused the login for 'billing'" in error.message and "535" in error.message
    assert PASSWORD not in f"{error.message} {error.hint} {error!r}"
    assert "SMTP_PASS" in error.hint
    assert error.__cause__ is None and error.__suppress_context__   # no chained smtplib error to leak
    assert server.received == []


def test_credentials_for_a_server_without_auth_is_a_channel_error(smtp_server):
    transport = SmtpTransport(EmailChannel(transport="smtp", host=HOST, port=smtp_server.port, timeout=5,
                                           username_env="U", password_env="P"), {"U": "u", "P": PASSWORD})
    with pytest.raises(ChannelError, match="does not support what was asked: SMTP AUTH extension not supported"):
        send(transport)
    assert smtp_server.received == []


def test_non_ascii_names_and_subject_survive_the_trip(smtp_server):
    send(transport_for(smtp_server), make_message(to="Jörg Ødegård <jorg@customer.test>",
                                                  subject="Zahlung fehlgeschlagen – €49"))
    msg = smtp_server.received[0].message
    assert msg["To"] == "Jörg Ødegård <jorg@customer.test>"
    assert msg["Subject"] == "Zahlung fehlgeschlagen – €49"
    assert smtp_server.received[0].rcpt_tos == ["jorg@customer.test"]


def test_missing_credential_variable_is_named():
    transport = SmtpTransport(EmailChannel(transport="smtp", host=HOST, port=closed_port(),
                                           username_env="SMTP_USER", password_env="SMTP_PASS"),
                              {"SMTP_USER": "billing"})
    with pytest.raises(ChannelError, match="SMTP_PASS is empty or missing"):
        send(transport)


def test_server_down_is_a_channel_error():
    port = closed_port()
    transport = SmtpTransport(EmailChannel(transport="smtp", host=HOST, port=port, timeout=5,
                                           username_env="U", password_env="P"), {"U": "u", "P": PASSWORD})
    with pytest.raises(ChannelError) as caught:
        send(transport)
    assert f"SMTP server {HOST}:{port} refused the connection" in caught.value.message
    assert PASSWORD not in str(caught.value)


def test_recipient_refused_is_a_channel_error():
    with SmtpServer(reject={"jo@customer.test"}) as server:
        with pytest.raises(ChannelError) as caught:
            send(transport_for(server))
    assert "refused the recipient jo@customer.test: 550" in caught.value.message
    assert server.received == []


def test_server_that_never_greets_times_out():
    with socket.socket() as listener:           # accepts connections (backlog) but never says 220
        listener.bind((HOST, 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        transport = SmtpTransport(EmailChannel(transport="smtp", host=HOST, port=port, timeout=0.3), {})
        with pytest.raises(ChannelError, match=r"did not answer within 0.3s"):
            send(transport)


def test_starttls_encrypts_the_session(tmp_path):
    cert, key = tls_files(tmp_path)
    with SmtpServer(starttls=server_context(cert, key)) as server:
        transport = SmtpTransport(EmailChannel(transport="smtp", host=HOST, port=server.port, timeout=5,
                                               security="starttls"), {}, ssl_context=client_context(cert))
        send(transport)
    assert [r.tls for r in server.received] == [True]


def test_starttls_refuses_to_fall_back_to_plain_text(smtp_server):
    transport = transport_for(smtp_server, security="starttls")
    with pytest.raises(ChannelError, match="does not offer STARTTLS"):
        send(transport)
    assert smtp_server.received == []


def test_starttls_with_an_untrusted_certificate_fails(tmp_path):
    cert, key = tls_files(tmp_path)
    with SmtpServer(starttls=server_context(cert, key)) as server:
        transport = SmtpTransport(EmailChannel(transport="smtp", host=HOST, port=server.port, timeout=5,
                                               security="starttls"), {})   # system CAs: self-signed is refused
        with pytest.raises(ChannelError, match="TLS with SMTP server .* failed: CERTIFICATE_VERIFY_FAILED"):
            send(transport)
    assert server.received == []


def test_implicit_tls(tmp_path):
    cert, key = tls_files(tmp_path)
    with SmtpServer(implicit_tls=server_context(cert, key)) as server:
        transport = SmtpTransport(EmailChannel(transport="smtp", host=HOST, port=server.port, timeout=5,
                                               security="tls"), {}, ssl_context=client_context(cert))
        send(transport)
    assert [r.tls for r in server.received] == [True]


def test_overrides_and_non_addresses_are_refused(smtp_server):
    transport = transport_for(smtp_server)
    with pytest.raises(ChannelError, match="'Subject' is set by dunctl"):
        send(transport, make_message(headers={"Subject": "other"}))
    with pytest.raises(ChannelError, match="not an email address"):
        send(transport, make_message(to="nobody"))
    assert smtp_server.received == []


def test_cr_lf_and_controls_in_customer_text_never_break_the_message_and_it_still_goes_out(smtp_server):
    # A customer name with CR/LF used to block the customer's email (and the escalation) on every tick.
    transport = transport_for(smtp_server)
    send(transport, make_message(to="Jo\r\nBcc: evil@attacker.test\r\n Doe <jo@customer.test>",
                                 subject="Payment failed\r\nBcc: evil@attacker.test\x1b[31m",
                                 headers={"X-Example-Case": "in_1\nX-Injected: yes"}))
    send(transport, make_message(to="Ø\r\nÅ, \"Q\" <jo@customer.test>", subject="Zahlung\r\nfehlgeschlagen"))

    first, second = smtp_server.received
    assert first.rcpt_tos == second.rcpt_tos == ["jo@customer.test"]       # still delivered, only to Jo
    msg = first.message
    assert msg["To"] == '"Jo Bcc: evil@attacker.test Doe" <jo@customer.test>'
    assert msg["Subject"] == "Payment failed Bcc: evil@attacker.test"
    assert msg["X-Example-Case"] == "in_1 X-Injected: yes"
    assert msg["Bcc"] is None and msg["X-Injected"] is None
    assert msg.get_content_type() == "multipart/alternative"
    assert [(a.display_name, a.addr_spec) for a in second.message["To"].addresses] == [
        ('Ø Å, "Q"', "jo@customer.test")]
    assert second.message["Subject"] == "Zahlung fehlgeschlagen"


def test_one_connection_carries_every_message_of_a_tick_and_close_says_quit(smtp_server):
    transport = transport_for(smtp_server)
    for i in range(5):
        send(transport, make_message(subject=f"message {i}"), key=f"in_{i}:notice")
    transport.close()
    transport.close()                                             # twice is harmless
    assert [r.message["Subject"] for r in smtp_server.received] == [f"message {i}" for i in range(5)]
    assert len({r.peer for r in smtp_server.received}) == 1        # one connection, one client port
    send(transport, key="in_9:notice")                            # after close, the next send reconnects
    assert len({r.peer for r in smtp_server.received}) == 2


def test_a_connection_the_server_closed_is_reopened_once():
    server = SmtpServer()
    with server:
        transport = transport_for(server)
        send(transport, key="in_1:notice")
    with SmtpServer(port=server.port) as again:                   # same port: the old connection is dead
        send(transport, key="in_2:notice")
        transport.close()
    assert len(server.received) == 1 and len(again.received) == 1


def bad_transport(server, timeout: float = 0.5) -> SmtpTransport:
    return SmtpTransport(EmailChannel(transport="smtp", host=HOST, port=server.port, timeout=timeout), {})


@pytest.mark.parametrize("behaviour, expected", [
    ("hang_after_body", "took the message body but did not confirm the message within 0.5s"),
    ("drop_after_body", "took the message body but dropped the connection"),
])
def test_a_timeout_or_drop_after_the_body_is_uncertain_not_failed(behaviour, expected):
    with BadSmtp(behaviour) as server:
        transport = bad_transport(server)
        started = time.monotonic()
        with pytest.raises(DeliveryUncertain) as caught:
            send(transport)
        assert time.monotonic() - started < 4      # the server holds it for 10 s
    assert len(server.received) == 1                              # the server has the message: it may be queued
    assert expected in caught.value.message and "Message-ID <dunctl." in caught.value.message
    assert "case resolve" in caught.value.hint


@pytest.mark.parametrize("behaviour, expected", [
    ("reject_after_body", "rejected the message: 554 5.7.1 message refused as spam"),
    ("hang_before_data_reply", "did not answer within 0.5s"),
])
def test_a_refusal_or_a_timeout_before_the_body_is_a_plain_failure(behaviour, expected):
    with BadSmtp(behaviour) as server, pytest.raises(ChannelError) as caught:
        send(bad_transport(server))
    assert not isinstance(caught.value, DeliveryUncertain)
    assert expected in caught.value.message


def test_a_server_dripping_one_byte_at_a_time_cannot_hold_a_send_past_its_timeout():
    with BadSmtp("drip_greeting", drip_every=0.05) as server:      # each byte well within the timeout
        started = time.monotonic()
        with pytest.raises(ChannelError, match="did not answer within 0.5s") as caught:
            send(bad_transport(server))
        assert time.monotonic() - started < 3      # the drip would go on for 20 minutes
    assert not isinstance(caught.value, DeliveryUncertain)


def test_file_transport_writes_parseable_eml(tmp_path):
    outbox = tmp_path / "out" / "box"
    transport = FileTransport(outbox)
    delivery = send(transport, key="in_123:notice", reply_to="help@acme.test")

    files = list(outbox.glob("*.eml"))
    assert len(files) == 1 and str(files[0]) in delivery.detail
    msg = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert msg["Subject"] == "Your payment of $49.00 failed"
    assert msg["To"] == "Jo Doe <jo@customer.test>"
    assert msg["Message-ID"] == delivery.provider_id
    assert parsedate_to_datetime(msg["Date"]) == NOW
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


def test_file_transport_same_key_overwrites_and_keys_stay_distinct(tmp_path):
    transport = FileTransport(tmp_path)
    send(transport, make_message(subject="first"), key="in_1/notice")
    send(transport, make_message(subject="second"), key="in_1/notice")
    send(transport, make_message(subject="other"), key="in_1:notice")       # same safe characters, other key
    send(transport, make_message(subject="escape"), key="../../etc/passwd")

    files = sorted(tmp_path.iterdir())
    assert len(files) == 3 and all(f.parent == tmp_path and f.suffix == ".eml" for f in files)
    subjects = {email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["Subject"] for f in files}
    assert subjects == {"second", "other", "escape"}
    assert transport.path_for("in_1/notice").name.startswith("in_1_notice-")


def test_file_transport_unwritable_dir_is_a_channel_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ChannelError, match="could not write"):
        send(FileTransport(blocker / "outbox"))



def test_long_headers_long_lines_and_leading_dots_arrive_intact(smtp_server):
    subject = "Your payment failed " + "word " * 40
    long_name = "Ünïcödé " * 12
    text = ".starts with a dot\n..two dots\n" + "x" * 2500 + "\nend. café\n"
    send(transport_for(smtp_server), make_message(to=f"{long_name}<jo@customer.test>", subject=subject.strip(),
                                                  text=text, html="<p>" + "é" * 3000 + "</p>"))
    got = smtp_server.received[0]
    raw_lines = got.data.split(b"\r\n")
    assert max(map(len, raw_lines)) <= 998                 # RFC 5322 line limit, even for a 2500-char line
    msg = got.message
    assert msg["Subject"] == subject.strip()
    # Python's address parser puts a space between adjacent encoded-words of a name (RFC 2047 says to drop
    # it; it does the same to a name the stdlib itself encoded), so compare the name without spaces.
    assert msg["To"].addresses[0].display_name.replace(" ", "") == long_name.replace(" ", "")
    assert msg["To"].addresses[0].addr_spec == "jo@customer.test"
    text_part, html_part = msg.iter_parts()
    assert text_part.get_content() == text
    assert html_part.get_content() == "<p>" + "é" * 3000 + "</p>\n"


def test_starttls_connection_and_context_serve_every_message(tmp_path):
    cert, key = tls_files(tmp_path)
    with SmtpServer(starttls=server_context(cert, key)) as server:
        transport = SmtpTransport(EmailChannel(transport="smtp", host=HOST, port=server.port, timeout=5,
                                               security="starttls"), {}, ssl_context=client_context(cert))
        for i in range(3):
            send(transport, key=f"in_{i}:notice")
        transport.close()
    assert [r.tls for r in server.received] == [True, True, True]
    assert len({r.peer for r in server.received}) == 1
