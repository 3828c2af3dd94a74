"""SMS as a phone receives them: measured with a real link's length, opt-out wording in every language, and a
STOP recorded with `dunctl customer optout` ends texts to that customer."""

import json

import pytest
import yaml

from dunctl.locales import SHIPPED_LOCALES
from dunctl.messages import Templates, sample_context, sms_size
from dunctl.scaffold import shipped_dir
from tests.helpers import at, cli, customer, failed_invoice, open_engine_ledger, seed, starter

SHIPPED = Templates(shipped_dir() / "sequences" / "templates")
OPT_OUT = {"en": "Reply STOP to opt out", "de": "Abmelden mit STOP", "es": "Para darse de baja, responda STOP",
           "fr": "STOP pour vous désabonner", "ja": "停止はSTOPと返信"}


@pytest.mark.parametrize("locale", SHIPPED_LOCALES)
@pytest.mark.parametrize("privacy", ["standard", "strict"])
def test_every_text_offers_opt_out_and_fits_its_budget_with_a_real_link(locale, privacy):
    for invoices in (1, 2):
        text = SHIPPED.render_sms("payment-reminder", sample_context("Example", invoices=invoices, locale=locale),
                                  privacy)
        assert OPT_OUT[locale] in text
        size = sms_size(text)
        assert size.encoding == ("UCS-2" if locale == "ja" else "GSM-7"), text
        assert size.segments <= (3 if locale == "ja" else 2), (size, text)


def test_check_measures_with_a_real_link_and_shows_segments_per_locale(tmp_path):
    config = starter(tmp_path)
    # 120 characters and a 25-character link fit one segment; with a real hosted-invoice link they take two
    (tmp_path / "templates" / "payment-reminder.sms.j2").write_text(
        "{{ company }}: " + "x" * 150 + " {{ update_link or invoice.pay_link }} Reply STOP to opt out")
    result = cli(config, "check")
    assert result.exit_code == 2
    assert "payment-reminder.sms.j2" in result.stderr and "160-character link, 3 SMS segments" in result.stderr

    config = starter(tmp_path / "shipped")
    result = cli(config, "check")
    assert "SMS payment-reminder with a 160-character link: default GSM-7" in result.stderr
    assert "ja UCS-2" in result.stderr and "2 segment(s)" in result.stderr


@pytest.fixture
def texting(tmp_path, http_receiver):
    http_receiver.respond(201, json.dumps({"sid": "SM0001", "status": "queued"}), "application/json")
    config = starter(tmp_path, **{"channels.sms": {"from": "+15005550006", "base_url": http_receiver.url("/twilio")},
                                  "segments": [{"name": "everyone", "sequence": "texts"}]})
    (tmp_path / "sequences" / "texts.yaml").write_text(yaml.safe_dump({"name": "texts", "steps": [
        {"id": "text", "at": "1h", "action": "sms", "template": "payment-reminder"}]}))
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1"), failed_invoice("in_2", customer_id="cus_2"),
         customers=[customer("cus_1"), customer("cus_2", email="bo@example.com")])
    return config, ledger, {"TWILIO_ACCOUNT_SID": "AC123", "TWILIO_AUTH_TOKEN": "token-abc"}


def test_a_stop_recorded_with_customer_optout_ends_texts_to_that_customer(texting, http_receiver):
    config, ledger, env = texting
    result = cli(config, "customer", "optout", "cus_1", "--sms", "--now", at("10m").isoformat())
    assert result.exit_code == 0, result.output
    assert "no more SMS" in result.output
    assert cli(config, "tick", "--no-sync", "--now", at("2h").isoformat(), env=env).exit_code == 0

    assert len(http_receiver.requests) == 1          # cus_2's text only
    actions = {a["step_id"]: a for a in ledger.actions(ledger.cases.for_invoice("in_1")["id"])}
    assert actions["text"]["status"] == "skipped" and "opted out of SMS" in actions["text"]["detail"]


def test_optout_needs_a_channel_and_a_known_customer(texting):
    config, _, _ = texting
    result = cli(config, "customer", "optout", "cus_1")
    assert result.exit_code == 2 and "--sms" in result.output + result.stderr
    result = cli(config, "customer", "optout", "cus_nope", "--sms")
    assert result.exit_code == 2 and "unknown customer 'cus_nope'" in result.stderr
    assert "Traceback" not in result.output + result.stderr
