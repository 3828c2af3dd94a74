"""What a notice template may use: the customer, the card, the renewal, the usage, and the one-click link.
Amounts are pre-formatted in their currency; dates are the customer's reading (e.g. December 1, 2026)."""

from __future__ import annotations

import json
from datetime import datetime

from dunctl.clock import from_iso
from dunctl.money import format_amount


def _date(text: str | None) -> str:
    moment = from_iso(text) if text else None
    return f"{moment:%B} {moment.day}, {moment.year}" if moment else ""


def _money(amount: int | None, currency: str | None) -> str:
    return format_amount(int(amount), currency) if amount is not None and currency else ""


def notice_context(notice: dict, customer: dict | None, update_link: str, company: str, now: datetime) -> dict:
    data = json.loads(notice["data"]) if isinstance(notice["data"], str) else notice["data"]
    name = (customer or {}).get("name") or ""
    card = data.get("card") or {}
    renewal = data.get("renewal") or {}
    usage = data.get("usage") or {}
    due = from_iso(notice["due_at"])
    lines = [{"description": line.get("description") or "", "quantity": line.get("quantity"),
              "metered": bool(line.get("metered")), "amount": _money(line.get("amount"), usage.get("currency"))}
             for line in usage.get("lines") or []]
    return {
        "company": company,
        "update_link": update_link,
        "customer": {"id": notice["customer_id"], "name": name, "first_name": name.split(" ")[0] if name else "",
                     "email": (customer or {}).get("email"), "locale": (customer or {}).get("preferred_locale")},
        "notice": {"kind": notice["kind"], "offset": notice["offset"],
                   "days_before": max(0, (from_iso(card["expires_at"]) - now).days) if card.get("expires_at")
                   else None, "due_at": _date(notice["due_at"]) if due else ""},
        "card": {"brand": (card.get("brand") or "card").title(), "last4": card.get("last4") or "",
                 "expiry": f"{card['exp_month']:02d}/{card['exp_year']}" if card.get("exp_month") else "",
                 "expires_on": _date(card.get("expires_at"))},
        "renewal": {"date": _date(renewal.get("date")), "amount": _money(renewal.get("amount"), renewal.get("currency")),
                    "interval": renewal.get("interval") or ""},
        "usage": {"period_start": _date(usage.get("period_start")), "period_end": _date(usage.get("period_end")),
                  # at the period's end at the pace so far (with usage.pace; else the running amount)
                  "projected": _money(usage.get("projected", usage.get("amount")), usage.get("currency")),
                  "so_far": _money(usage.get("amount"), usage.get("currency")),
                  "pace": bool(usage.get("pace")),
                  "expected": _money(usage.get("expected"), usage.get("currency")),
                  "percent": usage.get("percent"), "threshold": usage.get("threshold"),
                  "factor": f"{usage['factor']:g}" if usage.get("factor") else None, "lines": lines,
                  "metered_lines": [line for line in lines if line["metered"]]},
    }


def sample_notice_contexts(company: str = "Acme") -> list[dict]:
    """One sample per kind, for `dunctl check` and tests: every template renders against it."""
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
    customer = {"name": "Ada Lovelace", "email": "ada@example.com", "preferred_locale": "en"}
    return [notice_context({**base, "kind": kind, "data": data}, customer, "https://billing.example.com/update",
                           company, datetime.fromisoformat("2026-12-17T00:00:00+00:00"))
            for kind in ("card_expiring", "upcoming_renewal", "usage_alert", "large_charge")]
