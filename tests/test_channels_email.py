"""Email transports against a real aiosmtpd server (and real files for the file transport)."""

from __future__ import annotations

import email
import email.policy
import socket
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import pytest

from dunctl.channels import EmailMessage
from dunctl.channels.email import FileTransport, SmtpTransport
from dunctl.config import EmailChannel
from dunctl.errors import ChannelError
from tests.servers import (HOST, SmtpServer, client_context, closed_port, server_context, smtp_server,  # noqa: F401
                           tls_files)

NOW = datetime(2026, 11, 3, 14, 30, 5, tzinfo=timezone.utc)
SENDER = "Acme Billing <billing@acme.test>"
PASSWORD = "s3cret-Pa55word"
# aiosmtpd warns when AUTH is offered without TLS; that is the local relay these tests stand in for
AUTH_WITHOUT_TLS = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def make_message(**overrides) -> EmailMessage:
    fields = dict(to="Jo Doe <jo@customer.test>", subject="Your payment of $49.00 failed",
                  text="Hi Jo,\nyour card was declined.\n", html="<p>Hi Jo, your card was <b>declined</b>.</p>",
                  headers={"X-Dunctl-Case": "in_123"})
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
    assert msg["X-Dunctl-Case"] == "in_123"
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


def test_header_injection_and_overrides_are_refused(smtp_server):
    transport = transport_for(smtp_server)
    with pytest.raises(ChannelError, match="cannot be built"):
        send(transport, make_message(headers={"X-Note": "hi\r\nBcc: evil@attacker.test"}))
    with pytest.raises(ChannelError, match="'Subject' is set by dunctl"):
        send(transport, make_message(headers={"Subject": "other"}))
    with pytest.raises(ChannelError, match="not an email address"):
        send(transport, make_message(to="nobody"))
    assert smtp_server.received == []


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

