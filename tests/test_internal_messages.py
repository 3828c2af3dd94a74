"""Internal messages a person can act on: who owes what in which currency, days overdue, what was sent and tried,
what happens next and when, and the invoice in the Stripe Dashboard (test or live, the connected account's); the
escalation email is plain prose. Through `dunctl tick` to a real SMTP server."""

import re

import pytest

from tests.helpers import at, cli, customer, failed_invoice, open_engine_ledger, seed, starter


@pytest.fixture
def large_case(tmp_path, smtp_server):
    config = starter(tmp_path, **{
        "channels.email": {"transport": "smtp", "host": smtp_server.host, "port": smtp_server.port},
        "stripe.account": "acct_1Connected"})
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1", amount=6_000_000, decline_code="do_not_honor"),
         customers=[customer("cus_1", email="ap@wayne.test", billing_emails="ap@wayne.test,ingrid@wayne.test",
                             company="Wayne Health", account_manager_email="am@example.com")])
    for offset in ("1m", "3h", "7d1m"):
        result = cli(config, "tick", "--no-sync", "--now", at(offset).isoformat(), env={"STRIPE_API_KEY": "sk_test_1"})
        assert result.exit_code == 0, result.output + result.stderr
    return smtp_server


def texts_to(smtp_server, address):
    return [(r.message["Subject"], r.message.get_body(("plain",)).get_content())
            for r in smtp_server.received if address in r.rcpt_tos]


def test_the_escalation_email_is_plain_prose_a_person_can_act_on(large_case):
    first, later = texts_to(large_case, "collections@example.com")
    for _, text in (first, later):
        assert "*" not in text and not re.search(r"<[^>]+>", text)       # no Slack or HTML markup
        for fact in ("Wayne Health (cus_1) owes $60,000.00 USD on invoice INV-1",
                     "Billing contact: ap@wayne.test, ingrid@wayne.test",
                     "decline code do_not_honor",
                     "Stripe Dashboard: https://dashboard.stripe.com/acct_1Connected/test/invoices/in_1",
                     "No pause, cancellation or write-off is scheduled"):
            assert fact in text, (fact, text)
    assert "0 days overdue" in first[1] and "Nothing has been sent to the customer or retried yet." in first[1]
    assert "7 days overdue" in later[1]
    # the account manager's email is a note to a colleague, not a message the customer received (issue 24)
    assert "So far 1 message(s) sent" in later[1] and "email notice on 2026-11-02" in later[1]


def test_the_account_managers_email_names_the_contact_days_and_dashboard_link(large_case):
    [(subject, text)] = texts_to(large_case, "am@example.com")
    assert "Wayne Health" in subject
    for fact in ("Billing contact: ap@wayne.test, ingrid@wayne.test", "$60,000.00 (USD) remaining",
                 "Stripe Dashboard: https://dashboard.stripe.com/acct_1Connected/test/invoices/in_1",
                 "Days overdue: 0", "Sent and tried so far:"):
        assert fact in text, (fact, text)


def test_a_live_invoice_links_the_live_dashboard():
    from dunctl.messages import dashboard_url

    assert dashboard_url("in_9", True) == "https://dashboard.stripe.com/invoices/in_9"
    assert dashboard_url("in_9", False, "acct_2") == "https://dashboard.stripe.com/acct_2/test/invoices/in_9"


def test_one_escalation_per_customer_lists_each_invoice_and_a_total_per_currency(tmp_path, smtp_server):
    config = starter(tmp_path, **{
        "channels.email": {"transport": "smtp", "host": smtp_server.host, "port": smtp_server.port}})
    seed(open_engine_ledger(config),
         failed_invoice("in_1", amount=4900), failed_invoice("in_2", amount=12000),
         failed_invoice("in_3", amount=2500, currency="eur"), failed_invoice("in_4", customer_id="cus_2"),
         customers=[customer("cus_1", email="ap@wayne.test", company="Wayne Health"),
                    customer("cus_2", email="ap@acme.test")])
    result = cli(config, "tick", "--no-sync", "--now", at("15d1m").isoformat(), env={"STRIPE_API_KEY": "sk_test_1"})
    assert result.exit_code == 0, result.output + result.stderr
    escalations = texts_to(smtp_server, "collections@example.com")
    # one message per customer: Wayne Health's three invoices in two currencies, and the other customer's one
    assert sorted(subject for subject, _ in escalations) == [
        "[dunctl] Unpaid after 15 days: INV-1, INV-2, INV-3", "[dunctl] Unpaid after 15 days: INV-4"]
    [text] = [text for subject, text in escalations if "INV-3" in subject]
    # a total per currency, never one sum across them
    assert "Wayne Health (cus_1) has 3 unpaid invoices. Total owed (a total per currency): $169.00 USD; €25.00 EUR." \
        in text, text
    for number, owed in (("INV-1", "49.00 USD"), ("INV-2", "120.00 USD"), ("INV-3", "25.00 EUR")):
        assert f"Invoice {number}:" in text and f"owes {owed}" in text.replace("$", "").replace("€", ""), text
    ledger = open_engine_ledger(config)
    try:   # every case was handed to a person, and each records the one message
        for invoice in ("in_1", "in_2", "in_3"):
            actions = ledger.actions(ledger.cases.for_invoice(invoice)["id"])
            assert [a["status"] for a in actions if a["step_id"] == "escalate"] == ["done"], invoice
    finally:
        ledger.close()
