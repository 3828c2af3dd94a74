"""The translation errors a fluent reviewer found (issue #23), each as the customer would read it: rendered from
the shipped templates for a business customer called "Demo Co"-style names, in its language."""

import re

import pytest

from dunctl.messages import sample_context
from tests.test_messages import SHIPPED

NAMES = ("payment-failed", "reminder", "update-card", "final-notice", "suspended", "cancel-notice", "cancelled",
         "recovered")


def rendered(locale: str, failure_type: str = "card_soft", invoices: int = 1, company: str = "Demo Co"):
    context = sample_context(company, failure_type, business=True, locale=locale, invoices=invoices)
    # Babel's no-break spaces (inside amounts) read as spaces here
    return {name: tuple(re.sub("[\u00a0\u202f]", " ", part or "") for part in SHIPPED.render_email(name, context))
            for name in NAMES}


def every_text(locale: str) -> str:
    out = []
    for failure_type in ("card_soft", "card_hard", "card_update"):
        for invoices in (1, 2):
            for subject, text, html in rendered(locale, failure_type, invoices).values():
                out += [subject, text, html or ""]
    return "\n".join(out)


def test_spanish_subjects_say_who_could_not_charge_and_deadlines_are_grammatical():
    one, two = rendered("es"), rendered("es", invoices=2)
    assert one["payment-failed"][0] == "Demo Co: no se ha podido cobrar su pago de 129,00 US$"
    assert two["payment-failed"][0] == "Demo Co: no se han podido cobrar 2 pagos (387,00 US$)"
    assert "pendientes antes del" not in one["final-notice"][0]
    assert one["final-notice"][0].startswith("Último aviso: pague 129,00 US$ a más tardar el ")
    text = every_text("es")
    assert not re.search(r"pago de [0-9,.]+ US\$ a Demo Co", text) and "pagos de Demo Co" not in text


def test_german_keeps_one_register_hyphenates_compounds_and_capitalises_after_a_colon():
    text = every_text("de")
    assert "Hallo" not in text and "Team Wayne" not in text
    assert "Demo Co-" not in text and "Demo-Co-Abonnement" in text
    assert not re.search(r"einziehen: [a-zäöü]", text)
    assert "nicht einziehen. Ihre Bank hat die Zahlung abgelehnt." in rendered("de")["update-card"][1]


def test_french_greets_without_a_calque_and_says_where_the_payment_method_is():
    text = every_text("fr")
    assert "l'équipe Wayne" not in text and "Bonjour," in text
    assert "moyen de paiement Demo Co" not in text
    assert "mettez à jour votre moyen de paiement chez Demo Co" in rendered("fr", "card_hard")["update-card"][0]


def test_japanese_neither_says_the_customer_became_unable_to_pay_nor_that_the_card_was_suspended():
    text = every_text("ja")
    assert "お支払いができなくなってから" not in text
    assert "利用停止" not in text and "再度のご請求ができません" not in text
    assert "の決済ができなかった日から12日が経過しましたが" in rendered("ja")["final-notice"][1]


@pytest.mark.parametrize("locale", ["de", "es", "fr"])
def test_one_closing_register_in_each_language(locale):
    text = every_text(locale)
    closing = {"de": "Mit freundlichen Grüßen", "es": "Atentamente,", "fr": "Cordialement,"}[locale]
    others = {"de": ["Viele Grüße"], "es": ["Un saludo,", "Saludos cordiales,", "Gracias,\n"],
              "fr": ["Veuillez agréer", "Merci d'avance,"]}[locale]
    assert closing in text and not [o for o in others if o in text]
