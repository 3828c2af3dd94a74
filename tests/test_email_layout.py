"""Emails that survive Outlook (issue #23, Also build): every shipped HTML email, dunning and pre-dunning, in
every shipped locale, is laid out in tables with inline styles (Outlook for Windows renders with Word: no
max-width or padding on divs, no padding on links), opens with a hidden preheader, and ends with a reply line and
a sign-off. The headers are tested through `dunctl tick` in tests/test_tick.py."""

import re

import pytest

from dunctl.messages import sample_context
from dunctl.notices.context import sample_notice_contexts
from tests.test_messages import SHIPPED

DUNNING = ["cancel-notice", "cancelled", "final-notice", "payment-failed", "recovered", "reminder", "suspended",
           "update-card"]
NOTICES = ["card-expiring", "large-charge", "upcoming-renewal", "usage-alert"]
SIGN_OFF = {"en": "The Acme billing team", "fr": "L'équipe facturation de Acme", "de": "Ihr Abrechnungsteam von Acme",
            "es": "El equipo de facturación de Acme", "ja": "Acme 請求担当"}
REPLY = {"en": "reply", "fr": "répond", "de": "antwort", "es": "respond", "ja": "返信"}


def check_layout(html: str, language: str) -> None:
    # no layout on divs: the one div is the hidden preheader, with text, hidden from Outlook too (mso-hide)
    divs = re.findall(r"<div[^>]*>", html)
    assert len(divs) == 1 and "display:none" in divs[0] and "mso-hide:all" in divs[0], divs
    preheader = re.search(r"<div[^>]*>([^<]*)</div>", html).group(1)
    assert len(preheader.strip("\u2007\u034f&#;0-9 ")) > 20, preheader
    # the 560 px column is a table cell, fixed for Outlook by a conditional table; the button is a table cell
    assert 'role="presentation"' in html and "max-width:560px" in html and '<table role="presentation" width="560"' in html
    assert "<style" not in html and "<link" not in html and 'src="http' not in html      # inline only, no assets
    text = re.sub(r"<[^>]+>", " ", html)
    assert SIGN_OFF[language] in text.replace("&#39;", "'"), text[-400:]
    assert REPLY[language] in text.lower(), text[-600:]


@pytest.mark.parametrize("locale", SIGN_OFF)
@pytest.mark.parametrize("template", DUNNING)
def test_every_dunning_email_is_a_table_layout_with_preheader_reply_line_and_sign_off(template, locale):
    for business in (False, True):
        _, _, html = SHIPPED.render_email(template, sample_context("Acme", locale=locale, business=business))
        check_layout(html, locale)


@pytest.mark.parametrize("context", range(len(sample_notice_contexts())))
def test_every_notice_email_is_a_table_layout_with_preheader_reply_line_and_sign_off(context):
    for template in NOTICES:
        _, _, html = SHIPPED.render_email(template, sample_notice_contexts()[context])
        check_layout(html, "en")


@pytest.mark.parametrize("locale", SIGN_OFF)
@pytest.mark.parametrize("template", DUNNING)
def test_every_dunning_emails_text_part_has_a_reply_line_and_a_sign_off(template, locale):
    _, text, _ = SHIPPED.render_email(template, sample_context("Acme", locale=locale))
    assert SIGN_OFF[locale] in text, text
    assert REPLY[locale] in text.lower(), text
