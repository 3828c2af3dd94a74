"""The month-end journal: every recovery, partial payment, settlement and write-off in a period, one line each, as CSV or JSON,
for an accountant to import into Xero or QuickBooks as a manual journal (the columns: docs/receivables.md).

A partial payment is booked on the day Stripe recorded it (the case's `partial` line keeps that time), whenever the
tick saw it; the payment that settles the invoice is the recovery, for what the earlier parts did not cover, so the
lines of a case add up to what it recovered.
Write-offs are the amount left when the invoice was marked uncollectible, by dunctl's step or in Stripe."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from datetime import datetime

from dunctl.clock import iso
from dunctl.ledger import Ledger
from dunctl.ledger import receivables as store
from dunctl.money import to_major

COLUMNS = ("date", "customer_id", "customer_name", "invoice_number", "invoice_id", "currency", "amount",
           "amount_minor", "kind", "collected_by", "stripe_ids")


@dataclass
class Entry:
    date: str                 # YYYY-MM-DD (UTC) of the payment or write-off
    customer_id: str
    customer_name: str | None
    invoice_number: str | None
    invoice_id: str
    currency: str
    amount: str               # major units, exact decimal text
    amount_minor: int
    kind: str                 # recovery | partial_payment | settlement | write_off
    collected_by: str         # customer | provider_retry | retry (dunctl's) | collections (closed by a person) |
    #                           dunctl | stripe | person (write-offs)
    stripe_ids: str           # the Stripe invoice id (what the bank deposit or credit is matched to)


def _entry(case: dict, at: str, amount: int, kind: str, by: str) -> Entry:
    return Entry(at[:10], case["customer_id"], case["customer_name"], case["number"], case["invoice_id"],
                 case["currency"], to_major(amount, case["currency"]), amount, kind, by, case["invoice_id"])


def _partials(notes: list[dict], case: dict) -> list[tuple[str, int]]:
    """(when, amount) of each part paid: the rise of the invoice's amount paid since the line before, dated when
    Stripe recorded the payment (else, for a ledger synced before dunctl kept that time, when dunctl saw it)."""
    paid, found = case["amount_paid_at_open"], []
    for note in notes:
        data = json.loads(note["data"] or "{}")
        now_paid = data.get("amount_paid", paid)
        if now_paid > paid:
            found.append((data.get("paid_at") or note["at"], now_paid - paid))
        paid = max(paid, now_paid)
    return found


def journal(ledger: Ledger, since: datetime, until: datetime) -> list[Entry]:
    lo, hi = iso(since), iso(until)
    cases = store.journal_cases(ledger.conn, lo, hi)
    notes: dict[int, list[dict]] = {}
    for note in store.partial_notes(ledger.conn, [c["id"] for c in cases]):
        notes.setdefault(note["case_id"], []).append(note)
    entries: list[Entry] = []
    for case in cases:
        parts = _partials(notes.get(case["id"], []), case)
        entries += [_entry(case, at, amount, "partial_payment", "customer") for at, amount in parts if lo <= at < hi]
        if case["state"] == "recovered" and lo <= case["recovered_at"] < hi:
            rest = case["amount_recovered"] - sum(amount for _, amount in parts)
            if rest > 0:
                entries.append(_entry(case, case["recovered_at"], rest, "recovery", case["recovered_by"] or "customer"))
        if case["state"] == "written_off" and lo <= case["closed_at"] < hi and case["amount_remaining"] > 0:
            entries.append(_entry(case, case["closed_at"], case["amount_remaining"], "write_off",
                                  "dunctl" if case["written_off_by_dunctl"] else "stripe"))
        if case["state"] == "closed" and case["closed_as"] and lo <= case["closed_at"] < hi:
            entries += _closed_by_person(case)
    return sorted(entries, key=lambda e: (e.date, e.invoice_id, e.kind))


def _closed_by_person(case: dict) -> list[Entry]:
    """A case a person closed as collected (a recovery), settled (a settlement, and the rest written off) or
    written off (dunctl/receivables/closing.py): what came in, by `collections`; what was given up, by `person`."""
    received, left, at = case["settled_amount"] or 0, case["amount_remaining"], case["closed_at"]
    kind = "recovery" if case["closed_as"] == "collected" else "settlement"
    lines = [_entry(case, at, received, kind, "collections")] if received > 0 else []
    if left > received:
        lines.append(_entry(case, at, left - received, "write_off", "person"))
    return lines


def to_csv(entries: list[Entry]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(e) for e in entries)
    return out.getvalue()


def to_json(entries: list[Entry], since: datetime, until: datetime) -> str:
    totals: dict[str, dict[str, int]] = {}
    for e in entries:
        kinds = totals.setdefault(e.currency, {})
        kinds[e.kind] = kinds.get(e.kind, 0) + e.amount_minor
    return json.dumps({"since": iso(since), "until": iso(until), "columns": list(COLUMNS),
                       "totals_minor": totals, "entries": [asdict(e) for e in entries]}, indent=2) + "\n"
