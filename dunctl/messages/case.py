"""What a message knows of a case and its customer before any locale: how to address the customer, who the
billing contacts are, what the sequence does next if nobody pays, and where the invoice is in the Dashboard."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from dunctl.offsets import Offset, parse_offset
from dunctl.recipients import metadata_of, resolve_recipients

# Segments and sequences whose cases are large or strategic: their messages are written for a finance team that
# is owed a personal tone, never "this happens, it's usually quick to fix".
HIGH_VALUE = frozenset({"human-review", "high-value"})
# Steps whose action the customer notices as a consequence of not paying, in the words templates branch on.
CONSEQUENCES = ("pause_subscription", "cancel_subscription", "mark_uncollectible", "hand_off")


@dataclass
class CasePart:
    """One more case of the same customer and currency, for a message that covers several invoices."""

    case: dict
    invoice: dict
    payment_method: dict | None = None
    update_link: str | None = None
    sequence: object | None = None


class StepsAsRead:
    """A sequence whose steps are worked out as they are read and kept once read: what a message says of its
    sequence is the first consequence still ahead (`consequence`), so the later ones (each a time in the customer's
    zone after its notice period: dunctl/irreversible.py) are mostly never worked out. Read again (the context
    re-formatted for the template's own locale), it gives the same steps."""

    __slots__ = ("_source", "_read")

    def __init__(self, source: Iterator):
        self._source, self._read = source, []

    @property
    def steps(self) -> StepsAsRead:
        return self

    def __iter__(self) -> Iterator:
        index = 0
        while True:
            if index == len(self._read):
                step = next(self._source, None) if self._source is not None else None
                if step is None:
                    self._source = None
                    return
                self._read.append(step)
            yield self._read[index]
            index += 1


def recipient_list(rule: str | list[str], customer: dict | None, invoice: dict) -> list[str]:
    """The To addresses for `rule` (one rule, an address, or a list of them), one address per item (never joined
    into one string: parsing 'a, b' back depends on the Python version). `dunctl.recipients.resolve_recipients`
    also gives cc and the addresses it rejected, with reasons."""
    return resolve_recipients(_Rules(rule), customer, invoice).to


_EMPTY = {"{}": dict, "[]": list}   # JSON text of an empty value, and a fresh one of it


@dataclass(frozen=True)
class _Rules:
    to: str | list[str] | None
    cc: str | list[str] | None = None


def billing_contacts(customer: dict | None, invoice: dict) -> list[str]:
    """The customer's billing contacts, as the `billing_contact` recipient rule resolves them."""
    return resolve_recipients(_Rules("billing_contact"), customer, invoice).to


def from_json(value, default):
    if value is None or value == "":
        return default
    if isinstance(value, (dict, list)):
        return value
    if value in _EMPTY:   # most invoices' lines and declines, most customers' metadata: no parse (1 us each)
        return _EMPTY[value]()
    try:
        return json.loads(value)
    except ValueError:
        return default


def customer_kind(customer: dict | None, invoice: dict | None = None) -> dict:
    """How to address the customer: a business by its company name ("Hello Wayne Health"), a person by first
    name. A business is a customer with a billing contact, a metadata company, or a Stripe business_name."""
    customer = customer or {}
    metadata = metadata_of(customer)
    name = (customer.get("name") or (invoice or {}).get("customer_name") or "").strip()
    company = (customer.get("business_name") or metadata.get("company") or metadata.get("company_name")
               or metadata.get("business_name") or "").strip()
    business = bool(company or metadata.get("billing_email") or metadata.get("billing_emails"))
    if business and not company:
        company = name            # a B2B customer's Stripe name is the account's name, e.g. "Wayne Health"
    return {"business": business, "company_name": company if business else "",
            "name": name, "first_name": "" if business or not name else name.split()[0]}


def consequence(sequence, first_failed: datetime | None, now: datetime) -> dict | None:
    """What the case's own sequence does next if the invoice stays unpaid, and when: the first
    pause/cancel/write-off/hand-off step still ahead of `now`."""
    if sequence is None or first_failed is None:
        return None
    steps = sequence.get("steps", []) if isinstance(sequence, dict) else sequence.steps
    for step in steps:
        action = step["action"] if isinstance(step, dict) else step.action
        if action not in CONSEQUENCES:
            continue
        at = step["at"] if isinstance(step, dict) else step.at
        offset = at if isinstance(at, Offset) else parse_offset(at["text"] if isinstance(at, dict) else at)
        when = offset.after(first_failed)
        if when > now:
            return {"action": action, "at": when}
    return None


def dashboard_url(invoice_id: str, livemode: bool, account: str | None = None) -> str:
    """The invoice in the Stripe Dashboard: the connected account's when dunctl follows one, in test or live."""
    return ("https://dashboard.stripe.com" + (f"/{account}" if account else "") + ("" if livemode else "/test")
            + f"/invoices/{invoice_id}")
