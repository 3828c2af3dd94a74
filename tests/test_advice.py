"""Advice follows the payment method and the failure, the reason is said only to the payer's billing contacts,
and no two messages of one conversation are the same text: driven through `dunctl tick` to a real SMTP server."""

import pytest
import yaml

from dunctl.locales import SHIPPED_LOCALES
from dunctl.messages import sample_context
from tests.helpers import at, cli, customer, failed_invoice, open_engine_ledger, seed, starter
from tests.test_messages import SHIPPED


def text_of(received) -> str:
    return received.message.get_body(("plain",)).get_content()


def emails_to(smtp_server, address: str) -> list[str]:
    return [text_of(r) for r in smtp_server.received if address in r.rcpt_tos]


@pytest.fixture
def ach(tmp_path, smtp_server):
    config = starter(tmp_path, **{
        "channels.email": {"transport": "smtp", "host": smtp_server.host, "port": smtp_server.port},
        "segments": [{"name": "everyone", "sequence": "bank"}]})
    (tmp_path / "sequences" / "bank.yaml").write_text(yaml.safe_dump({"name": "bank", "steps": [
        {"id": "notice", "at": "30m", "action": "email", "template": "update-card", "to": "billing_contact"},
        {"id": "reminder", "at": "3d", "action": "email", "template": "update-card", "to": "billing_contact",
         "cc": "cfo@example.com"}]}))
    ledger = open_engine_ledger(config)
    seed(ledger,
         failed_invoice("in_1", customer_id="cus_1", code="could_not_process", decline_code=None,
                        failure_code="could_not_process", payment_method_type="us_bank_account"),
         failed_invoice("in_2", customer_id="cus_2", code="insufficient_funds", decline_code=None,
                        failure_code="insufficient_funds", payment_method_type="us_bank_account"),
         customers=[customer("cus_1", email="ap@one.test"), customer("cus_2", email="ap@two.test")])
    for offset in ("31m", "3d1m"):
        result = cli(config, "tick", "--no-sync", "--now", at(offset).isoformat())
        assert result.exit_code == 0, result.output
    return smtp_server


def test_a_bank_debit_is_advised_to_check_the_account_or_mandate_never_to_use_another_card(ach):
    for address in ("ap@one.test", "ap@two.test"):
        notice, reminder = emails_to(ach, address)
        for text in (notice, reminder):
            assert "another card" not in text and "card details" not in text
            assert "direct debit mandate" in text and "another method offered on the invoice page" in text
    notice, _ = emails_to(ach, "ap@one.test")
    assert "insufficient funds" not in notice and "your bank returned the direct debit" in notice


def test_the_reason_is_said_only_when_the_payers_billing_contacts_alone_read_it(ach):
    notice, reminder = emails_to(ach, "ap@two.test")
    assert "insufficient funds" in notice                  # to the billing contact only
    assert "insufficient funds" not in reminder            # cc'd to someone else
    assert "the payment did not go through" in reminder


def test_the_second_message_with_the_same_template_is_not_the_same_text(ach):
    for address in ("ap@one.test", "ap@two.test"):
        notice, reminder = emails_to(ach, address)
        assert notice != reminder
        assert "We wrote to you about this payment a few days ago" in reminder
        assert "We wrote to you" not in notice


@pytest.mark.parametrize("locale", SHIPPED_LOCALES)
def test_a_large_account_is_offered_a_bank_transfer_not_another_card(locale):
    context = sample_context("Example", "card_soft", business=True, segment="high-value", locale=locale,
                             currency="jpy", amount=1_780_000)
    _, text, html = SHIPPED.render_email("update-card", context)
    card_advice = SHIPPED.render_email("update-card", sample_context("Example", "card_soft", locale=locale))[1]
    for words in ("another card", "autre carte", "anderen Karte", "otra tarjeta", "別のカード"):
        assert words not in text and words not in html
        if words in card_advice:
            break
    else:
        raise AssertionError(f"no card advice found for {locale}: {card_advice}")
    assert any(w in text for w in ("bank transfer", "virement bancaire", "Banküberweisung",
                                   "transferencia bancaria", "銀行振込"))
