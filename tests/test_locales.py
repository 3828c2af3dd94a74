"""Customers get the template in their language, with amounts and dates formatted for it (Babel)."""


import pytest

from dunctl.locales import SHIPPED_LOCALES, candidates
from dunctl.messages import Templates, sample_context, sample_contexts, sms_size
from dunctl.model import Customer
from dunctl.money import format_money
from dunctl.scaffold import shipped_dir
from tests.helpers import at, cli, failed_invoice, open_engine_ledger, seed, starter

SHIPPED = Templates(shipped_dir() / "sequences" / "templates")
EMAILS = ("payment-failed", "reminder", "update-card", "final-notice", "suspended", "account-manager",
          "cancel-notice", "cancelled", "recovered")

# Babel (CLDR) writes French amounts with a narrow no-break space (U+202F) between thousands and a no-break
# space (U+00A0) before the symbol: this is the exact string it produces, not a hand-typed "1 234,56 €".
FRENCH_EUROS = "1\u202f234,56\u00a0€"


def test_amounts_use_the_currencys_real_exponent_and_the_locales_format():
    assert format_money(123456, "eur", "fr") == FRENCH_EUROS
    assert format_money(123456, "eur", "de-DE") == "1.234,56\u00a0€"
    assert format_money(123456, "usd", "en") == "$1,234.56"
    assert format_money(1250000, "jpy", "ja") == "￥1,250,000"      # JPY has no minor unit
    assert format_money(1250000, "jpy", "en") == "¥1,250,000"
    assert format_money(1234567, "kwd", "en") == "KWD1,234.567"     # three decimals
    assert format_money(4900, "usd", "xx-nowhere") == "$49.00"      # unknown locale: English


def test_a_regional_locale_falls_back_to_its_language_then_the_default():
    assert candidates("fr-CA", "en") == ["fr-CA", "fr", "en"]
    assert candidates("pt_br", "de") == ["pt-BR", "pt", "de"]
    assert candidates(None, "en") == ["en"]


@pytest.mark.parametrize("tag,expected", [("fr-CA", "fr"), ("fr", "fr"), ("de-AT", "de"), ("ja-JP", "ja"),
                                          ("it", ""), (None, "")])
def test_template_resolution_by_preferred_locale(tag, expected):
    suffix, _ = SHIPPED.pick("payment-failed", "txt", sample_context(locale=tag))
    assert suffix == expected


def test_a_canadian_customer_gets_the_french_text_with_canadian_number_format():
    subject, text, html = SHIPPED.render_email("payment-failed", sample_context(locale="fr-CA", currency="cad",
                                                                                 amount=123456))
    assert subject == "Votre paiement de 1\u00a0234,56\u00a0$ à Acme n'a pas abouti"
    assert "Bonjour Ada," in text and "mais votre banque a refusé le paiement" in text
    assert '<html lang="fr-CA">' in html


def test_a_template_missing_in_the_customers_language_is_formatted_for_the_template_not_the_customer(tmp_path):
    (tmp_path / "only-en.subject.j2").write_text("Due {{ amount }} by {{ today }}")
    (tmp_path / "only-en.txt.j2").write_text("x")
    subject, _, _ = Templates(tmp_path).render_email("only-en", sample_context(locale="fr", currency="eur",
                                                                                 amount=123456))
    assert subject == "Due €1,234.56 by January 13, 2026"       # not "1 234,56 €" inside an English sentence


@pytest.mark.parametrize("lang", SHIPPED_LOCALES)
def test_every_shipped_template_renders_in_every_shipped_language(lang):
    for localized in sample_contexts("Acme", locale=lang):
        for name in EMAILS:
            subject, text, html = SHIPPED.render_email(name, localized)
            assert subject and "\n" not in subject
            assert "{{" not in text and "{%" not in text
            if name != "account-manager":
                assert html is not None and f'lang="{lang}"' in html
        for privacy in ("standard", "strict"):
            assert SHIPPED.render_sms("payment-reminder", localized, privacy)


@pytest.mark.parametrize("lang", SHIPPED_LOCALES)
def test_sms_fit_their_segment_budget_with_a_real_link_in_every_language(lang):
    for context in (sample_context(locale=lang, currency="eur", amount=123456),
                    sample_context(locale=lang, invoices=2, currency="jpy", amount=1250000)):
        for privacy in ("standard", "strict"):
            text = SHIPPED.render_sms("payment-reminder", context, privacy)
            size = sms_size(text)
            assert size.segments <= size.budget, (lang, privacy, size, text)
            assert size.encoding == ("UCS-2" if lang == "ja" else "GSM-7"), (lang, text)


def test_sms_segment_limits():
    assert sms_size("a" * 160).segments == 1 and sms_size("a" * 161).segments == 2
    assert sms_size("€" * 80).length == 160                    # the euro sign is a GSM-7 escape: two septets
    assert sms_size("お" * 70).segments == 1 and sms_size("お" * 71).segments == 2
    assert sms_size("¿Qué?").encoding == "GSM-7" and sms_size("está").encoding == "UCS-2"


def test_check_names_a_localized_file_that_does_not_render(tmp_path):
    config = starter(tmp_path)
    (tmp_path / "templates" / "reminder.de.txt.j2").write_text("Hallo {{ kunde.vorname }}")
    result = cli(config, "check")
    assert result.exit_code == 2
    assert "reminder.de.txt.j2" in result.stderr and "kunde" in result.stderr


def test_check_refuses_an_sms_longer_than_its_segment_budget(tmp_path):
    config = starter(tmp_path)
    (tmp_path / "templates" / "payment-reminder.ja.sms.j2").write_text("{{ company }}：" + "お" * 200)
    result = cli(config, "check")
    assert result.exit_code == 2
    assert "payment-reminder.ja.sms.j2" in result.stderr and "at most 3 (UCS-2)" in result.stderr


def test_check_renders_every_locale_of_the_starter(tmp_path):
    result = cli(starter(tmp_path), "check", env={"STRIPE_API_KEY": "sk_test_123"})  # check needs the key too
    assert result.exit_code == 0, result.output


@pytest.fixture
def smtp_config(tmp_path, smtp_server):
    return starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": smtp_server.host,
                                                   "port": smtp_server.port}})


def test_a_french_customer_receives_the_french_email_with_french_amounts(smtp_config, smtp_server):
    ledger = open_engine_ledger(smtp_config)
    french = Customer(id="cus_fr", name="Camille Martin", email="camille@exemple.fr", preferred_locale="fr-FR",
                      metadata={})
    seed(ledger, failed_invoice("in_fr", customer_id="cus_fr", amount=123456, currency="eur"), customers=[french])
    result = cli(smtp_config, "tick", "--no-sync", "--now", at("31m").isoformat())
    assert result.exit_code == 0, result.output
    [received] = smtp_server.received
    assert received.rcpt_tos == ["camille@exemple.fr"]
    assert received.message["Subject"] == f"Votre paiement de {FRENCH_EUROS} à Example n'a pas abouti"
    text = received.message.get_body(("plain",)).get_content()
    assert text.startswith("Bonjour Camille,\n\nNous avons tenté de prélever " + FRENCH_EUROS)
    html = received.message.get_body(("html",)).get_content()
    assert "Payer " + FRENCH_EUROS in html and "Update payment details" not in html


def test_a_customer_without_a_locale_gets_the_senders_language(tmp_path, smtp_server):
    """`sender.locale` is the language a customer with no preferred locale is written to (docs/configuration.md):
    its localized file when there is one, and amounts formatted for it. Before, the template was picked as if the
    sender wrote English."""
    config = starter(tmp_path, **{"sender.locale": "fr", "channels.email": {
        "transport": "smtp", "host": smtp_server.host, "port": smtp_server.port}})
    ledger = open_engine_ledger(config)
    unknown = Customer(id="cus_x", name="Camille Martin", email="camille@exemple.fr", metadata={})
    seed(ledger, failed_invoice("in_x", customer_id="cus_x", amount=123456, currency="eur"), customers=[unknown])
    result = cli(config, "tick", "--no-sync", "--now", at("31m").isoformat())
    assert result.exit_code == 0, result.output
    [received] = smtp_server.received
    assert received.message["Subject"] == f"Votre paiement de {FRENCH_EUROS} à Example n'a pas abouti"
    assert received.message.get_body(("plain",)).get_content().startswith("Bonjour Camille,")
