"""What a customer email's context is given by the tick rather than working it out again (issue #25, per email CPU):
its own recipients and the billing contacts its template can name are one resolution of the `billing_contact`
rule (the same addresses, in the same order, with a malformed one left out of both; a step with a cc resolves its
contacts on their own), and what the tick knows of the case's past is set once, kept when the context is
formatted again for the template's own language."""

import yaml

from tests.helpers import at, cli, customer, failed_invoice, open_engine_ledger, seed, starter


def two_emails(directory, smtp_server, template: str, who, reminder: dict, files: dict | None = None) -> list:
    """A notice and a reminder (with `reminder`'s own keys) of `template` to `who`, each sent by its own tick;
    `files`: templates added to the starter's."""
    config = starter(directory, **{
        "channels.email": {"transport": "smtp", "host": smtp_server.host, "port": smtp_server.port},
        "segments": [{"name": "everyone", "sequence": "two"}]})
    (directory / "sequences" / "two.yaml").write_text(yaml.safe_dump({"name": "two", "steps": [
        {"id": "notice", "at": "30m", "action": "email", "template": template},
        {"id": "reminder", "at": "3d", "action": "email", "template": template, **reminder}]}))
    for name, text in (files or {}).items():
        (directory / "templates" / name).write_text(text)
    seed(open_engine_ledger(config), failed_invoice("in_1", customer_id=who.id), customers=[who])
    for offset in ("31m", "3d1m"):
        result = cli(config, "tick", "--no-sync", "--now", at(offset).isoformat())
        assert result.exit_code == 0, result.output
    return smtp_server.received


def test_the_billing_contacts_a_template_names_are_the_ones_the_email_goes_to(tmp_path, smtp_server):
    files = {"contacts.subject.j2": "Invoice {{ invoice.number }}",
             "contacts.txt.j2": 'Contacts: {{ customer.billing_contacts|join(", ") }}\n'}
    ada = customer("cus_1", email="Ada@one.test", billing_emails="ap@one.test; not an address, ADA@one.test")
    notice, reminder = two_emails(tmp_path, smtp_server, "contacts", ada, {"cc": "cfo@example.com"}, files)
    assert notice.rcpt_tos == ["ap@one.test", "ADA@one.test"]
    assert reminder.rcpt_tos == ["ap@one.test", "ADA@one.test", "cfo@example.com"]
    for received in (notice, reminder):
        assert "Contacts: ap@one.test, ADA@one.test\n" in received.message.get_body(("plain",)).get_content()


def test_a_follow_up_in_the_default_language_reads_as_one(tmp_path, smtp_server):
    # No Italian templates: the context is formatted again for the English ones, and what the tick knows of the
    # case's past (`follow_up`, `sent`, `pause_lifted`) must come along (tests/test_advice.py: the same in English)
    ada = customer("cus_1", email="ada@one.test")
    ada.preferred_locale = "it-IT"
    notice, reminder = (r.message.get_body(("plain",)).get_content()
                        for r in two_emails(tmp_path, smtp_server, "update-card", ada, {}))
    assert notice != reminder
