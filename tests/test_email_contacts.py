"""What a customer email's context is given by the tick rather than working it out again (issue #25, per email CPU):
its own recipients and the billing contacts its template can name are one resolution of the `billing_contact`
rule (the same addresses, in the same order, with a malformed one left out of both; a step with a cc resolves its
contacts on their own), and what the tick knows of the case's past is set once, kept when the context is
formatted again for the template's own language."""

import yaml

from tests.helpers import at, cli, customer, failed_invoice, open_engine_ledger, seed, starter


def test_the_billing_contacts_a_template_names_are_the_ones_the_email_goes_to(tmp_path, smtp_server):
    config = starter(tmp_path, **{
        "channels.email": {"transport": "smtp", "host": smtp_server.host, "port": smtp_server.port},
        "segments": [{"name": "everyone", "sequence": "two"}]})
    (tmp_path / "sequences" / "two.yaml").write_text(yaml.safe_dump({"name": "two", "steps": [
        {"id": "notice", "at": "30m", "action": "email", "template": "contacts"},
        {"id": "reminder", "at": "3d", "action": "email", "template": "contacts", "cc": "cfo@example.com"}]}))
    (tmp_path / "templates" / "contacts.subject.j2").write_text("Invoice {{ invoice.number }}")
    (tmp_path / "templates" / "contacts.txt.j2").write_text('Contacts: {{ customer.billing_contacts|join(", ") }}\n')
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1", customer_id="cus_1"),
         customers=[customer("cus_1", email="Ada@one.test", billing_emails="ap@one.test; not an address, ADA@one.test")])
    for offset in ("31m", "3d1m"):
        result = cli(config, "tick", "--no-sync", "--now", at(offset).isoformat())
        assert result.exit_code == 0, result.output
    notice, reminder = smtp_server.received
    assert notice.rcpt_tos == ["ap@one.test", "ADA@one.test"]
    assert reminder.rcpt_tos == ["ap@one.test", "ADA@one.test", "cfo@example.com"]
    for received in (notice, reminder):
        assert "Contacts: ap@one.test, ADA@one.test\n" in received.message.get_body(("plain",)).get_content()


def test_a_follow_up_in_the_default_language_reads_as_one(tmp_path, smtp_server):
    # No Italian templates: the context is formatted again for the English ones, and what the tick knows of the
    # case's past (`follow_up`, `sent`, `pause_lifted`) must come along (tests/test_advice.py: the same in English)
    config = starter(tmp_path, **{
        "channels.email": {"transport": "smtp", "host": smtp_server.host, "port": smtp_server.port},
        "segments": [{"name": "everyone", "sequence": "two"}]})
    (tmp_path / "sequences" / "two.yaml").write_text(yaml.safe_dump({"name": "two", "steps": [
        {"id": "notice", "at": "30m", "action": "email", "template": "update-card"},
        {"id": "reminder", "at": "3d", "action": "email", "template": "update-card"}]}))
    ledger = open_engine_ledger(config)
    ada = customer("cus_1", email="ada@one.test")
    ada.preferred_locale = "it-IT"
    seed(ledger, failed_invoice("in_1", customer_id="cus_1"), customers=[ada])
    for offset in ("31m", "3d1m"):
        result = cli(config, "tick", "--no-sync", "--now", at(offset).isoformat())
        assert result.exit_code == 0, result.output
    notice, reminder = (r.message.get_body(("plain",)).get_content() for r in smtp_server.received)
    assert notice != reminder
