"""A message's context formatted with Babel for one locale: amounts, dates and quantities as the customer's
language writes them, in the customer's time zone."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from dunctl.clock import from_iso
from dunctl.failures import (
    BANK_HARD,
    BANK_METHOD_TYPES,
    BANK_RETURNED,
    BANK_SOFT,
    INSUFFICIENT_FUNDS_CODES,
    UNKNOWN,
    shown_code,
)
from dunctl.irreversible import deadline_day
from dunctl.locales import failure_words
from dunctl.messages.case import (
    HIGH_VALUE,
    CasePart,
    billing_contacts,
    consequence,
    customer_kind,
    dashboard_url,
    from_json,
)
from dunctl.formats import remembered
from dunctl.money import digit_shape, format_day, format_money, locale_names
from dunctl.recipients import current_email


def sequence_of(case: dict, sequence):
    if sequence is not None:
        return sequence
    return from_json(case.get("sequence_def"), None)


def format_context(parts: list[CasePart], customer: dict | None, company: str, now: datetime, tag: str,
                   preferred: str | None, default_locale: str, zone: str, reason_shown: bool = True,
                   account: str | None = None, contacts: list[str] | None = None, consequences: bool = True) -> dict:
    lang, code = _locale(tag, default_locale)
    first = parts[0]
    try:
        tz = ZoneInfo(zone)
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        tz = ZoneInfo("UTC")

    def day(moment: datetime) -> str:
        return _day(moment, tz, code)

    def deadline(moment: datetime) -> str:
        # a reader takes the day named as "by the end of it", which dunctl honours (dunctl/irreversible.py)
        return format_day(deadline_day(moment, zone), code)

    invoices = []
    totals: dict[str, int] = {}
    earliest = None
    for part in parts:
        case, invoice = part.case, part.invoice
        currency = invoice["currency"]
        first_failed = from_iso(case["first_failed_at"])
        lines = from_json(invoice.get("lines"), [])
        decline = from_json(invoice.get("decline"), {})
        failure_type = case["failure_type"] or UNKNOWN
        method = part.payment_method or {}
        shown = [{**line, "amount": format_money(line["amount"], currency, code),
                  "quantity_text": quantity_text(line["quantity"], code) if line.get("quantity") else ""}
                 for line in lines]
        then = consequence(sequence_of(case, part.sequence), first_failed, now) if consequences else None
        told = {"action": then["action"], "on": deadline(then["at"])} if then else None
        if then and (earliest is None or then["at"] < earliest[0]["at"]):
            earliest = then, told["on"]   # the message's day is its invoice's: formatted once
        totals[currency] = totals.get(currency, 0) + invoice["amount_remaining"]
        remaining = format_money(invoice["amount_remaining"], currency, code)
        invoices.append({
            "id": invoice["id"],
            "number": invoice["number"] or invoice["id"],
            "currency": currency,
            "amount": remaining,
            "amount_due": format_money(invoice["amount_due"], currency, code),
            "amount_remaining": remaining,
            "hosted_invoice_url": invoice["hosted_invoice_url"],
            "dashboard_url": dashboard_url(invoice["id"], bool(invoice.get("livemode")), account),
            "pay_link": part.update_link or invoice["hosted_invoice_url"] or "",
            "usage_based": any(line.get("metered") for line in lines),
            "lines": shown,
            "usage_lines": [line for line in shown if line.get("metered")],
            "failure": {"type": failure_type, "plain": _plain(failure_type, decline, lang, reason_shown),
                        "code": shown_code(decline)},
            "payment_method": _method(method, invoice, failure_type),
            "first_failed": day(first_failed) if first_failed else "",
            "days_since_failure": max(0, (now - first_failed).days) if first_failed else 0,
            "attempts": case["attempts"],
            "consequence": told,
            **_terms(invoice, now, day, lambda amount: format_money(amount, currency, code)),
        })
    one = invoices[0]
    links = {inv["pay_link"] for inv in invoices}
    segments = {p.case.get("segment") for p in parts} | {p.case.get("sequence") for p in parts}
    who = customer_kind(customer, first.invoice)
    summed = [{"currency": c, "amount": format_money(v, c, code)} for c, v in sorted(totals.items())]
    return {
        "company": company,
        "locale": tag,
        # the sender's language (sender.locale): the template is picked for it when the customer has none
        "default_locale": default_locale,
        "language": lang,
        "customer": {"id": first.case["customer_id"], **who,
                     "email": current_email(customer, first.invoice), "locale": preferred,
                     "billing_contacts": billing_contacts(customer, first.invoice) if contacts is None else contacts},
        "invoices": invoices,
        "count": len(invoices),
        "totals": summed,
        "total": ", ".join(total["amount"] for total in summed),
        "tone": "high_value" if segments & HIGH_VALUE else "standard",
        "consequence": {"action": earliest[0]["action"], "on": earliest[1]} if earliest else None,
        "today": _day(now, tz, code),
        # The first (or only) invoice under the names single-invoice templates use.
        "invoice": one,
        "amount": one["amount"],
        "failure": one["failure"],
        "payment_method": one["payment_method"],
        "days_since_failure": max(inv["days_since_failure"] for inv in invoices),
        "attempts": one["attempts"],
        "update_link": one["pay_link"] if len(links) == 1 else "",
        "case": {"segment": first.case["segment"], "sequence": first.case["sequence"]},
        "pause_lifted": False,   # the thank-you for a payment: dunctl lifted its pause (tick/actions.py)
        "follow_up": False,      # the customer already got a message about this case (tick/actions.py)
        "sent": [],              # what was sent and tried on these cases, for internal messages (tick/actions.py)
    }


@functools.lru_cache(maxsize=4096, typed=True)   # typed: 1 and 1.0 are formatted apart, as Babel would
def quantity_text(quantity, code: str) -> str:
    """A line's quantity as the locale `code` writes it ('30,000', '30 000'): Babel takes about 50 us a number,
    more than rendering the email, and a tick's invoices repeat the same few (1 on every plan's line). A whole
    number fills in Babel's text for one of as many digits (like an amount: dunctl/money.py), kept between
    processes (dunctl/formats.py)."""
    if type(quantity) is int:
        digits = str(abs(quantity))
        shape = remembered("quantity", (code, len(digits), quantity < 0),
                           lambda: digit_shape(_babel_decimal(int("1" * len(digits)) * (-1 if quantity < 0 else 1),
                                                              code), len(digits)))
        if shape is not None:
            return shape.format(*digits)
    return _babel_decimal(quantity, code)


def _babel_decimal(quantity, code: str) -> str:
    from babel.numbers import format_decimal   # lazy: see dunctl/lazy.py

    return format_decimal(quantity, locale=code)


@functools.lru_cache(maxsize=1024)
def _day(moment: datetime, tz: ZoneInfo, code: str) -> str:
    """`moment`'s day in `tz`, as the locale `code` writes it: a tick's messages name the same few days (today, for
    every one of them; the days their cases first failed)."""
    return format_day(moment.astimezone(tz), code)


@functools.lru_cache(maxsize=256)
def _locale(tag: str, default_locale: str) -> tuple:
    """The language of the Babel locale for `tag`, and its identifier (what formatting below is keyed by): once
    per tag, not per message (Babel builds the identifier anew each time it is asked)."""
    return locale_names(tag, default_locale)


def format_statement(rows: list[dict], now: datetime, tag: str, zone: str) -> list[dict]:
    """The customer's open invoices (`open_invoices`: dunctl/ledger/receivables.py open_invoices_of) per currency,
    formatted for the message's locale, with a total per currency: a statement of account (never one total)."""
    if not rows:   # a card case's message lists none (statement_rows)
        return []
    code = _locale(tag, "en")[1]
    try:
        tz = ZoneInfo(zone)
    except (ValueError, KeyError):
        tz = ZoneInfo("UTC")
    sections: dict[str, dict] = {}
    for row in rows:
        currency, due = row["currency"], from_iso(row["due"])
        section = sections.setdefault(currency, {"currency": currency, "lines": [], "total_minor": 0})
        section["lines"].append({"number": row["number"] or row["id"], "due_date": format_day(due.astimezone(tz), code),
                                 "days_overdue": (now - due).days, "link": row.get("hosted_invoice_url") or "",
                                 "amount": format_money(row["amount_remaining"], currency, code)})
        section["total_minor"] += row["amount_remaining"]
    for section in sections.values():
        section["total"] = format_money(section.pop("total_minor"), section["currency"], code)
    return [sections[c] for c in sorted(sections)]


def _terms(invoice: dict, now: datetime, day, money) -> dict:
    """A net-terms invoice's facts for its reminders (dunctl/receivables): due date, days past it (negative
    before), the PDF link, and what was paid already (a partial payment: the message says what is left)."""
    due = from_iso(invoice.get("due_date"))
    paid = invoice.get("amount_paid") or 0
    return {"due_date": day(due) if due else "", "days_overdue": (now - due).days if due else 0,
            "days_until_due": max(0, -((now - due) // timedelta(days=1))) if due else 0,
            "invoice_pdf": invoice.get("invoice_pdf") or "", "amount_paid": money(paid),
            "partial": bool(paid and invoice["amount_remaining"])}


def _plain(failure_type: str, decline: dict, lang: str, reason_shown: bool) -> str:
    """The failure in the customer's words: neutral when others than the payer read it, and "insufficient
    funds" on a bank debit only when the bank said so (not for could_not_process or SEPA MS03)."""
    if not reason_shown:
        return failure_words(UNKNOWN, lang)
    if failure_type == BANK_SOFT and not INSUFFICIENT_FUNDS_CODES & {v for v in decline.values() if isinstance(v, str)}:
        return failure_words(BANK_RETURNED, lang)
    return failure_words(failure_type, lang)


def _method(method: dict, invoice: dict, failure_type: str) -> dict:
    """The payment method, with `kind` (card | bank) that the advice follows: a bank debit's customer checks the
    account or mandate and can pay another way; only a card's is told to use another card."""
    kind = method.get("type") or invoice.get("payment_method_type")
    bank = kind in BANK_METHOD_TYPES or failure_type in (BANK_SOFT, BANK_HARD)
    return {"type": kind, "kind": "bank" if bank else "card", "brand": method.get("brand"),
            "last4": method.get("last4")}
