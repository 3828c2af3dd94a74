"""Pre-dunning notices as customers read them (issue 23): every recipient reached, in the customer's language,
greeted like the dunning emails, one renewal reminder with the whole charge, and `preview` for every template.
Notices go through the fake Stripe server over HTTP, the real SDK and a real SMTP server."""

from __future__ import annotations

import email
import email.policy
import json
from datetime import datetime
from pathlib import Path

import pytest

from dunctl.channels import EmailMessage
from dunctl.channels.email import build_message
from dunctl.errors import ChannelError
from tests.fakestripe import fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, at, cli, customer, failed_invoice, open_engine_ledger, seed, starter
from tests.test_notices import DAY, JAN_15, utc, world  # noqa: F401  (fixture)


def test_a_notice_reaches_every_billing_contact_on_any_python(world):
    w = world()
    w.customer_with_card(metadata={"billing_emails": "ap@black.test, ingrid@black.test"})
    w.tick(T0)
    w.tick(utc(2026, 12, 18, 9))
    [got] = w.smtp.received
    assert sorted(got.rcpt_tos) == ["ada@example.com", "ap@black.test", "ingrid@black.test"]
    assert [n["recipient"] for n in w.ledger.db.query("SELECT recipient FROM notices WHERE status = 'done'")] == \
        ["ap@black.test, ingrid@black.test, ada@example.com"]


def test_a_comma_joined_recipient_string_is_refused_not_parsed():
    # parseaddr reads 'a, b' as the first address on 3.11.7 and as no address on 3.13: never hand it one
    with pytest.raises(ChannelError, match="several addresses in one string"):
        build_message(EmailMessage("ap@black.test, ingrid@black.test", "s", "t"), sender="billing@acme.test",
                      reply_to=None, key="k", now=T0)


def _customer(w, *, name="Ada Lovelace", email="ada@example.com", locales=None, metadata=None, exp=(12, 2030)):
    """A customer with a card (by default one that outlives every renewal here: no expiry notices)."""
    cus = w.fake.add_customer(email, name=name, metadata=metadata or {}, preferred_locales=locales or [],
                              at=T0 - 40 * DAY)
    w.fake.add_payment_method(cus, exp_month=exp[0], exp_year=exp[1], at=T0 - 40 * DAY)
    return cus


def _renewing(w, cus, amount, *, end, interval="year", currency="usd", metered=False):
    sub = w.fake.add_subscription(cus, amount=amount, currency=currency, metered=metered, at=T0 - 40 * DAY)
    w.fake.set_billing(sub, interval=interval, period_start=end - 30 * DAY, period_end=end)
    return sub


def _text(received) -> str:
    return received.message.get_body(("plain",)).get_content()


def _html(received) -> str:
    return received.message.get_body(("html",)).get_content()


# -- defect 2: one greeting rule ---------------------------------------------------------------------------------


def test_a_company_is_greeted_by_its_name_and_a_person_by_first_name(world):
    w = world()
    black = _customer(w, name="Black Capital", email="ops@black.test", metadata={"billing_email": "ap@black.test"},
                      exp=(12, 2026))
    grace = _customer(w, name="Grace Hopper", email="grace@example.com", exp=(12, 2026))
    for cus in (black, grace):
        _renewing(w, cus, 2000, end=JAN_15, interval="month")
    w.tick(T0)
    w.tick(utc(2026, 12, 18, 9))                                     # card-expiring, 14 days ahead
    got = {r.rcpt_tos[-1]: r for r in w.smtp.received}
    assert len(got) == 2, w.ledger.db.execute("SELECT status, error, recipient FROM notices").fetchall()
    assert _text(got["ops@black.test"]).startswith("Hello Black Capital,\n\n")
    assert "Black," not in _html(got["ops@black.test"]).replace("Black Capital,", "")
    assert _text(got["grace@example.com"]).startswith("Hi Grace,\n\n")      # a person: her given name


# -- defect 1: every notice in every shipped locale ----------------------------------------------------------------

NOTICES = ("card-expiring", "upcoming-renewal", "usage-alert", "large-charge")
SHIPPED = Path(__file__).resolve().parent.parent / "sequences" / "templates"
ENGLISH = ("Hello", "Hi ", "billing team", "will be charged", "so far", "expires soon", "subscription")


@pytest.mark.parametrize("locale", ["de-DE", "es", "fr-FR", "ja"])
def test_every_notice_is_written_and_formatted_in_each_shipped_locale(locale):
    from dunctl.messages import Templates
    from dunctl.money import format_day, format_money
    from dunctl.notices.context import sample_notice_contexts

    templates = Templates(SHIPPED)
    lang = locale[:2]
    for name, context in zip(NOTICES, sample_notice_contexts("Acme", locale=locale)):
        assert all(templates.exists(name, part, lang) for part in ("subject", "txt", "html")), (name, lang)
        subject, text, html = templates.render_email(name, context)
        assert f'<html lang="{locale}">' in html
        day = "2027-01-15" if name in ("card-expiring", "upcoming-renewal") else "2026-12-01"
        assert format_day(datetime.fromisoformat(day), locale) in text, (name, text)
        assert format_money(57000 if name != "card-expiring" else 120000, "usd", locale) in subject + text
        assert not [word for word in ENGLISH if word in subject + text], (name, subject, text)


def test_a_german_customer_gets_the_renewal_reminder_in_german(world):
    w = world()
    cus = _customer(w, name="Ingrid Bauer", email="ingrid@example.de", locales=["de-DE"])
    _renewing(w, cus, 25899, currency="eur", end=utc(2027, 3, 1, 10))
    w.tick(T0)
    w.tick(utc(2027, 2, 22, 11))
    [got] = w.smtp.received
    assert got.message["Subject"] == "Ihr Abonnement bei Example verlängert sich am 1. März 2027 (258,99\xa0€)"
    assert _text(got).startswith("Guten Tag Ingrid Bauer,\n\nWir möchten Sie daran erinnern, dass sich Ihr "
                                 "Jahresabonnement bei Example am 1. März 2027 verlängert.")
    assert '<html lang="de-DE">' in _html(got)


def test_a_customer_without_a_locale_gets_the_reminder_in_the_senders_language(world):
    """`sender.locale` is the language of a customer with no preferred locale: the notice's German file, German
    dates and amounts (before, the template was picked as if the sender wrote English)."""
    w = world(**{"sender.locale": "de"})
    cus = _customer(w, name="Ingrid Bauer", email="ingrid@example.de")
    _renewing(w, cus, 25899, currency="eur", end=utc(2027, 3, 1, 10))
    w.tick(T0)
    w.tick(utc(2027, 2, 22, 11))
    [got] = w.smtp.received
    assert got.message["Subject"] == "Ihr Abonnement bei Example verlängert sich am 1. März 2027 (258,99\xa0€)"
    assert '<html lang="de">' in _html(got)

def test_a_renewal_is_dated_where_the_customer_is(world):
    """A renewal at 01:00 UTC on 3 December is on the 3rd in Tokyo and on the 2nd in New York (issue 23, defect 4:
    a Tokyo customer was told "December 2")."""
    w = world()
    tokyo = _customer(w, name="Kenji Sato", email="kenji@example.jp", metadata={"timezone": "Asia/Tokyo"})
    new_york = _customer(w, name="Ada Lovelace", email="ada@example.com",
                         metadata={"timezone": "America/New_York"})
    for cus in (tokyo, new_york):
        _renewing(w, cus, 4900, end=utc(2027, 3, 3, 1))
    w.tick(T0)
    w.tick(utc(2027, 2, 24, 15))
    subjects = {r.rcpt_tos[0]: r.message["Subject"] for r in w.smtp.received}
    assert "March 3, 2027" in subjects["kenji@example.jp"], subjects
    assert "March 2, 2027" in subjects["ada@example.com"], subjects


# -- defect 3: one renewal reminder with the whole charge ------------------------------------------------------------


def test_one_renewal_reminder_per_customer_and_day_lists_every_subscription_and_the_total(world):
    w = world(**{"notices.usage.expected": {"usd": 10**9}})       # no usage alerts here: only the reminder
    cus = _customer(w)
    _renewing(w, cus, 31299, end=utc(2027, 3, 1, 6))               # 01:00 in New York (the sender's zone)
    _renewing(w, cus, 9200, end=utc(2027, 3, 1, 20))               # 14 hours later, same day
    _renewing(w, cus, 8600, end=utc(2027, 3, 1, 23), interval="month")   # an add-on no rule reminds of
    usage = _renewing(w, cus, 1000, end=utc(2027, 3, 1, 12), interval="month", metered=True)
    w.fake.set_usage(usage, 4000)                                 # $40.00 of usage so far
    w.tick(T0)
    for hour in (3, 21):
        w.tick(utc(2027, 2, 22, hour))
    w.tick(utc(2027, 2, 23, 9))
    [got] = w.smtp.received
    text = _text(got)
    # 312.99 + 92.00 + 86.00 + the metered one: 10.00 + 40.00 of usage so far when previewed on Feb 22 at 03:00,
    # 75.4% through its period: 10.00 + 53.04 at this pace
    assert got.message["Subject"] == "Your Example subscriptions renew on March 1, 2027 (about $554.03)"
    for line in ("  Annual subscription: $312.99", "  Annual subscription: $92.00", "  Monthly subscription: $86.00",
                 "$50.00 so far this period, about $63.04 by March 1, 2027 at this pace",
                 "4,000 units so far): $40.00 so far", "  Total: about $554.03"):
        assert line in text, text
    statuses = sorted(n["status"] for n in w.ledger.db.query("SELECT status FROM notices WHERE kind = 'upcoming_renewal'"))
    assert statuses == ["done", "suppressed"]


# -- defect 9: `dunctl preview` renders every shipped template, and a typo is one line -------------------------------


def test_preview_renders_every_shipped_template_with_a_sample_of_its_kind(tmp_path):
    from dunctl.config import known_templates

    config = starter(tmp_path)
    names = known_templates(tmp_path / "templates")
    assert {"card-expiring", "upcoming-renewal", "usage-alert", "large-charge", "payment-failed"} <= set(names)
    for name in names:
        for locale in ([None, "fr"] if name in NOTICES else [None]):
            shown = cli(config, "preview", name, *(["--locale", locale] if locale else []))
            assert shown.exit_code == 0 and "Traceback" not in shown.output, (name, shown.output)
    renewal = cli(config, "preview", "upcoming-renewal", "--locale", "ja")
    assert "Subject: 【Example】2027年1月15日にご契約が更新されます" in renewal.stdout


def test_a_template_typo_is_one_line_naming_the_file_and_line_not_a_traceback(tmp_path):
    config = starter(tmp_path)
    for name, typo in (("reminder", "{{ invoice.number }}"), ("usage-alert", "{{ usage.period_start }}")):
        file = tmp_path / "templates" / f"{name}.txt.j2"
        text = file.read_text()
        line = text[:text.index(typo)].count("\n") + 1
        file.write_text(text.replace(typo, typo.replace("_", "").replace("number", "numbr"), 1))
        shown = cli(config, "preview", name)
        assert shown.exit_code == 2 and "Traceback" not in shown.output, shown.output
        [problem] = [out for out in shown.output.splitlines() if "does not render" in out]
        assert problem.startswith(f"Error: {file}:{line}: does not render:"), shown.output


def test_preview_of_a_case_shows_the_grouped_email_as_the_customer_got_it(tmp_path):
    config = starter(tmp_path)
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_a", customer_id="cus_1", amount=4900),
         failed_invoice("in_b", customer_id="cus_1", amount=1500, subscription_id="sub_2"),
         customers=[customer("cus_1", email="ada@example.com")])
    ledger.close()
    assert cli(config, "tick", "--no-sync", "--now", at("31m").isoformat()).exit_code == 0
    [sent_file] = (tmp_path / "outbox").glob("*.eml")
    sent = email.message_from_bytes(sent_file.read_bytes(), policy=email.policy.default)
    shown = cli(config, "preview", "payment-failed", "--case", "in_b", "--json", "--now", at("31m").isoformat())
    assert shown.exit_code == 0, shown.output
    preview = json.loads(shown.stdout)
    assert preview["subject"] == sent["Subject"] and "$64.00" in preview["subject"]
    assert preview["text"] == sent.get_body(("plain",)).get_content().replace("\r\n", "\n")


def test_check_renders_every_notice_in_every_locale(tmp_path):
    config = starter(tmp_path)
    env = {"STRIPE_API_KEY": "sk_test_check"}
    assert cli(config, "check", env=env).exit_code == 0
    file = tmp_path / "templates" / "upcoming-renewal.ja.txt.j2"
    file.write_text(file.read_text().replace("{{ renewal.date }}", "{{ renewal.dat }}", 1))
    shown = cli(config, "check", env=env)
    assert shown.exit_code == 2 and f"{file}" in shown.output and "'dat'" in shown.output, shown.output
