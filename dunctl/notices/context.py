"""What a notice template may use: the customer, the card, the renewal, the usage, and the one-click link.

Like a dunning email's (dunctl/messages/), the context is formatted with Babel for the locale of the template
found (a French customer's notice reads "15 janvier 2027" and "1 200,00 $US"), re-formatting itself when the
template found is in another language, and it greets the customer by the same rule (`customer_kind`): a company
by its name, a person by first name, nobody by the first word of a company's name.

A renewal reminder covers every subscription of the customer renewing on that day in that currency
(`renewing`), with the total: one reminder per customer, date and currency, never a part of the charge."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo


from dunctl.clock import from_iso
from dunctl.locales import normalise
from dunctl.messages import MessageContext, customer_kind
from dunctl.messages.formatting import quantity_text
from dunctl.money import format_day, format_money, locale_names
from dunctl.notices.planner import projected_charge
from dunctl.recipients import current_email


def notice_context(notice: dict, customer: dict | None, update_link: str, company: str, now: datetime, *,
                   default_locale: str = "en", locale: str | None = None, renewing: list[dict] | None = None,
                   timezone: str = "UTC"):
    """Everything a notice template may use, formatted for the customer's locale (or `locale`), its dates in the
    customer's time zone (else `timezone`, the sender's). `renewing`: the subscriptions renewing with this one
    (renewal_entry of each), for an upcoming_renewal notice."""
    preferred = normalise((customer or {}).get("preferred_locale"))

    zone = (customer or {}).get("timezone") or timezone

    def build(tag: str) -> MessageContext:
        return MessageContext(_context(notice, customer, update_link, company, now, tag, default_locale, preferred,
                                       renewing, zone), build)

    return build(normalise(locale) or preferred or normalise(default_locale) or "en")


def renewal_entry(sub: dict, now: datetime) -> dict:
    """One subscription in a renewal reminder, in minor units: what it will charge (for a metered one, its usage
    so far projected to the renewal at its pace), from the ledger's subscriptions row."""
    preview = json.loads(sub["usage_preview"]) if sub.get("usage_preview") else None
    entry = {"id": sub["id"], "currency": sub.get("currency"), "interval": sub.get("interval"),
             "amount": sub.get("amount") or 0, "usage_based": bool(sub.get("usage_based")), "so_far": None,
             "lines": []}
    if entry["usage_based"] and preview:
        entry["so_far"] = preview["amount_due"]
        # projected from the moment the preview measured it, as the usage alerts are
        checked = from_iso(sub.get("usage_checked_at")) or now
        entry["amount"] = max(projected_charge(preview, checked, 0)[0], entry["amount"])
        entry["lines"] = preview.get("lines") or []
    return entry


def _context(notice, customer, update_link, company, now, tag, default_locale, preferred, renewing,
             zone: str = "UTC") -> dict:
    language, code = locale_names(tag, default_locale)

    try:
        tz = ZoneInfo(zone)
    except (ValueError, KeyError):   # ZoneInfoNotFoundError is a KeyError
        tz = ZoneInfo("UTC")

    def date(text: str | None) -> str:
        """A moment's day where the customer is: a renewal at 01:00 UTC on 3 December is on the 3rd in Tokyo, the
        2nd in New York."""
        moment = from_iso(text) if text else None
        return format_day(moment.astimezone(tz), code) if moment else ""

    def month_day(text: str | None) -> str:
        # a card's expiry is a calendar date, the same everywhere: not moved into a zone
        moment = from_iso(text) if text else None
        return format_day(moment, code) if moment else ""

    def money(amount: int | None, currency: str | None) -> str:
        return format_money(int(amount), currency, code) if amount is not None and currency else ""

    def line(item: dict, currency: str | None) -> dict:
        quantity = item.get("quantity")
        return {"description": item.get("description") or "", "quantity": quantity,
                "quantity_text": quantity_text(quantity, code) if quantity else "",
                "metered": bool(item.get("metered")), "amount": money(item.get("amount"), currency)}

    data = json.loads(notice["data"]) if isinstance(notice["data"], str) else notice["data"]
    card = data.get("card") or {}
    renewal = data.get("renewal") or {}
    usage = data.get("usage") or {}
    lines = [line(item, usage.get("currency")) for item in usage.get("lines") or []]
    return {
        "company": company,
        "locale": tag,
        # the sender's language (sender.locale): the template is picked for it when the customer has none
        "default_locale": default_locale,
        "language": language,
        "update_link": update_link,
        "customer": {"id": notice["customer_id"], **customer_kind(customer),
                     "email": current_email(customer, None), "locale": preferred},
        "notice": {"kind": notice["kind"], "offset": notice["offset"],
                   "days_before": max(0, (from_iso(card["expires_at"]) - now).days) if card.get("expires_at")
                   else None, "due_at": date(notice["due_at"])},
        "card": {"brand": (card.get("brand") or "card").title(), "last4": card.get("last4") or "",
                 "expiry": f"{card['exp_month']:02d}/{card['exp_year']}" if card.get("exp_month") else "",
                 "expires_on": month_day(card.get("expires_at"))},
        "renewal": _renewal(renewal, renewing, date, money, line),
        "usage": {"period_start": date(usage.get("period_start")), "period_end": date(usage.get("period_end")),
                  # at the period's end at the pace so far (with usage.pace; else the running amount)
                  "projected": money(usage.get("projected", usage.get("amount")), usage.get("currency")),
                  "so_far": money(usage.get("amount"), usage.get("currency")),
                  "pace": bool(usage.get("pace")),
                  "expected": money(usage.get("expected"), usage.get("currency")),
                  "percent": usage.get("percent"), "threshold": usage.get("threshold"),
                  "factor": f"{usage['factor']:g}" if usage.get("factor") else None, "lines": lines,
                  "metered_lines": [item for item in lines if item["metered"]]},
    }


def _renewal(renewal: dict, renewing: list[dict] | None, date, money, line) -> dict:
    """The renewal: its date, every subscription renewing then (in this currency) and the total to be charged."""
    currency = renewal.get("currency")
    entries = renewing if renewing else [{"amount": renewal.get("amount"), "currency": currency,
                                          "interval": renewal.get("interval"), "usage_based": False,
                                          "so_far": None, "lines": []}] if renewal else []
    total = sum(e["amount"] or 0 for e in entries) if entries and currency else None
    return {"date": date(renewal.get("date")), "amount": money(total, currency), "currency": currency,
            "interval": renewal.get("interval") or "", "count": len(entries),
            "usage_based": any(e["usage_based"] for e in entries),
            "subscriptions": [{"amount": money(e["amount"], currency), "interval": e.get("interval") or "",
                               "usage_based": e["usage_based"], "so_far": money(e["so_far"], currency),
                               "lines": [line(item, currency) for item in e["lines"]]} for e in entries]}


def sample_notice_contexts(company: str = "Acme", *, locale: str | None = None) -> list:
    """One sample per kind, for `dunctl check`, `dunctl preview` and tests: every template renders against it.
    The renewal covers two subscriptions, one of them metered, so every branch of the reminder renders."""
    base = {"customer_id": "cus_sample", "offset": "14d", "due_at": "2026-12-17T00:00:00Z"}
    data = {"card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2026,
                     "expires_at": "2027-01-01T00:00:00Z"},
            "renewal": {"date": "2027-01-15T00:00:00Z", "amount": 120000, "currency": "usd", "interval": "year"},
            "usage": {"amount": 31000, "projected": 57000, "pace": True, "elapsed": 0.5, "currency": "usd",
                      "expected": 10000, "percent": 570, "threshold": 200,
                      "factor": 3, "period_start": "2026-12-01T00:00:00Z", "period_end": "2027-01-01T00:00:00Z",
                      "lines": [{"description": "Pro plan", "amount": 5000, "quantity": 1, "metered": False},
                                {"description": "API calls", "amount": 26000, "quantity": 260000,
                                 "metered": True}]}}
    renewing = [{"id": "sub_sample", "amount": 120000, "currency": "usd", "interval": "year", "usage_based": False,
                 "so_far": None, "lines": []},
                {"id": "sub_sample_usage", "amount": 57000, "currency": "usd", "interval": "month",
                 "usage_based": True, "so_far": 31000, "lines": data["usage"]["lines"]}]
    customer = {"name": "Ada Lovelace", "email": "ada@example.com", "preferred_locale": locale}
    now = datetime.fromisoformat("2026-12-17T00:00:00+00:00")
    return [notice_context({**base, "kind": kind, "data": data}, customer, "https://billing.example.com/update",
                           company, now, renewing=renewing if kind == "upcoming_renewal" else None)
            for kind in ("card_expiring", "upcoming_renewal", "usage_alert", "large_charge")]
