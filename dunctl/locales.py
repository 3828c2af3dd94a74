"""Customer languages: which template a customer's locale picks, and the few words dunctl itself supplies.

A template resolves by the customer's Stripe `preferred_locales` (stored as customers.preferred_locale), then by the
sender's default: for a customer in `fr-CA`, `payment-failed.fr-CA.subject.j2`, then `payment-failed.fr.subject.j2`,
then the default locale's file, then `payment-failed.subject.j2` (written in the sender's default language).
"""

from __future__ import annotations

import functools

from dunctl.failures import (
    ACTION_REQUIRED,
    BANK_RETURNED,
    NET_TERMS,
    BANK_HARD,
    BANK_SOFT,
    CARD_HARD,
    CARD_SOFT,
    CARD_UPDATE,
    DISPUTE,
    PLAIN_WORDS,
    UNKNOWN,
)

# The languages the shipped templates are written in. `en` is the unsuffixed file.
SHIPPED_LOCALES = ("en", "fr", "de", "es", "ja")


@functools.lru_cache(maxsize=1024)   # every message asks for the same few tags
def normalise(tag: str | None) -> str | None:
    """'fr_ca', 'FR-CA' -> 'fr-CA'; 'zh-hant-tw' -> 'zh-Hant-TW'; None or '' -> None."""
    if not tag or not str(tag).strip():
        return None
    parts = str(tag).strip().replace("_", "-").split("-")
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 4 and part.isalpha():
            out.append(part.title())          # script
        elif part:
            out.append(part.upper() if len(part) <= 3 else part)
    return "-".join(out)


def language(tag: str | None) -> str | None:
    tag = normalise(tag)
    return tag.split("-")[0] if tag else None


def candidates(preferred: str | list[str] | None, default: str = "en") -> list[str]:
    """Locale suffixes to look for, best first: each preferred tag, then its language, then the default's.
    'fr-CA' with default 'en' -> ['fr-CA', 'fr', 'en']."""
    tags = preferred if isinstance(preferred, list) else [preferred]
    out: list[str] = []
    for tag in [*tags, default]:
        tag = normalise(tag)
        if not tag:
            continue
        parts = tag.split("-")
        for n in range(len(parts), 0, -1):
            suffix = "-".join(parts[:n])
            if suffix not in out:
                out.append(suffix)
    return out


# The failure type in words a customer understands, per language. Fraud, lost and stolen get the generic wording
# on purpose: the message must not accuse anyone. Each reads after "but" / its language's equivalent.
FAILURE_WORDS: dict[str, dict[str, str]] = {
    "en": PLAIN_WORDS,
    "fr": {
        CARD_HARD: "votre banque a refusé la carte, qui ne pourra plus être débitée",
        CARD_UPDATE: "les informations de la carte enregistrée doivent être mises à jour",
        ACTION_REQUIRED: "votre banque demande que vous confirmiez le paiement",
        CARD_SOFT: "votre banque a refusé le paiement",
        BANK_SOFT: "votre banque a rejeté le prélèvement faute de provision suffisante",
        BANK_HARD: "votre banque n'a pas pu prélever le compte enregistré",
        BANK_RETURNED: "votre banque a rejeté le prélèvement",
        DISPUTE: "le paiement fait l'objet d'une contestation",
        UNKNOWN: "le paiement n'a pas abouti",
        NET_TERMS: "la facture n'est pas encore réglée",
    },
    "de": {
        CARD_HARD: "Ihre Bank hat die Karte abgelehnt; sie kann nicht erneut belastet werden",
        CARD_UPDATE: "die hinterlegten Kartendaten müssen aktualisiert werden",
        ACTION_REQUIRED: "Ihre Bank möchte, dass Sie die Zahlung bestätigen",
        CARD_SOFT: "Ihre Bank hat die Zahlung abgelehnt",
        BANK_SOFT: "Ihre Bank hat die Lastschrift mangels Deckung zurückgegeben",
        BANK_HARD: "Ihre Bank konnte das hinterlegte Konto nicht belasten",
        BANK_RETURNED: "Ihre Bank hat die Lastschrift zurückgegeben",
        DISPUTE: "die Zahlung wurde beanstandet",
        UNKNOWN: "die Zahlung ist nicht durchgegangen",
        NET_TERMS: "die Rechnung ist noch nicht bezahlt",
    },
    "es": {
        CARD_HARD: "su banco ha rechazado la tarjeta y ya no es posible cargar pagos en ella",
        CARD_UPDATE: "hay que actualizar los datos de la tarjeta registrada",
        ACTION_REQUIRED: "su banco le pide que confirme el pago",
        CARD_SOFT: "su banco ha rechazado el pago",
        BANK_SOFT: "su banco ha devuelto el adeudo por falta de fondos",
        BANK_HARD: "su banco no ha podido cargar el importe en la cuenta registrada",
        BANK_RETURNED: "su banco ha devuelto el adeudo",
        DISPUTE: "el pago está en disputa",
        UNKNOWN: "el pago no se ha completado",
        NET_TERMS: "la factura aún no está pagada",
    },
    "ja": {
        CARD_HARD: "カード会社によりこのカードでの決済が承認されず、同じカードでの再決済はできません",
        CARD_UPDATE: "ご登録のカード情報の更新が必要です",
        ACTION_REQUIRED: "カード会社よりお支払いの認証が求められています",
        CARD_SOFT: "カード会社によりお支払いが承認されませんでした",
        BANK_SOFT: "残高不足のため口座振替ができませんでした",
        BANK_HARD: "ご登録の口座から引き落としができませんでした",
        BANK_RETURNED: "金融機関により口座振替が返却されました",
        DISPUTE: "お支払いについて異議申し立てが行われています",
        UNKNOWN: "お支払いが完了しませんでした",
        NET_TERMS: "請求書のお支払いがまだ確認できておりません",
    },
}


def failure_words(failure_type: str, lang: str | None) -> str:
    words = FAILURE_WORDS.get(lang or "en", PLAIN_WORDS)
    return words.get(failure_type, words[UNKNOWN])
