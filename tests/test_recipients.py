"""Who a message goes to: rule names and addresses in `to:`/`cc:`, several billing contacts, no duplicates, and
a malformed address never reaches SMTP."""

import json

import pytest
import yaml

from dunctl.config import Step
from dunctl.model import Customer
from dunctl.recipients import address_problem, resolve_recipients
from tests.helpers import at, cli, failed_invoice, open_engine_ledger, seed, starter


def step(**fields):
    return Step(id="notice", at="1h", action="email", template="payment-failed", **fields)


def customer(email="ada@example.com", **metadata):
    return {"email": email, "metadata": json.dumps(metadata)}


INVOICE = {"customer_email": "frozen@old.test"}


def test_billing_contact_is_every_billing_address_and_the_customers_current_email_once_each():
    found = resolve_recipients(step(to="billing_contact"), customer(
        billing_emails="ap@acme.test, Controller@Acme.test;ap@ACME.test", billing_email="controller@acme.test"),
        INVOICE)
    assert found.to == ["ap@acme.test", "Controller@Acme.test", "ada@example.com"]
    assert found.cc == [] and found.rejected == []


def test_to_and_cc_take_lists_of_rules_and_addresses_and_cc_never_repeats_a_to():
    found = resolve_recipients(step(to=["billing_contact", "finance@acme.test"], cc=["account_manager", "ada@example.com"]),
                               customer(account_manager_email="sam@us.test"), INVOICE)
    assert found.to == ["ada@example.com", "finance@acme.test"]
    assert found.cc == ["sam@us.test"]


def test_the_customers_current_email_wins_over_the_invoices_frozen_copy():
    assert resolve_recipients(step(to="customer"), customer("new@now.test"), INVOICE).to == ["new@now.test"]
    assert resolve_recipients(step(to="customer"), customer(None), INVOICE).to == ["frozen@old.test"]
    assert resolve_recipients(step(), None, INVOICE).to == ["frozen@old.test"]


def test_malformed_addresses_are_rejected_with_a_reason_and_the_others_still_receive():
    found = resolve_recipients(step(to="billing_contact"), customer(
        billing_emails="ap@acme.test, not-an-address, two@@acme.test, x@localhost, evil@acme.test\nBcc: all@x.test"),
        INVOICE)
    assert found.to == ["ap@acme.test", "ada@example.com"]
    assert dict(found.rejected) == {"not-an-address": "has no @", "two@@acme.test": "needs exactly one @",
                                    "x@localhost": "the domain has no dot (e.g. example.com)",
                                    "evil@acme.test\nBcc: all@x.test": "contains a line break (header injection)"}


def test_a_rule_that_finds_nobody_says_why():
    found = resolve_recipients(step(to=["account_manager"], cc="billing_contact"), customer(), INVOICE)
    assert found.to == ["ada@example.com"] and found.cc == []     # cc'd people stand in for an empty To
    assert found.rejected == [("account_manager", "the customer has no metadata.account_manager_email")]


@pytest.mark.parametrize("address,ok", [("a.b+tag@sub.example.co.uk", True), ("a@b.c", True),
                                        ("a b@c.de", False), ("@c.de", False), ("a@-c.de", False),
                                        ("a@c.123", False), ("a..b@c.de", False), ("ü@c.de", False),
                                        ("a@bücher.de", True),
                                        # the limits, which the one-match path for valid addresses checks too
                                        ("x" * 64 + "@c.de", True), ("x" * 65 + "@c.de", False),
                                        ("a@" + "b" * 63 + ".de", True), ("a@" + "b" * 64 + ".de", False),
                                        ("a@" + "b" * 61 + "." + "c" * 61 + "." + "d" * 61 + "." + "e" * 63, True),
                                        ("a@" + "b" * 61 + "." + "c" * 61 + "." + "d" * 61 + "." + "e" * 64, False),
                                        ("a@" + ("b" * 63 + ".") * 3 + "c" * 62, False),   # 256 characters
                                        ("a@c.de.", True), ("a@c.de..", True), ("a@c.1d", True),
                                        (".a@c.de", False), ("a.@c.de", False), ("a@c.d-", False)])
def test_address_validation(address, ok):
    assert (address_problem(address) is None) is ok, address_problem(address)


def test_config_refuses_an_unknown_rule_or_a_malformed_address_in_to_or_cc(tmp_path):
    config = starter(tmp_path)
    path = tmp_path / "sequences" / "standard.yaml"
    data = yaml.safe_load(path.read_text())
    data["steps"][0]["to"] = ["billing_contact", "accounts_payable"]
    data["steps"][0]["cc"] = "finance@@acme.test"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = cli(config, "check")
    assert result.exit_code == 2
    assert "steps[0].to" in result.stderr and "'accounts_payable' is not a recipient" in result.stderr
    assert "steps[0].cc" in result.stderr and "'finance@@acme.test' is not a valid email address" in result.stderr


def test_cc_is_only_for_email_steps(tmp_path):
    config = starter(tmp_path)
    path = tmp_path / "sequences" / "standard.yaml"
    data = yaml.safe_load(path.read_text())
    sms = next(i for i, s in enumerate(data["steps"]) if s["action"] == "sms")
    data["steps"][sms]["cc"] = "ops@acme.test"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = cli(config, "check")
    assert result.exit_code == 2 and f"steps[{sms}].cc" in result.stderr and "email steps" in result.stderr


def _tick_b2b(tmp_path, smtp_server):
    config = starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": smtp_server.host,
                                                     "port": smtp_server.port}})
    ledger = open_engine_ledger(config)
    b2b = Customer(id="cus_1", name="Wayne Health", email="it@wayne.test",
                   metadata={"billing_emails": "broken@, ap@wayne.test, AP@wayne.test, cfo@wayne.test"})
    seed(ledger, failed_invoice("in_1"), customers=[b2b])
    result = cli(config, "tick", "--no-sync", "--now", at("31m").isoformat())
    assert result.exit_code == 0, result.output
    [received] = smtp_server.received
    return received


def test_a_malformed_billing_contact_never_reaches_a_real_smtp_server(tmp_path, smtp_server):
    received = _tick_b2b(tmp_path, smtp_server)
    assert "ap@wayne.test" in received.rcpt_tos
    assert all("broken" not in r for r in received.rcpt_tos) and "broken" not in received.message["To"]
    assert received.message.get_body(("plain",)).get_content().startswith("Hello Wayne Health,\n")


def test_every_billing_contact_reaches_a_real_smtp_server(tmp_path, smtp_server):
    received = _tick_b2b(tmp_path, smtp_server)
    assert received.rcpt_tos == ["ap@wayne.test", "cfo@wayne.test", "it@wayne.test"]
