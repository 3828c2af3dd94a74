"""What a message says: who it greets, its tone by value, the final notice's consequence, several invoices."""

import json
import re

import pytest
from datetime import datetime, timezone

from dunctl.messages import CasePart, Templates, build_context, sample_context
from dunctl.scaffold import shipped_dir

SHIPPED = Templates(shipped_dir() / "sequences" / "templates")
NOW = datetime(2026, 1, 13, tzinfo=timezone.utc)


def case(invoice_id="in_1", segment="default", sequence="standard", steps=None, failed="2026-01-01T00:00:00Z"):
    steps = steps or [{"id": "notice", "at": "30m", "action": "email"},
                      {"id": "suspend", "at": "21d", "action": "pause_subscription"},
                      {"id": "cancel", "at": "30d", "action": "cancel_subscription"}]
    return {"customer_id": "cus_1", "invoice_id": invoice_id, "first_failed_at": failed, "failure_type": "card_soft",
            "attempts": 1, "segment": segment, "sequence": sequence,
            "sequence_def": json.dumps({"name": sequence, "steps": steps})}


def invoice(invoice_id="in_1", amount=8_000_000, currency="usd", lines=None):
    return {"id": invoice_id, "number": f"INV-{invoice_id}", "currency": currency, "amount_due": amount,
            "amount_remaining": amount, "hosted_invoice_url": f"https://pay.test/{invoice_id}",
            "customer_name": None, "customer_email": "old@frozen.test", "payment_method_type": "card",
            "decline": None, "lines": json.dumps(lines or [])}


def context(customer, *, segment="default", also=(), **kw):
    return build_context(case=case(segment=segment, **kw), invoice=invoice(), customer=customer,
                         payment_method=None, update_link=None, company="Acme", now=NOW, also=list(also))


WAYNE = {"name": "Wayne Health", "email": "it@wayne.test", "metadata": json.dumps({"billing_email": "ap@wayne.test"})}
ADA = {"name": "Ada Lovelace", "email": "ada@example.com", "metadata": "{}"}


def test_a_business_is_greeted_by_its_company_name_and_a_person_by_first_name():
    _, text, html = SHIPPED.render_email("payment-failed", context(WAYNE))
    assert text.startswith("Hello Wayne Health,\n") and "Hi Wayne" not in text and "Hi Wayne" not in html
    company = {"name": "Bruce Wayne", "email": "b@w.test", "metadata": json.dumps({"company": "Wayne Enterprises"})}
    assert SHIPPED.render_email("reminder", context(company))[1].startswith("Hello Wayne Enterprises,\n")
    assert SHIPPED.render_email("reminder", context(ADA))[1].startswith("Hi Ada,\n")
    assert SHIPPED.render_email("reminder", context({"name": "", "email": "x@y.test"}))[1].startswith("Hello,\n")


def test_a_high_value_case_is_not_told_it_happens_and_is_quick_to_fix():
    casual = "usually quick to fix"
    _, standard, _ = SHIPPED.render_email("payment-failed", context(WAYNE))
    assert casual in standard
    for segment in ("human-review", "high-value"):
        subject, text, html = SHIPPED.render_email("payment-failed", context(WAYNE, segment=segment))
        assert casual not in text and casual not in html
        assert "$80,000.00" in text and "bank transfer" in text
        assert subject == "Invoice INV-in_1: payment of $80,000.00 was not completed"
    _, german, _ = SHIPPED.render_email("payment-failed", build_context(
        case=case(segment="human-review"), invoice=invoice(currency="eur"), customer={**WAYNE, "preferred_locale": "de"},
        payment_method=None, update_link=None, company="Acme", now=NOW))
    assert "meist schnell erledigt" not in german and "Überweisung" in german


def test_the_final_notice_states_the_consequence_and_its_date_from_the_cases_own_sequence():
    subject, text, html = SHIPPED.render_email("final-notice", context(ADA))
    # first failure 2026-01-01 00:00 UTC + 21d: the pause runs at 00:00 on the 22nd, the end of the 21st (the
    # deadline a reader takes from "by January 21")
    assert subject == "Final notice: $80,000.00 due by January 21, 2026"
    assert "If it is still unpaid on January 21, 2026, your Acme subscription will be paused at the end of that " \
           "day." in text
    assert "January 21, 2026" in html
    # Past the pause, the next consequence is the cancellation on day 30.
    later = build_context(case=case(), invoice=invoice(), customer=ADA, payment_method=None, update_link=None,
                          company="Acme", now=datetime(2026, 1, 25, tzinfo=timezone.utc))
    assert "will be cancelled at the end of that day" in SHIPPED.render_email("final-notice", later)[1]
    # A sequence that never suspends promises no date: a person follows up.
    no_stop = context(ADA, steps=[{"id": "notice", "at": "30m", "action": "email"}])
    assert no_stop["consequence"] is None
    assert "A member of our team will contact you" in SHIPPED.render_email("final-notice", no_stop)[1]
    japanese = context({**ADA, "preferred_locale": "ja"})
    assert "2026年1月21日の時点でお支払いが確認できない場合" in SHIPPED.render_email("final-notice", japanese)[1]


def test_the_text_part_carries_the_usage_breakdown_the_html_part_shows():
    lines = [{"description": "Platform fee", "amount": 500_000, "quantity": 1, "metered": False},
             {"description": "Inference tokens", "amount": 7_500_000, "quantity": 1_250_000, "metered": True}]
    ctx = build_context(case=case(), invoice=invoice(lines=lines), customer=WAYNE, payment_method=None,
                        update_link=None, company="Acme", now=NOW)
    for name in ("payment-failed", "reminder", "update-card", "final-notice", "suspended"):
        _, text, html = SHIPPED.render_email(name, ctx)
        for fragment in ("Platform fee", "$5,000.00", "Inference tokens (1,250,000 units)", "$75,000.00"):
            assert fragment in text, (name, fragment)
            assert fragment in html, (name, fragment)


def test_one_message_lists_several_invoices_with_their_own_links_and_the_total():
    second = CasePart(case("in_2"), {**invoice("in_2", amount=4900), "decline": json.dumps(
        {"decline_code": "expired_card"})}, None, "https://pay.test/in_2")
    second.case["failure_type"] = "card_update"
    ctx = build_context(case=case(), invoice=invoice(amount=12900), customer=ADA, payment_method=None,
                        update_link="https://pay.test/in_1", company="Acme", now=NOW, also=[second])
    assert [i["number"] for i in ctx["invoices"]] == ["INV-in_1", "INV-in_2"]
    assert ctx["totals"] == [{"currency": "usd", "amount": "$178.00"}]
    subject, text, html = SHIPPED.render_email("payment-failed", ctx)
    assert subject == "2 payments to Acme didn't go through ($178.00)"
    for fragment in ("Invoice INV-in_1: $129.00 (your bank declined the payment)", "Pay: https://pay.test/in_1",
                     "Invoice INV-in_2: $49.00 (the card details on file need updating)",
                     "Pay: https://pay.test/in_2", "Total: $178.00"):
        assert fragment in text, fragment
    assert html.count('href="https://pay.test/in_') == 2 and "$178.00" in html


def test_strict_sms_privacy_leaves_out_the_name_and_the_amount():
    ctx = sample_context(locale="fr")
    standard = SHIPPED.render_sms("payment-reminder", ctx)
    strict = SHIPPED.render_sms("payment-reminder", ctx, "strict")
    assert "129,00" in standard
    assert not re.search(r"\d+,\d\d|\$|Ada|Lovelace", strict) and "https://invoice.stripe.com/i/acct_" in strict


def test_a_template_that_names_the_customer_under_strict_privacy_cannot_render(tmp_path):
    (tmp_path / "t.sms.j2").write_text("Hi {{ customer.first_name }}, pay {{ amount }}")
    problems = Templates(tmp_path).check({"t": "sms"}, [sample_context()])
    assert len(problems) == 1 and "sms.privacy strict" in problems[0].message and "first_name" in problems[0].message


def test_an_internal_message_can_be_written_in_the_senders_language_whatever_the_customers():
    ctx = sample_context(locale="ja", business=True)
    assert SHIPPED.render_email("account-manager", ctx)[0].startswith("[請求]")
    subject, text, _ = SHIPPED.render_email("account-manager", ctx, locale="en")
    assert subject == "[Billing] Wayne Health: $129.00 payment failed"
    assert "Next consequence in the sequence: subscription paused on January 21, 2026" in text


def test_the_final_notice_sent_by_tick_names_the_day_the_subscription_pauses(tmp_path, smtp_server):
    from tests.helpers import (
    sent_as,
        T0,
        at,
        cli,
        customer,
        failed_invoice,
        open_engine_ledger,
        seed,
        starter,
    )

    config = starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": smtp_server.host,
                                                     "port": smtp_server.port}})
    seed(open_engine_ledger(config), failed_invoice("in_1", failed_at=T0),
         customers=[customer("cus_1", billing_email="ap@wayne.test")])
    assert cli(config, "tick", "--no-sync", "--now", at("12d1m").isoformat()).exit_code == 0
    final = [r for r in smtp_server.received if sent_as(config, r.message)[1] == "final-notice"]
    assert final, [sent_as(config, r.message)[1] for r in smtp_server.received]
    # standard: first failure 2026-11-02, pause_subscription at 21d.
    assert final[0].message["Subject"] == "Final notice: $49.00 due by November 23, 2026"
    text = final[0].message.get_body(("plain",)).get_content()
    assert "If it is still unpaid on November 23, 2026, your Example subscription will be paused at the end of " \
           "that day." in text


def test_templates_for_a_directory_follow_edits_and_new_files_between_ticks(tmp_path):
    """A process that ticks many times (the demo, a long-lived caller) reuses compiled templates, and still sees
    a template edited or a locale added since the last tick."""
    (tmp_path / "hi.subject.j2").write_text("Hello {{ name }}")
    first = Templates.for_dir(tmp_path)
    assert first.render("hi", "subject", {"name": "Ada"}, "") == "Hello Ada"
    assert Templates.for_dir(tmp_path) is first                 # nothing changed: the same compiled set
    (tmp_path / "hi.subject.j2").write_text("Hi there {{ name }}")
    assert Templates.for_dir(tmp_path).render("hi", "subject", {"name": "Ada"}, "") == "Hi there Ada"
    assert not Templates.for_dir(tmp_path).exists("hi", "subject", "fr")
    (tmp_path / "hi.fr.subject.j2").write_text("Bonjour {{ name }}")
    assert Templates.for_dir(tmp_path).exists("hi", "subject", "fr")
