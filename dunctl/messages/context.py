"""The context a template sees: every invoice a message covers, formatted for the customer's locale, and able to
re-format itself for the locale of the template actually found."""

from __future__ import annotations

from datetime import datetime

from dunctl.locales import normalise
from dunctl.messages.case import CasePart
from dunctl.messages.formatting import format_context, format_statement


class MessageContext(dict):
    """A template context formatted for one locale, which can re-format itself for another (the locale of the
    template that is actually found: a French customer's numbers in an English template read wrong)."""

    def __init__(self, data: dict, rebuild):
        super().__init__(data)
        self._rebuild = rebuild

    def localized(self, tag: str) -> dict:
        return self if tag == self.get("locale") else self._rebuild(tag)


def build_context(*, case: dict, invoice: dict, customer: dict | None, payment_method: dict | None,
                  update_link: str | None, company: str, now: datetime, sequence=None,
                  default_locale: str = "en", timezone: str | None = None, also: list[CasePart] = (),
                  locale: str | None = None, reason_shown: bool = True, account: str | None = None,
                  open_invoices: list[dict] | None = None, contacts: list[str] | None = None,
                  extra: dict | None = None, consequences: bool = True) -> MessageContext:
    """Everything a template may use, formatted for the customer's locale (or `locale`).

    `invoices` lists every invoice the message covers (this case's, then `also`'s: further cases of the same
    customer and currency), each with its amount, failure in plain words and its own pay link; `totals` is the
    sum per currency. The single-invoice names (`invoice`, `amount`, `failure`, ...) describe the first invoice.
    `sequence` (default: the case's stored sequence) gives the final notice its consequence and date.
    `reason_shown` False (a message that also reaches people other than the payer's billing contacts) words every
    failure neutrally: "insufficient funds" is the payer's business. `contacts`: the customer's billing contacts
    when the caller has them already (the `billing_contact` rule resolved for the message's own recipients).
    `extra`: values the caller sets over the formatted ones (the tick's `pause_lifted`, `sent`, `follow_up`), kept
    through re-formatting for another locale. `consequences` False: the caller knows no template it renders says
    what the sequence does next (`consequence` is None), which is then not worked out."""
    parts = [CasePart(case, invoice, payment_method, update_link, sequence), *also]
    for part in parts[1:]:
        if part.case["customer_id"] != case["customer_id"]:
            raise ValueError(f"case {part.case.get('invoice_id')} is another customer's; one message covers one customer")
    preferred = normalise((customer or {}).get("preferred_locale"))
    zone = (customer or {}).get("timezone") or timezone or "UTC"

    def build(tag: str) -> MessageContext:
        found = format_context(parts, customer, company, now, tag, preferred, default_locale, zone, reason_shown,
                               account, contacts, consequences)
        return MessageContext({**found, "statement": format_statement(open_invoices or [], now, found["locale"], zone),
                               **(extra or {})}, build)

    return build(normalise(locale) or preferred or normalise(default_locale) or "en")
